"""Forecast distributions and their scores: CRPS, weighted quantile loss, coverage, PIT.

Two kinds of forecast of H future values share one interface:

    SampleForecast(samples (N, H))     sample paths (the recurrent model, any sampler)
    GaussianForecast(mean (H,), std (H,))   a Gaussian per step (ETS/ARIMA, seasonal naive)

each with ``quantile(levels)``, ``cdf(y)`` (its PIT, the notes' Ex1), ``crps(y)``
(closed form for the Gaussian, the energy form ``E|X - y| - E|X - X'|/2`` of the
sample's empirical distribution otherwise) and ``mean``.

Scores over many forecasts (every series x window x step, missing targets
skipped) are gathered by :func:`score`:

    crps         mean CRPS, in the series' units
    wcrps        sum CRPS / sum |y|   (scale-free, comparable across series)
    wql          mean over levels q of 2 sum pinball_q / sum |y| (GluonTS' mean_wQuantileLoss)
    mae          mean |median - y|
    coverage     fraction of y inside the central 50, 80 and 95% intervals
    pit_ks_p     Kolmogorov-Smirnov p-value of the PIT values of every step of every window,
                 pooled, against U[0, 1]
    pit_steps_p  the same test valid for multi-step forecasts: per horizon step the KS p-value
                 over windows, the smallest times the number of steps (Bonferroni)

Why two: under a correct model each step's PIT is U[0, 1], but the steps of one window
share its path, so they are dependent and the pooled test, which counts them as
independent, rejects even the true distribution of a random walk once the horizon is
long. The PITs of one step over non-overlapping windows are independent under a correct
model (Diebold, Gunther and Tay 1998: the k-step PITs over consecutive origins are at
most (k-1)-dependent), so each per-step test is exact and so is their Bonferroni bound.
The one-step-ahead PITs over consecutive origins are iid U[0, 1] under a correct model:
:func:`pit_values` of forecasts of horizon 1 from every origin, tested by :func:`ks_uniform`
(``Scores.with_one_step``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

QUANTILE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
INTERVALS = (0.5, 0.8, 0.95)
_SQRT_PI = math.sqrt(math.pi)


def norm_cdf(x: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.as_tensor(x, dtype=torch.float64)).numpy()


def norm_ppf(p: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.as_tensor(p, dtype=torch.float64)).numpy()


def crps_gaussian(mean, std, y) -> np.ndarray:
    """Closed-form CRPS of N(mean, std^2) at y: ``std [w (2Φ(w) - 1) + 2φ(w) - 1/√π]``."""
    mean, std, y = (np.asarray(a, dtype=np.float64) for a in (mean, std, y))
    w = (y - mean) / std
    pdf = np.exp(-0.5 * w * w) / math.sqrt(2 * math.pi)
    return std * (w * (2 * norm_cdf(w) - 1) + 2 * pdf - 1 / _SQRT_PI)


def crps_samples(samples, y) -> np.ndarray:
    """CRPS of the empirical distribution of ``samples`` (N, ...) at ``y`` (...).

    Energy form ``E|X - y| - E|X - X'| / 2``; the second term from the sorted
    sample, ``E|X - X'| = 2/N^2 sum_i (2i - N - 1) x_(i)``, in O(N log N).
    """
    x = np.sort(np.asarray(samples, dtype=np.float64), axis=0)
    y = np.asarray(y, dtype=np.float64)
    N = x.shape[0]
    first = np.abs(x - y).mean(axis=0)
    w = (2 * np.arange(1, N + 1) - N - 1).reshape((N,) + (1,) * (x.ndim - 1))
    spread = 2.0 / (N * N) * (w * x).sum(axis=0)
    return first - 0.5 * spread


def pinball(pred_q, y, q: float) -> np.ndarray:
    """Pinball (quantile) loss of the level-q quantile ``pred_q`` at ``y``."""
    d = np.asarray(y, dtype=np.float64) - pred_q
    return np.maximum(q * d, (q - 1) * d)


class SampleForecast:
    """H-step forecast given by N sample paths (N, H)."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = np.asarray(samples, dtype=np.float64)
        self.sorted = np.sort(self.samples, axis=0)

    @property
    def mean(self) -> np.ndarray:
        return self.samples.mean(axis=0)

    def quantile(self, levels) -> np.ndarray:
        """(len(levels), H) empirical quantiles (linear interpolation)."""
        return np.quantile(self.samples, np.asarray(levels), axis=0)

    def cdf(self, y, rng: np.random.Generator | None = None) -> np.ndarray:
        """Randomised PIT (H,): ``(#{x < y} + V (#{x = y} + 1)) / (N + 1)``, V ~ U[0, 1).

        For a calibrated sampler y is exchangeable with the N samples, so its rank
        is uniform on {0..N} and this value is exactly U[0, 1].
        """
        rng = rng or np.random.default_rng(0)
        y = np.asarray(y, dtype=np.float64)
        below = (self.samples < y).sum(axis=0)
        ties = (self.samples == y).sum(axis=0)
        v = rng.random(y.shape)
        return (below + v * (ties + 1)) / (self.samples.shape[0] + 1)

    def crps(self, y) -> np.ndarray:
        return crps_samples(self.sorted, y)


