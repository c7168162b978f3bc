"""Model inputs: scaling, lagged values and seasonal position.

Shape symbols used below: B windows (or series x paths), C context steps,
T steps of a window, K = max(lags), I input features.

A window is scaled by statistics of its context part only (the values a
forecast would see): ``z = (y - loc) / scale``. The input at step t, used to
predict ``z_t``, is

    [z_{t-l} for l in lags]        lagged scaled values, 0 where missing
    observed(z_{t-1})              1 if the previous value was observed, else 0
    [sin 2πk φ_t, cos 2πk φ_t]     seasonal position φ_t ∈ [0, 1), k = 1..harmonics
    [g_m(t) for m in growth]       mean(z_{t-m..t-1}) - mean(z_{t-2m..t-m-1}): how far the
                                   level of the last m steps rose over the m before them
                                   (observed values only; 0 where either span has none)

so everything the model needs at a future step comes from values already
generated, and the same code builds teacher-forced training inputs and the
inputs of ancestral sampling.

The growth inputs (``growth``, none by default) hand the model a smoothed
trend: over a whole season the seasonal swing cancels, and the mean of m weekly
values is far less noisy than the difference of two lags.

Before scaling, an optional *transform* (``transform``) turns the levels
``y`` of a window into the values the model learns, using the window's
context only, and :func:`untransform` maps forecasts back to levels:

    none     x_t = y_t
    diff     x_t = y_t - y_{t-1}  (ARIMA's d = 1); a path of differences is
             integrated back into levels by a cumulative sum from the last
             context value, so every sample path stays coherent
    detrend  x_t = y_t - (a + b t): the line a + b t is fitted by least squares
             to the observed context values (jointly with the seasonal
             harmonics, which are *not* subtracted: they only keep a partial
             season from tilting the line) and extrapolated over the horizon
    drift    x_t = y_t - r_t, r_t = l + b (t - t_l) + s(phi_t): a line and
             ``trend_harmonics`` seasonal pairs s are fitted by least squares to
             the ``trend_window`` values before the origin (a span longer than
             the context, so the slope is the long-run drift), then the line is
             re-anchored to the recent level: l is the mean deseasonalized value
             of the observed values among the last ``level_window`` steps, t_l
             their mean time.
             The seasonal shape *is* subtracted here. This is the structure of
             an ARIMA with drift and Fourier terms; the recurrent model learns
             what is left and how far the extrapolation strays.
    deseason x_t = y_t - s(phi_t): the same fit, only its season subtracted (the
             model still learns the trend, from a series freed of the seasonal
             swing; the season comes from ``trend_window`` steps, not from the
             noisy values one or more seasons back)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..errors import OptionError, UserError

SCALERS = ("mean-abs", "mean", "robust")
#: the transforms: model the levels, their first differences, the residuals from the
#: context's linear trend, or the residuals from a long-run drift and season anchored at the
#: recent level
TRANSFORMS = ("none", "diff", "detrend", "drift", "deseason")
#: the transforms fitted over ``trend_window`` steps before the origin (not just the context)
LONG_FIT = ("drift", "deseason")
#: scaled values fed back as inputs are clipped to this range (a wild sample
#: must not blow up the recurrent state)
INPUT_CLIP = 50.0


#: an automatic lag is kept when at least this share of the values trained on have a value that
#: far back (docs/forecast.md, twelfth round)
AUTO_LAG_SHARE = 0.5


def default_lags(season: int, span: int | None = None) -> list[int]:
    """1..4 and, for a seasonal series, s-1, s, s+1 and 2s (DeepAR's choice in spirit).

    With ``span``, the length of the longest series' part the network is fitted on, only the lags
    at most ``AUTO_LAG_SHARE`` of it (and 1 always): a lag beyond the span is missing (an input
    of 0) on every training window, so its weight never trains, yet on a later window that has
    the value it feeds the forecast through that untrained weight; one a little short of the
    span is seen by a handful of values and learns little more."""
    lags = {1, 2, 3, 4}
    if season > 1:
        lags |= {season - 1, season, season + 1, 2 * season}
    if span is not None:
        lags = {l for l in lags if l == 1 or l <= AUTO_LAG_SHARE * span}
    return sorted(l for l in lags if l >= 1)


@dataclass
class FeatureSpec:
    lags: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    harmonics: int = 2
    growth: list[int] = field(default_factory=list)
    scaler: str = "mean"  # the building block's; ForecastConfig (train, the command line) defaults to mean-abs
    transform: str = "none"
    #: ``drift`` and ``deseason``: steps before the origin the line and season are fitted to and
    #: the seasonal pairs of that fit; ``drift`` only: the steps whose mean level anchors the line
    trend_window: int = 0
    trend_harmonics: int = 0
    level_window: int = 1

    def __post_init__(self):
        if self.scaler not in SCALERS:
            raise OptionError("scaler", f"{self.scaler!r} is not a scaler; choose one of {', '.join(SCALERS)}")
        check_transform(self.transform)
        if self.transform in LONG_FIT and self.trend_window < 2:
            raise OptionError("trend_window", f"must be >= 2 steps for transform {self.transform}, "
                                              f"got {self.trend_window}")
        if self.level_window < 1 or self.trend_harmonics < 0:
            raise UserError(f"level_window must be >= 1 and trend_harmonics >= 0, "
                            f"got {self.level_window} and {self.trend_harmonics}")
        if not self.lags or min(self.lags) < 1 or 1 not in self.lags:
            raise OptionError("lags", f"must be positive and include 1, got {self.lags}")
        self.lags = sorted(set(int(l) for l in self.lags))
        if any(int(m) < 1 for m in self.growth):
            raise OptionError("growth", f"spans must be positive whole numbers of steps, got {self.growth}")
        self.growth = sorted(set(int(m) for m in self.growth))

    @property
    def max_lag(self) -> int:
        """K: how many steps back the inputs of a step reach (the lags, and 2m for growth span m)."""
        return max(max(self.lags), 2 * max(self.growth, default=0))

    @property
    def num_inputs(self) -> int:
        return len(self.lags) + 1 + 2 * self.harmonics + len(self.growth)

    def to_dict(self) -> dict:
        return asdict(self)

    def transform_kwargs(self) -> dict:
        """Keyword arguments of :func:`transform` for this spec (all but values and positions)."""
        if self.transform in LONG_FIT:
            return dict(kind=self.transform, harmonics=self.trend_harmonics, trend_window=self.trend_window,
                        level_window=self.level_window)
        return dict(kind=self.transform, harmonics=self.harmonics)

    def history(self, context: int) -> int:
        """Steps a window must reach back before its context: the lags, and for ``drift`` and
        ``deseason`` the whole ``trend_window`` before the origin."""
        fit = self.trend_window - context if self.transform in LONG_FIT else 0
        return max(self.max_lag, fit)


def scale_stats(context: np.ndarray, kind: str, floor: np.ndarray | float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """``loc, scale`` (B,) of context windows (B, C) with NaN for missing values.

    mean:     loc = mean, scale = mean absolute deviation from it
    robust:   loc = median, scale = interquartile range / 1.349 (the sd of a normal)
    mean-abs: loc = 0, scale = mean absolute value (DeepAR's scaling: not centred)
    The scale is at least ``floor`` (per window or scalar) and positive.
    """
    if kind == "mean":
        loc = np.nanmean(context, axis=1)
        scale = np.nanmean(np.abs(context - loc[:, None]), axis=1)
    elif kind == "mean-abs":
        loc = np.zeros(context.shape[0])
        scale = np.nanmean(np.abs(context), axis=1)
    elif kind == "robust":
        q25, loc, q75 = np.nanpercentile(context, [25, 50, 75], axis=1)
        scale = (q75 - q25) / 1.349
    else:
        raise UserError(f"unknown scaler {kind!r}; choose one of {', '.join(SCALERS)}")
    scale = np.maximum(np.nan_to_num(scale), floor)
    scale = np.where(scale > 0, scale, 1.0)
    return loc, scale


def seasonal(phase: torch.Tensor, harmonics: int) -> torch.Tensor:
    """(…,) phases in [0, 1) -> (…, 2*harmonics) sin/cos features."""
    if harmonics == 0:
        return phase.new_zeros(phase.shape + (0,))
    k = torch.arange(1, harmonics + 1, dtype=phase.dtype, device=phase.device)
    angle = 2 * math.pi * phase.unsqueeze(-1) * k  # (…, harmonics)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def window_inputs(z_hist: torch.Tensor, phase: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Teacher-forced inputs (B, T, I) for steps 0..T-1 of windows.

    ``z_hist`` (B, K + T): scaled values from K steps before the window to its
    end (NaN where missing or before the series starts); ``phase`` (B, T).
    """
    K = spec.max_lag
    T = z_hist.shape[1] - K
    lagged = torch.stack([z_hist[:, K - l:K - l + T] for l in spec.lags], dim=-1)  # (B, T, len(lags))
    growth = None
    if spec.growth:
        sums, counts = running_sums(z_hist)  # (B, K + T + 1) each
        end = torch.arange(K, K + T, device=z_hist.device)  # step t reads columns up to K + t - 1
        growth = growth_inputs(lambda back: (sums[:, end - back], counts[:, end - back]), spec)
    return lag_inputs(lagged, phase, spec, growth)


def step_inputs(buf: torch.Tensor, pos: int, phase: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Inputs (B, I) for the step whose value goes to ``buf[:, pos]``.

    ``buf`` (B, P) holds scaled values (NaN where missing) up to ``pos - 1``;
    ``phase`` (B,) is that step's seasonal phase.
    """
    lagged = torch.stack([buf[:, pos - l] for l in spec.lags], dim=-1)
    growth = None
    if spec.growth:
        sums, counts = running_sums(buf[:, pos - spec.max_lag:pos])  # (B, K + 1): index K is the step
        K = spec.max_lag
        growth = growth_inputs(lambda back: (sums[:, K - back], counts[:, K - back]), spec)
    return lag_inputs(lagged, phase, spec, growth)


def lag_inputs(lagged: torch.Tensor, phase: torch.Tensor, spec: FeatureSpec,
               growth: torch.Tensor | None = None) -> torch.Tensor:
    """Inputs (…, I) of a step from its lagged values (…, len(lags)) (NaN where missing), its
    phase (…) and, when ``spec.growth`` is set, its growth inputs (…, len(growth))."""
    if (growth is None) != (not spec.growth):
        raise ValueError("growth inputs are given exactly when spec.growth is set")
    observed = torch.isfinite(lagged[..., :1]).to(lagged.dtype)  # lag 1 is lags[0]
    lagged = torch.nan_to_num(lagged, nan=0.0).clamp(-INPUT_CLIP, INPUT_CLIP)
    parts = [lagged, observed, seasonal(phase, spec.harmonics)]
    if growth is not None:
        parts.append(growth)
    return torch.cat(parts, dim=-1)


def running_sums(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Running sums (B, P + 1) of the observed values of ``z`` (B, P) and of their count:
    column j sums columns 0..j-1, so a span's sum is the difference of two columns."""
    ok = torch.isfinite(z)
    zero = z.new_zeros(z.shape[0], 1)
    return (torch.cat([zero, torch.where(ok, z, 0.0).cumsum(1)], 1),
            torch.cat([zero, ok.to(z.dtype).cumsum(1)], 1))


def growth_inputs(at, spec: FeatureSpec) -> torch.Tensor:
    """Growth inputs (…, len(spec.growth)) of a step.

    ``at(back)`` gives the running sums (of observed values, and of their count) up
    to ``back`` steps before the step: ``at(0)`` includes everything before it. For a
    span m the input is the mean of the last m observed values less the mean of the
    m before them, 0 where either span has none.
    """
    feats = []
    for m in spec.growth:
        (s0, n0), (s1, n1), (s2, n2) = at(0), at(m), at(2 * m)
        new, old = (s0 - s1) / (n0 - n1).clamp_min(1), (s1 - s2) / (n1 - n2).clamp_min(1)
        feats.append(torch.where((n0 > n1) & (n1 > n2), new - old, 0.0))
    return torch.stack(feats, dim=-1).clamp(-INPUT_CLIP, INPUT_CLIP)


# -- transforms (levels <-> what the model learns) ------------------------------------------------
def check_transform(name: str) -> str:
    if name not in TRANSFORMS:
        raise OptionError("transform", f"{name!r} is not a transform; choose one of {', '.join(TRANSFORMS)}")
    return name


@dataclass
class TransformState:
    """What :func:`untransform` needs to map a window's forecast back to levels (one row per window).

    ``diff``: ``anchor`` (B,) the level at the last context step. ``detrend``: the line
    ``a + b t`` (B,) each, t counted in steps from the first context step. ``drift`` and
    ``deseason``: ``ref`` (B, H) the reference curve (the season alone for ``deseason``) over
    the horizon steps whose phases were given.
    """

    kind: str
    context: int
    anchor: np.ndarray | None = None
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    ref: np.ndarray | None = None


def transform(vals: np.ndarray, *, start: int, context: int, kind: str,
              phase: np.ndarray | None = None, harmonics: int = 0, trend_window: int = 0,
              level_window: int = 1) -> tuple[np.ndarray, TransformState]:
    """Levels (B, L) -> model-space values (B, L) and the state that inverts the forecast.

    Columns ``start .. start+context-1`` are each window's context and column
    ``start+context`` its origin: only values before the origin are read to fit
    the transform (the detrend line on the context; the diff anchor; the drift
    fit on the ``trend_window`` columns before the origin, which may begin
    before ``start``). ``phase`` (B, P >= L) is the seasonal phase of column 0
    onwards, used with ``harmonics`` > 0; for ``drift`` its columns past the
    origin are the horizon the reference curve is extended over. NaN (missing)
    stays NaN; a difference is NaN where either value is missing, and the first
    column's difference is NaN (its previous value is not in the window).
    """
    check_transform(kind)
    vals = np.asarray(vals, dtype=np.float64)
    B, L = vals.shape
    C = context
    if kind == "none":
        return vals.copy(), TransformState(kind, C)
    ctx = vals[:, start:start + C]
    if kind == "diff":
        x = np.full_like(vals, np.nan)
        x[:, 1:] = vals[:, 1:] - vals[:, :-1]
        return x, TransformState(kind, C, anchor=_diff_anchor(ctx, x[:, start:start + C]))
    if kind == "detrend":
        a, b = fit_trend(ctx, phase[:, start:start + C] if harmonics and phase is not None else None,
                         harmonics)
        t = np.arange(L, dtype=np.float64) - start
        return vals - (a[:, None] + b[:, None] * t), TransformState(kind, C, a=a, b=b)
    origin = start + C
    ref = drift_reference(vals[:, :origin], phase, harmonics=harmonics, window=trend_window,
                          level_window=level_window, season_only=kind == "deseason")  # (B, P)
    return vals - ref[:, :L], TransformState(kind, C, ref=ref[:, origin:])


def untransform(x: np.ndarray, state: TransformState) -> np.ndarray:
    """Model-space forecasts (B, ..., H) of the H steps after each context -> levels.

    ``diff`` integrates each path: ``y_{C+k} = anchor + x_C + ... + x_{C+k}``;
    ``detrend`` adds the extrapolated line ``a + b t``, t = C .. C+H-1; ``drift`` and
    ``deseason`` add their reference curve over the horizon.
    """
    x = np.asarray(x, dtype=np.float64)
    if state.kind == "none":
        return x.copy()
    extra = (1,) * (x.ndim - 1)  # broadcast (B,) over the path and step axes
    if state.kind == "diff":
        return state.anchor.reshape(-1, *extra) + np.cumsum(x, axis=-1)
    if state.kind in LONG_FIT:
        H = x.shape[-1]
        if state.ref.shape[1] < H:
            raise ValueError(f"the {state.kind} reference covers {state.ref.shape[1]} horizon steps, "
                             f"not {H}: pass the phases of the whole horizon to transform()")
        ref = state.ref[:, :H].reshape(len(state.ref), *((1,) * (x.ndim - 2)), H)
        return x + ref
    t = state.context + np.arange(x.shape[-1], dtype=np.float64)
    return x + state.a.reshape(-1, *extra) + state.b.reshape(-1, *extra) * t


def fit_line_season(vals: np.ndarray, phase: np.ndarray | None = None, harmonics: int = 0
                    ) -> np.ndarray:
    """Least-squares ``a + b t + sum_k (c_k sin 2 pi k phase + d_k cos 2 pi k phase)`` through the
    observed values of each row of ``vals`` (B, W), t = 0 .. W-1; coefficients (B, 2 + 2 harmonics)
    in that order. A row keeps the harmonics only with at least 3 observed values per
    coefficient (else their coefficients are 0), the slope with 2 (else 0); with none
    observed, the row is NaN."""
    B, W = vals.shape
    t = np.arange(W, dtype=np.float64)
    coef = np.zeros((B, 2 + 2 * harmonics))
    for i in range(B):
        ok = np.isfinite(vals[i])
        n = int(ok.sum())
        if n == 0:
            coef[i] = np.nan
            continue
        if n == 1:
            coef[i, 0] = vals[i][ok][0]
            continue
        cols = [np.ones(W), t]
        if phase is not None and harmonics and n >= 3 * (2 + 2 * harmonics):
            cols += list(season_columns(phase[i], harmonics).T)
        X = np.stack(cols, axis=1)[ok]
        coef[i, :X.shape[1]] = np.linalg.lstsq(X, vals[i][ok], rcond=None)[0]
    return coef


def season_columns(phase: np.ndarray, harmonics: int) -> np.ndarray:
    """(..., W) phases -> (..., W, 2 harmonics): sin of harmonics 1..k, then their cos."""
    ang = 2 * np.pi * phase[..., None] * np.arange(1, harmonics + 1)
    return np.concatenate([np.sin(ang), np.cos(ang)], axis=-1)


def fit_trend(ctx: np.ndarray, phase: np.ndarray | None = None, harmonics: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line ``a + b t`` (t = 0 .. C-1) through the observed values of each row of
    ``ctx`` (B, C), fitted jointly with ``harmonics`` sin/cos pairs of ``phase`` (B, C) when
    given and the row has at least 3 observed values per coefficient (else the line alone)."""
    coef = fit_line_season(ctx, phase, harmonics)
    return coef[:, 0], coef[:, 1]


def drift_reference(before: np.ndarray, phase: np.ndarray | None, *, harmonics: int, window: int,
                    level_window: int, season_only: bool = False) -> np.ndarray:
    """The ``drift`` transform's reference curve (B, P) over the columns of ``phase`` (B, P).

    ``before`` (B, O) holds each row's values up to its origin (column O); the line and
    season are fitted to its last ``window`` columns, the level to the deseasonalized mean
    of the observed values among its last ``level_window`` columns (the fitted line's own
    value at the last column when none of them is observed). ``season_only``: the fitted season alone (``deseason``).
    """
    B, O = before.shape
    W = min(window, O)
    span = before[:, O - W:]
    P = phase.shape[1] if phase is not None else O
    if phase is None:
        harmonics = 0
    coef = fit_line_season(span, phase[:, O - W:O] if harmonics else None, harmonics)
    t = np.arange(P, dtype=np.float64) - (O - W)  # the fit's time axis, over every column
    season = (np.einsum("bpk,bk->bp", season_columns(phase, harmonics), coef[:, 2:]) if harmonics
              else np.zeros((B, P)))
    if season_only:
        return np.where(np.isfinite(coef[:, :1]), season, np.nan)
    A = min(level_window, W)
    recent = span[:, W - A:] - season[:, O - A:O]  # deseasonalized last A steps
    seen = np.isfinite(recent)
    count = seen.sum(axis=1)
    t_recent = t[O - A:O]
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.where(seen, recent, 0.0).sum(axis=1) / count
        t_level = (seen * t_recent).sum(axis=1) / count
    line_there = coef[:, 0] + coef[:, 1] * t_recent[-1]
    level = np.where(count > 0, level, line_there)
    t_level = np.where(count > 0, t_level, t_recent[-1])
    return level[:, None] + coef[:, 1:2] * (t[None] - t_level[:, None]) + season


def _diff_anchor(ctx: np.ndarray, dctx: np.ndarray) -> np.ndarray:
    """Level the integration of each row starts from: the last context value; when that one is
    missing, the last observed one plus the context's mean difference per missing step after it."""
    B, C = ctx.shape
    anchor = ctx[:, -1].copy()
    for i in np.where(~np.isfinite(anchor))[0]:
        obs = np.where(np.isfinite(ctx[i]))[0]
        if len(obs) == 0:
            continue
        gap = C - 1 - obs[-1]
        drift = np.nanmean(dctx[i]) if np.isfinite(dctx[i]).any() else 0.0
        anchor[i] = ctx[i, obs[-1]] + gap * drift
    return anchor


def transform_floor(values: np.ndarray, kind: str) -> float:
    """1% of the spread of a series' values in model space (the scale floor): its levels for
    ``none``, ``detrend`` and ``deseason`` (a guard against a flat context), its differences for ``diff`` and
    ``drift`` (whose residuals are of the size of a step's change, not of the level's range)."""
    v = np.diff(values) if kind in ("diff", "drift") else values
    sd = float(np.nanstd(v)) if np.isfinite(v).any() else 0.0
    return 0.01 * max(sd, 1e-12)
