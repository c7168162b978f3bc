"""The user's function, checked on every call, and interval masses from it.

:func:`evaluate` is the one place where the user's pdf or cdf is called, so
what counts as a valid value (finite, and >= 0 for a density) is decided here.
A :class:`PdfMass` integrates the pdf over intervals by Gauss-Lobatto
quadrature (one panel against two: an error estimate); a :class:`CdfMass`
takes CDF differences.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .._base import F64

# Gauss-Lobatto 5-point rule on [0, 1] (positions, weights), and the same rule on
# two halves. The 11 positions are the union of both sets; W1/W2 weight them.
_S7 = math.sqrt(3.0 / 7.0)
_R1 = np.array([0.0, (1 - _S7) / 2, 0.5, (1 + _S7) / 2, 1.0])
_W1 = np.array([1 / 20, 49 / 180, 16 / 45, 49 / 180, 1 / 20])
_R2 = np.concatenate([_R1 / 2, 0.5 + _R1[1:] / 2])
_W2 = np.concatenate([_W1 / 2, np.zeros(4)])
_W2[4:] += _W1 / 2
_R = np.union1d(_R1, _R2)                       # 11 positions
_WA = np.zeros(_R.size)
_WB = np.zeros(_R.size)
for r, w in zip(_R1, _W1):
    _WA[np.argmin(abs(_R - r))] += w
for r, w in zip(_R2, _W2):
    _WB[np.argmin(abs(_R - r))] += w


def evaluate(fn, x: np.ndarray, what: str) -> np.ndarray:
    """Call the user's function on a float64 CPU tensor; check what comes back."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = fn(torch.from_numpy(flat))
    out = torch.as_tensor(out).detach().to("cpu", F64).numpy().reshape(-1)
    if out.shape != flat.shape:
        raise ValueError(f"{what} returned shape {out.shape} for {flat.shape} points; "
                         "it must act elementwise on a 1-D float64 tensor")
    # one pass for the common case (NaN fails both comparisons), details only on failure
    if not ((out >= 0) & (out < np.inf)).all() if what == "pdf" else not np.isfinite(out).all():
        bad = ~np.isfinite(out)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{what} is {out[i]} at x={flat[i]!r}; it must be finite on the support "
                             "(shrink support away from a singularity)")
        i = int(np.argmax(out < 0))
        raise ValueError(f"pdf is negative ({out[i]:g}) at x={flat[i]!r}; a density must be >= 0")
    return out.reshape(x.shape)


class PdfMass:
    """Mass of [lo, hi] by Gauss-Lobatto (one panel vs two: error estimate)."""

    def __init__(self, pdf):
        self.pdf = pdf

    def __call__(self, lo, hi):
        h = hi - lo
        pts = lo[..., None] + h[..., None] * _R
        f = evaluate(self.pdf, pts, "pdf")
        one = h * (f @ _WA)
        two = h * (f @ _WB)
        return two, np.abs(two - one)


class CdfMass:
    """Mass of [lo, hi] as F(hi) - F(lo), exact up to rounding; a decrease is refused."""

    def __init__(self, cdf):
        self.cdf = cdf

    def __call__(self, lo, hi):
        f = evaluate(self.cdf, np.stack([lo, hi]), "cdf")
        d = f[1] - f[0]
        if (d < -1e-14).any():
            i = int(np.argmax(d < -1e-14))
            raise ValueError(f"cdf decreases between x={lo.reshape(-1)[i]!r} and x={hi.reshape(-1)[i]!r}; "
                             "a CDF must be non-decreasing")
        return np.maximum(d, 0.0), np.zeros_like(d)