class GaussianForecast:
    """H-step forecast given by a Gaussian per step: mean (H,), std (H,)."""

    def __init__(self, mean, std) -> None:
        self.mu = np.asarray(mean, dtype=np.float64)
        self.std = np.maximum(np.asarray(std, dtype=np.float64), 1e-12)

    @property
    def mean(self) -> np.ndarray:
        return self.mu

    def quantile(self, levels) -> np.ndarray:
        levels = np.asarray(levels, dtype=np.float64)[:, None]
        return self.mu + self.std * norm_ppf(levels)

    def cdf(self, y, rng=None) -> np.ndarray:
        return norm_cdf((np.asarray(y, dtype=np.float64) - self.mu) / self.std)

    def crps(self, y) -> np.ndarray:
        return crps_gaussian(self.mu, self.std, y)


@dataclass
class Scores:
    n: int
    crps: float
    wcrps: float
    wql: float
    mae: float
    coverage: dict[float, float]
    pit: np.ndarray = field(repr=False)
    pit_ks_p: float = float("nan")
    pit_ks_stat: float = float("nan")
    pit_steps_p: float = float("nan")
    pit_steps_n: int = 0  # the fewest PIT values of one step
    pit1_ks_p: float = float("nan")
    pit1_n: int = 0  # one-step-ahead PIT values (0: not computed)
    pit1: np.ndarray | None = field(default=None, repr=False)

    def with_one_step(self, pit1: np.ndarray) -> "Scores":
        """These scores with the KS test of one-step-ahead PIT values over consecutive origins."""
        pit1 = np.asarray(pit1, dtype=np.float64)
        pit1 = pit1[np.isfinite(pit1)]
        self.pit1, self.pit1_n = pit1, int(pit1.size)
        self.pit1_ks_p = ks_uniform(pit1)[1] if pit1.size >= 2 else float("nan")
        return self

    def row(self) -> dict:
        out = {"crps": self.crps, "wcrps": self.wcrps, "wql": self.wql, "mae": self.mae,
               **{f"cov{int(round(c * 100))}": v for c, v in self.coverage.items()},
               "pit_ks_p": self.pit_ks_p, "pit_steps_p": self.pit_steps_p, "pit_steps_n": self.pit_steps_n,
               **pit_shape(self.pit), "n": self.n}
        if self.pit1_n:
            out.update(pit1_ks_p=self.pit1_ks_p, pit1_n=self.pit1_n)
        return out


def pit_shape(pit: np.ndarray) -> dict:
    """Where the PIT mass sits: the shares below 0.1 and above 0.9 (0.1 each when calibrated; both
    high: a U, intervals too narrow; both low: a hump, too wide; one high: a bias) and the mean
    (0.5 when calibrated; above: the outcomes sit above the forecasts)."""
    pit = np.asarray(pit, dtype=np.float64)
    pit = pit[np.isfinite(pit)]
    if not pit.size:
        return {"pit_below10": float("nan"), "pit_above90": float("nan"), "pit_mean": float("nan")}
    return {"pit_below10": float((pit < 0.1).mean()), "pit_above90": float((pit > 0.9).mean()),
            "pit_mean": float(pit.mean())}


