"""Recalibration of forecast distributions by their PIT, and split-conformal intervals.

Recalibration (Kuleshov, Fenner and Ermon 2018, the notes' two theorems): on
forecasts the model never trained on (the validation windows before the test
origin), the PIT values ``p = F_t(y_t)`` (Ex1) estimate the map
``R(u) = P(PIT <= u)``. For a calibrated model R is the identity; for one whose
intervals are too narrow the PIT piles up near 0 and 1 and R is S-shaped. The
recalibrated forecast has the CDF ``R(F_t(y))``, whose PIT is uniform when R
is right, and it is sampled by inverse transform (Ex2):
``y = F_t^{-1}(R^{-1}(v))``, ``v ~ U[0, 1]``.

The forecasts here are sample paths, so ``F_t`` is the empirical distribution
of the paths at horizon step t. A path at rank i of N at that step (level
``a = (i - 1/2) / N``) is moved to ``F_t^{-1}(R^{-1}(a))``: the paths keep
their order at every step (their dependence across steps) and their values
at each step follow the recalibrated distribution. Beyond the outermost paths
``F_t^{-1}`` is extended linearly in the normal score, so a widened forecast
gets tails rather than piling paths on the sample's extremes.

``R`` is the empirical CDF of the validation PIT values (order statistics at
plotting positions ``i / (n + 1)``), made continuous and strictly increasing by
linear interpolation in normal scores (``Phi^{-1}`` of both the PIT and R), and
extended linearly in them beyond the outermost values; the PIT of a sample
forecast is made continuous the same way (normal-score tails beyond the
paths), so a target far outside every path says how far. It is one map
for every step (``pooled``) or one per band of consecutive horizon steps
(``per-step``, as many bands as the validation data gives 40 PIT values
each, at most one per step), or a map of one number (``scale``: the forecast
widened or narrowed about its median until its central 80% interval holds 80%
of the validation PIT values), or one such number per horizon step on a power
law in the step (``scale-steps``: s k^b, for a model right one step ahead and
too narrow further out, which one number for every step would widen at step 1
too); which one (or none) is chosen by leave-one-window-out cross-validation
of the CRPS on the validation windows.

Split conformal (Romano, Patterson and Candès 2019, conformalized quantile
regression): on the same windows the score ``E = max(q_lo - y, y - q_hi) /
(q_hi - q_lo)`` of the model's central interval (in its widths, so series of
any scale share it); the conformal interval at level c widens (or narrows) it
by the ``ceil((n + 1) c)``-th smallest score times its width, which covers
with probability >= c for exchangeable windows. It is reported beside the
recalibrated forecast; it gives intervals, not a whole distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .metrics import crps_samples, norm_cdf, norm_ppf

MODES = ("off", "scale", "scale-steps", "pooled", "per-step")
#: the modes with a map per horizon step (``bands``), the others one map for every step
STEP_MODES = ("scale-steps", "per-step")
#: PIT values per band of horizon steps of a per-step map
PER_BAND = 40
#: the largest number of knots of one map (order statistics beyond this are thinned evenly)
MAX_KNOTS = 200


def _lin(w: np.ndarray, zx: np.ndarray, zy: np.ndarray) -> np.ndarray:
    """Piecewise linear through the knots (zx, zy) (increasing) between the ones a tenth in from
    each end; beyond those, the line through that knot with the slope of the outer tenth
    (sqrt of the ratio of their squared spreads about it, so that the inverse map's is its
    reciprocal; the outermost knots are extreme order statistics: too noisy to anchor a tail on)."""
    n = zx.size
    if n < 2:
        return w + (zy[0] - zx[0]) if n else w
    j = max(1, n // 10)
    out = np.interp(w, zx, zy)

    def slope(a: int, sl: slice) -> float:
        dx, dy = zx[sl] - zx[a], zy[sl] - zy[a]
        return float(np.clip(np.sqrt((dy * dy).sum() / max((dx * dx).sum(), 1e-300)), 1e-6, 1e6))

    lo, hi = slope(j, slice(0, j)), slope(n - 1 - j, slice(n - j, n))
    out = np.where(w < zx[j], zy[j] + lo * (w - zx[j]), out)
    return np.where(w > zx[n - 1 - j], zy[n - 1 - j] + hi * (w - zx[n - 1 - j]), out)


@dataclass
class PitMap:
    """``R(u) = P(PIT <= u)``, strictly increasing, kept in normal scores (``w = Phi^{-1}(u)``, so
    that PIT values far in the tails, which round to 0 or 1 as probabilities, keep their size):
    ``R(u) = Phi(r(Phi^{-1}(u)))`` with r piecewise linear through the knots (x_i, y_i) and
    extended linearly beyond the outermost ones. So the tails follow from the knots' trend: a
    Gaussian forecaster whose spread is s times the truth's has ``r(w) = s w``."""

    x: np.ndarray  # normal scores of PIT values (increasing)
    y: np.ndarray  # normal scores of R at them (increasing)

    @classmethod
    def identity(cls) -> "PitMap":
        return cls(np.zeros(0), np.zeros(0))

    @classmethod
    def fit_scale(cls, scores: np.ndarray, level: float = 0.8) -> "PitMap":
        """The one-number map ``r(w) = w / s`` that widens (s > 1) or narrows the forecast about its
        median until its central ``level`` interval holds that share of the PIT values: s is their
        ``level`` quantile of ``|w|`` over the standard normal's. It corrects only the width, so a
        bias that changes sign from window to window does not move the forecasts the wrong way, as
        a full map fitted on other windows can."""
        w = np.abs(np.asarray(scores, dtype=np.float64).ravel())
        w = w[np.isfinite(w)]
        if w.size < 2:
            return cls.identity()
        s = float(np.clip(np.quantile(w, level) / norm_ppf(0.5 + level / 2), 1e-3, 1e3))
        return cls(np.array([-1.0, 1.0]), np.array([-1.0, 1.0]) / s)

    @classmethod
    def fit(cls, scores: np.ndarray) -> "PitMap":
        """The empirical CDF of PIT values given by their normal scores (order statistics at
        ``i / (n + 1)``), thinned to MAX_KNOTS knots."""
        w = np.asarray(scores, dtype=np.float64).ravel()
        w = np.sort(w[np.isfinite(w)])
        n = w.size
        if n < 2:
            return cls.identity()
        idx = np.unique(np.round(np.linspace(0, n - 1, min(n, MAX_KNOTS))).astype(np.int64))
        x, y = w[idx], norm_ppf((idx + 1.0) / (n + 1.0))
        keep = np.concatenate([x[1:] > x[:-1], [True]])  # ties would make R a step: keep the last
        return cls(x[keep], y[keep])

    def scores(self, w) -> np.ndarray:
        """``r``: the normal score of R(u) from that of u."""
        w = np.asarray(w, dtype=np.float64)
        return w if self.x.size == 0 else _lin(w, self.x, self.y)

    def inverse_scores(self, v) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return v if self.x.size == 0 else _lin(v, self.y, self.x)

    def __call__(self, u) -> np.ndarray:
        return norm_cdf(self.scores(norm_ppf(np.clip(np.asarray(u, dtype=np.float64), 0, 1))))

    def inverse(self, v) -> np.ndarray:
        return norm_cdf(self.inverse_scores(norm_ppf(np.clip(np.asarray(v, dtype=np.float64), 0, 1))))

    def to_dict(self) -> dict:
        return {"x": [float(a) for a in self.x], "y": [float(b) for b in self.y]}

    @classmethod
    def from_dict(cls, d: dict) -> "PitMap":
        x, y = np.asarray(d["x"], dtype=np.float64), np.asarray(d["y"], dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1 or not (np.isfinite(x).all() and np.isfinite(y).all()) \
                or (x.size and ((np.diff(x) <= 0).any() or (np.diff(y) <= 0).any())):
            raise ValueError("a PIT map needs finite increasing knots")
        return cls(x, y)


def _tails(x: np.ndarray, z: np.ndarray):
    """The tail lines of N sorted values x (N, ...) at normal scores z (N,): through the value a
    tenth in from each end, with the least-squares slope (value per score) of the outer tenth."""
    N = x.shape[0]
    j = max(1, N // 10)
    shape = (-1,) + (1,) * (x.ndim - 1)

    def slope(a: int, sl: slice):
        dz = (z[sl] - z[a]).reshape(shape)
        return np.maximum((dz * (x[sl] - x[a])).sum(axis=0) / (dz * dz).sum(), 1e-300)

    return j, slope(j, slice(0, j)), slope(N - 1 - j, slice(N - j, N))


def sample_scores(sorted_paths: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``Phi^{-1}(F(y))`` (...) for the empirical distribution of N sorted values (N, ...), continuous:
    the inverse of :func:`quantile_function`, so a target far outside the paths gets a score that
    says how far (clipped to +-40)."""
    N = sorted_paths.shape[0]
    x = np.asarray(sorted_paths, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    if N < 3:
        return np.clip(np.where(t == x[0], 0.0, np.sign(t - x[0]) * 40.0), -40, 40)
    z = norm_ppf((np.arange(N) + 0.5) / N)
    j, s_lo, s_hi = _tails(x, z)
    below = (x < t).sum(axis=0)
    upto = (x <= t).sum(axis=0)
    a = np.clip(below, 1, N - 1)
    xa, xb = np.take_along_axis(x, (a - 1)[None], 0)[0], np.take_along_axis(x, a[None], 0)[0]
    f = np.clip((t - xa) / np.where(xb > xa, xb - xa, 1.0), 0.0, 1.0)
    w = z[a - 1] + f * (z[a] - z[a - 1])
    tie = np.interp(0.5 * (below + upto - 1), np.arange(N), z)  # ties take the middle of their positions
    w = np.where(upto > below, tie, w)
    w = np.where(t < x[j], z[j] + (t - x[j]) / s_lo, w)
    w = np.where(t > x[N - 1 - j], z[N - 1 - j] + (t - x[N - 1 - j]) / s_hi, w)
    return np.clip(w, -40.0, 40.0)


def quantile_function(sorted_paths: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``F^{-1}(Phi(w))`` of the empirical distribution of N sorted values (N, ...), per column, at
    normal scores w (M, ...): linear between the order statistics at ``(i - 1/2) / N`` a tenth in
    from each end; beyond those, linear in the normal score with the slope the outer tenth of the
    values has (``_tails``: the outermost values are too noisy to anchor a tail on)."""
    N = sorted_paths.shape[0]
    if N < 3:
        return np.broadcast_to(sorted_paths.mean(axis=0), w.shape).copy()
    z = norm_ppf((np.arange(N) + 0.5) / N)  # (N,) normal scores of the positions
    pos = np.interp(w, z, np.arange(N, dtype=np.float64))  # fractional index of each wanted level
    lo = np.clip(np.floor(pos).astype(np.int64), 0, N - 2)
    frac = pos - lo
    take = lambda i: np.take_along_axis(sorted_paths, i, axis=0)  # noqa: E731
    out = take(lo) * (1 - frac) + take(lo + 1) * frac
    j, s_lo, s_hi = _tails(sorted_paths, z)
    out = np.where(w < z[j], sorted_paths[j] + s_lo * (w - z[j]), out)
    return np.where(w > z[N - 1 - j], sorted_paths[N - 1 - j] + s_hi * (w - z[N - 1 - j]), out)


@dataclass
class Recalibration:
    """A recalibration: ``mode`` and its maps (one for ``scale`` and ``pooled``; one per band for
    ``per-step`` and one per step for ``scale-steps``, ``bands[k]`` the map of horizon step k);
    ``report`` says how it was chosen and the validation PIT before and after, and holds the
    split-conformal margin of the 80% interval."""

    mode: str = "off"
    maps: list[PitMap] = field(default_factory=list)
    bands: list[int] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.mode != "off" and bool(self.maps)

    def map_of_step(self, k: int) -> PitMap:
        if self.mode not in STEP_MODES:
            return self.maps[0]
        return self.maps[self.bands[min(k, len(self.bands) - 1)]]

    def apply(self, paths: np.ndarray) -> np.ndarray:
        """Recalibrated sample paths (..., N, H): at every step each path moves to the recalibrated
        quantile at its rank's level; the order of the paths at each step is kept."""
        if not self.active:
            return paths
        paths = np.asarray(paths, dtype=np.float64)
        N, H = paths.shape[-2:]
        flat = np.moveaxis(paths.reshape(-1, N, H), 1, 0)  # (N, B, H)
        order = np.argsort(flat, axis=0, kind="stable")
        srt = np.take_along_axis(flat, order, axis=0)
        a = norm_ppf((np.arange(N) + 0.5) / N)  # normal scores of the ranks' levels
        out = np.empty_like(srt)
        for k in range(H):
            b = self.map_of_step(k).inverse_scores(a)  # (N,) recalibrated levels, as normal scores
            out[:, :, k] = quantile_function(srt[:, :, k], np.broadcast_to(b[:, None], srt[:, :, k].shape))
        back = np.empty_like(out)
        np.put_along_axis(back, order, out, axis=0)
        return np.moveaxis(back, 0, 1).reshape(paths.shape)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "maps": [m.to_dict() for m in self.maps], "bands": list(self.bands),
                "report": self.report}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Recalibration":
        if not d:
            return cls()
        if d.get("mode") not in MODES:
            raise ValueError(f"unknown recalibration mode {d.get('mode')!r}")
        rc = cls(d["mode"], [PitMap.from_dict(m) for m in d.get("maps", [])], [int(b) for b in d.get("bands", [])],
                 dict(d.get("report", {})))
        if rc.mode in STEP_MODES and (not rc.bands or max(rc.bands) >= len(rc.maps) or min(rc.bands) < 0):
            raise ValueError("the bands of a per-step recalibration do not match its maps")
        return rc


def pit_scores(paths: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Normal scores of the PIT (W, H) of targets y (W, H) in sample paths (W, N, H), by
    :func:`sample_scores` (NaN where y is)."""
    out = np.full(y.shape, np.nan)
    ok = np.isfinite(y)
    if ok.any():
        srt = np.sort(paths, axis=1)  # (W, N, H)
        out[ok] = sample_scores(np.moveaxis(srt, 1, 0)[:, ok], y[ok])
    return out


def bands_of(horizon: int, n_windows: int) -> list[int]:
    """Band index per horizon step: about PER_BAND PIT values per band, consecutive steps together."""
    count = max(1, min(horizon, (horizon * n_windows) // PER_BAND))
    return [min(count - 1, k * count // horizon) for k in range(horizon)]


def fit_scale_steps(pit: np.ndarray, level: float = 0.8) -> list[PitMap]:
    """One scale map per horizon step k = 1..H with ``s_k = s k^b``: the width of each step's
    forecast corrected by its own factor, the factors on a power law in k, so that a model
    right one step ahead and too narrow (or wide) further out is mended at every step from
    the PIT values of all of them. (s, b) minimise the pinball loss at ``level`` of ``|w|``
    against ``z s k^b`` (z the standard normal's ``level`` quantile of ``|w|``; w the PIT's
    normal scores (W, H), NaN: unobserved): for each b on a grid over [-1, 1], s is a weighted
    quantile in closed form (sum_i c_i rho(|w_i| / c_i - s), c_i = z k_i^b)."""
    H = pit.shape[1]
    a = np.abs(np.asarray(pit, dtype=np.float64))
    ok = np.isfinite(a)
    if ok.sum() < 2:
        return [PitMap.identity()] * H
    z = norm_ppf(0.5 + level / 2)
    k = np.broadcast_to(np.arange(1.0, H + 1.0)[None, :], a.shape)[ok]
    a = a[ok]
    best = (math.inf, 1.0, 0.0)
    for b in np.linspace(-1.0, 1.0, 81):
        c = z * k ** b
        r = a / c
        order = np.argsort(r)
        cw = np.cumsum(c[order])
        s = float(r[order][np.searchsorted(cw, level * cw[-1])])
        d = a - s * c
        loss = float(np.maximum(level * d, (level - 1) * d).sum())
        if loss < best[0]:
            best = (loss, s, float(b))
    _, s, b = best
    return [PitMap(np.array([-1.0, 1.0]), np.array([-1.0, 1.0]) / float(np.clip(s * (j + 1) ** b, 1e-3, 1e3)))
            for j in range(H)]


def bands_of_mode(mode: str, bands: list[int], horizon: int) -> list[int]:
    """The map index of each horizon step for ``mode``: ``bands`` for per-step, one per step for
    scale-steps, none (the one map) for the others."""
    return list(bands) if mode == "per-step" else list(range(horizon)) if mode == "scale-steps" else []


def fit_maps(pit: np.ndarray, mode: str, bands: list[int]) -> list[PitMap]:
    """The maps of a mode from the normal scores of PIT values (W, H) (NaN: unobserved)."""
    if mode == "off":
        return []
    if mode == "scale-steps":
        return fit_scale_steps(pit)
    if mode == "pooled":
        return [PitMap.fit(pit[np.isfinite(pit)])]
    if mode == "scale":
        return [PitMap.fit_scale(pit[np.isfinite(pit)])]
    b = np.asarray(bands)
    out = []
    for j in range(max(bands) + 1):
        v = pit[:, b == j]
        out.append(PitMap.fit(v[np.isfinite(v)]))
    return out


def _crps_of(rc: Recalibration, paths: np.ndarray, y: np.ndarray) -> np.ndarray:
    """CRPS (W, H) of recalibrated paths (W, N, H) at targets y (W, H)."""
    p = rc.apply(paths)
    return crps_samples(np.moveaxis(p, 1, 0), y)


def choose(paths: np.ndarray, y: np.ndarray, *, windows: np.ndarray, modes=MODES,
           conformal: np.ndarray | None = None) -> Recalibration:
    """Choose and fit the recalibration of forecasts ``paths`` (W, N, H) of targets ``y`` (W, H)
    on validation windows: each mode is scored by the CRPS of every window's forecast
    recalibrated by the map fitted on the other windows (``windows`` (W,): the fold of each
    forecast, so that overlapping forecasts of one window are held out together); the mode
    with the lowest mean among ``modes`` wins (``off`` on ties, and when no mode in ``modes``
    can be scored: cross-validation needs two windows) and is refitted on all of them. The report
    holds the validation PIT, 80% coverage and CRPS before and after (cross-validated), the number
    of forecasts, and with ``conformal`` (F,) (the forecasts exchangeable enough for split
    conformal: one per window) the split-conformal margin of the 80% interval from those of them
    whose targets are all observed (None when too few)."""
    W, N, H = paths.shape
    # bands by the PIT values per step: one per forecast (overlapping forecasts count each; they
    # are dependent, and the cross-validation over whole windows says whether the bands pay)
    bands = bands_of(H, W)
    modes = [m for m in modes if not (m == "per-step" and max(bands) == 0)]
    pit = pit_scores(paths, y)
    ok = np.isfinite(y)
    folds = np.unique(windows)
    cv: dict[str, float] = {}
    after_pit: dict[str, np.ndarray] = {}
    for mode in ("off", *(m for m in modes if m != "off")):  # off: scored always, the fallback
        if mode == "off":
            crps = _crps_of(Recalibration(), paths, y)
            cv[mode] = float(np.nanmean(np.where(ok, crps, np.nan)))
            after_pit[mode] = pit
            continue
        if len(folds) < 2:
            continue
        crps = np.full((W, H), np.nan)
        cpit = np.full((W, H), np.nan)
        for f in folds:
            test = windows == f
            rc = Recalibration(mode, fit_maps(pit[~test], mode, bands), bands_of_mode(mode, bands, H))
            crps[test] = _crps_of(rc, paths[test], y[test])
            for k in range(H):
                cpit[test, k] = rc.map_of_step(k).scores(pit[test, k])
        cv[mode] = float(np.nanmean(np.where(ok, crps, np.nan)))
        after_pit[mode] = np.where(ok, cpit, np.nan)
    best = min([m for m in cv if m in modes] or ["off"], key=lambda m: (cv[m], m != "off"))
    rc = Recalibration(best, fit_maps(pit, best, bands), bands_of_mode(best, bands, H))
    rc.report = {"windows": int(len(folds)), "values": int(ok.sum()), "cv_crps": cv, "chosen": best,
                 "before": pit_summary(norm_cdf(pit[ok])), "after": pit_summary(norm_cdf(after_pit[best][ok])),
                 "forecasts": int(W)}
    if conformal is not None:
        whole = np.asarray(conformal, dtype=bool) & ok.all(axis=1)
        margin = conformal_margin(conformal_scores(paths[whole], y[whole]))
        rc.report["conformal_margin80"] = margin if math.isfinite(margin) else None
    return rc


def pit_summary(pit: np.ndarray) -> dict:
    """PIT KS p-value and the share of PIT values in the central 80% (the 80% coverage)."""
    from .metrics import ks_uniform

    pit = np.asarray(pit, dtype=np.float64)
    pit = pit[np.isfinite(pit)]
    p = ks_uniform(pit)[1] if pit.size >= 2 else float("nan")
    return {"pit_ks_p": float(p), "cov80": float(((pit >= 0.1) & (pit <= 0.9)).mean()) if pit.size else float("nan")}


# -- split conformal --------------------------------------------------------------------------
def conformal_scores(paths: np.ndarray, y: np.ndarray, level: float = 0.8) -> np.ndarray:
    """CQR scores (W, H) of the central ``level`` interval of paths (W, N, H) at targets (W, H),
    in widths of that interval (so that series of any scale share one margin)."""
    lo = np.quantile(paths, (1 - level) / 2, axis=1)
    hi = np.quantile(paths, (1 + level) / 2, axis=1)
    return np.maximum(lo - y, y - hi) / np.maximum(hi - lo, 1e-12)


def conformal_margin(scores: np.ndarray, level: float = 0.8) -> float:
    """The ``ceil((n + 1) level)``-th smallest score (inf when n is too small for the level)."""
    s = np.sort(scores[np.isfinite(scores)])
    n = s.size
    k = math.ceil((n + 1) * level)
    return float(s[k - 1]) if 1 <= k <= n else math.inf


def conformal_interval(paths: np.ndarray, margin, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """The conformal interval (lo, hi) (..., H) of paths (..., N, H): the central interval widened
    by ``margin`` of its width on each side (narrowed when the margin is negative); ``margin`` a
    number or an array broadcasting against (..., H), one per forecast."""
    lo = np.quantile(paths, (1 - level) / 2, axis=-2)
    hi = np.quantile(paths, (1 + level) / 2, axis=-2)
    w = np.maximum(hi - lo, 1e-12)
    return lo - margin * w, hi + margin * w
