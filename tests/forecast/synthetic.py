"""Synthetic series for the forecasting tests (imported by them; pytest puts this folder on sys.path)."""

import numpy as np

from rnnforge.forecast.series import Series


def seasonal_ar(n=600, seed=0, phi=0.7, sd=0.3):
    """A monthly season of amplitude 2 around 10 plus an AR(1) with coefficient phi and innovation sd."""
    rng = np.random.default_rng(seed)
    e = np.zeros(n)
    for t in range(1, n):
        e[t] = phi * e[t - 1] + sd * rng.normal()
    t = np.arange(n)
    return Series("toy", 10 + 2 * np.sin(2 * np.pi * t / 12) + e, phase_step=1 / 12)