def ks_uniform(pit: np.ndarray) -> tuple[float, float]:
    """(KS statistic, p-value) of PIT values against U[0, 1], by :func:`rnnforge.sampling.uniformity`."""
    from ..sampling import uniformity

    res = uniformity(torch.as_tensor(np.asarray(pit, dtype=np.float64)))
    return res.ks_statistic, res.ks_pvalue


def ks_steps(pit: np.ndarray) -> tuple[float, int]:
    """(Bonferroni p-value, fewest values of a step) of the per-step KS tests of PIT values
    (W, H) (NaN: unobserved): ``min(1, T min_k p_k)`` over the T steps with at least 2 values."""
    pit = np.asarray(pit, dtype=np.float64)
    ps, ns = [], []
    for k in range(pit.shape[1]):
        v = pit[:, k][np.isfinite(pit[:, k])]
        if v.size >= 2:
            ps.append(ks_uniform(v)[1])
            ns.append(v.size)
    if not ps:
        return float("nan"), 0
    return float(min(1.0, len(ps) * min(ps))), int(min(ns))


def pit_values(forecasts: list, actuals: list[np.ndarray], *, seed: int = 0) -> np.ndarray:
    """PIT values (len(forecasts), H) of the targets (NaN where a target is missing), randomised
    for sample forecasts by a generator seeded with ``seed`` as :func:`score` does."""
    rng = np.random.default_rng(seed)
    rows = []
    for f, y in zip(forecasts, actuals):
        y = np.asarray(y, dtype=np.float64)
        rows.append(np.where(np.isfinite(y), np.clip(f.cdf(y, rng), 0.0, 1.0), np.nan))
    return np.stack(rows) if rows else np.zeros((0, 0))


def score(forecasts: list, actuals: list[np.ndarray], *, seed: int = 0) -> Scores:
    """Aggregate scores of ``forecasts[i]`` against ``actuals[i]`` (H,) (NaN targets skipped)."""
    rng = np.random.default_rng(seed)
    crps, absy, ql, ae, pits, grid = [], [], [], [], [], []
    cover = {c: [] for c in INTERVALS}
    levels = sorted({round(l, 10) for l in QUANTILE_LEVELS}
                    | {round((1 - c) / 2, 10) for c in INTERVALS} | {round((1 + c) / 2, 10) for c in INTERVALS})
    for f, y in zip(forecasts, actuals):
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(y)
        if not ok.any():
            continue
        q = dict(zip(levels, f.quantile(levels)))  # level -> (H,)
        crps.append(f.crps(y)[ok])
        absy.append(np.abs(y[ok]))
        ql.append(np.stack([2 * pinball(q[round(l, 10)], y, l)[ok] for l in QUANTILE_LEVELS]))  # (9, n)
        ae.append(np.abs(q[0.5] - y)[ok])
        for c in INTERVALS:
            lo, hi = q[round((1 - c) / 2, 10)], q[round((1 + c) / 2, 10)]
            cover[c].append(((y >= lo) & (y <= hi))[ok])
        u = f.cdf(y, rng)
        pits.append(u[ok])
        grid.append(np.where(ok, u, np.nan))
    if not crps:
        raise ValueError("no observed target values to score")
    crps, absy = np.concatenate(crps), np.concatenate(absy)
    ql = np.concatenate(ql, axis=1)
    denom = max(absy.sum(), 1e-300)
    pit = np.clip(np.concatenate(pits), 0.0, 1.0)
    ks_stat, ks_p = ks_uniform(pit) if pit.size >= 2 else (float("nan"), float("nan"))
    # per step over the forecasts (windows): only when they share one horizon
    steps_p, steps_n = (ks_steps(np.clip(np.stack(grid), 0.0, 1.0))
                        if len({g.size for g in grid}) == 1 else (float("nan"), 0))
    return Scores(
        n=int(crps.size), crps=float(crps.mean()), wcrps=float(crps.sum() / denom),
        wql=float(ql.sum(axis=1).mean() / denom), mae=float(np.concatenate(ae).mean()),
        coverage={c: float(np.concatenate(v).mean()) for c, v in cover.items()},
        pit=pit, pit_ks_p=ks_p, pit_ks_stat=ks_stat, pit_steps_p=steps_p, pit_steps_n=steps_n)
