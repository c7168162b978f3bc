"""Model inputs: scaling, lagged values and seasonal position.

Shape symbols used below: B windows (or series x paths), C context steps,
T steps of a window, K = max(lags), I input features.

A window is scaled by statistics of its context part only (the values a
forecast would see): ``z = (y - loc) / scale``. The input at step t, used to
predict ``z_t``, is

    [z_{t-l} for l in lags]        lagged scaled values, 0 where missing
    observed(z_{t-1})              1 if the previous value was observed, else 0
    [sin 2πk φ_t, cos 2πk φ_t]     seasonal position φ_t ∈ [0, 1), k = 1..harmonics

so everything the model needs at a future step comes from values already
generated, and the same code builds teacher-forced training inputs and the
inputs of ancestral sampling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..errors import UserError

SCALERS = ("mean", "robust")
#: scaled values fed back as inputs are clipped to this range (a wild sample
#: must not blow up the recurrent state)
INPUT_CLIP = 50.0


def default_lags(season: int) -> list[int]:
    """1..4 and, for a seasonal series, s-1, s, s+1 and 2s (DeepAR's choice in spirit)."""
    lags = {1, 2, 3, 4}
    if season > 1:
        lags |= {season - 1, season, season + 1, 2 * season}
    return sorted(l for l in lags if l >= 1)


@dataclass
class FeatureSpec:
    lags: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    harmonics: int = 2
    scaler: str = "mean"

    def __post_init__(self):
        if self.scaler not in SCALERS:
            raise UserError(f"unknown --scaler {self.scaler!r}; choose one of {', '.join(SCALERS)}")
        if not self.lags or min(self.lags) < 1 or 1 not in self.lags:
            raise UserError(f"lags must be positive and include 1, got {self.lags}")
        self.lags = sorted(set(int(l) for l in self.lags))

    @property
    def max_lag(self) -> int:
        return max(self.lags)

    @property
    def num_inputs(self) -> int:
        return len(self.lags) + 1 + 2 * self.harmonics

    def to_dict(self) -> dict:
        return asdict(self)


def scale_stats(context: np.ndarray, kind: str, floor: np.ndarray | float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """``loc, scale`` (B,) of context windows (B, C) with NaN for missing values.

    mean:   loc = mean, scale = mean absolute deviation from it
    robust: loc = median, scale = interquartile range / 1.349 (the sd of a normal)
    The scale is at least ``floor`` (per window or scalar) and positive.
    """
    if kind == "mean":
        loc = np.nanmean(context, axis=1)
        scale = np.nanmean(np.abs(context - loc[:, None]), axis=1)
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
    observed = torch.isfinite(lagged[..., :1]).to(z_hist.dtype)  # lag 1 is lags[0]
    lagged = torch.nan_to_num(lagged, nan=0.0).clamp(-INPUT_CLIP, INPUT_CLIP)
    return torch.cat([lagged, observed, seasonal(phase, spec.harmonics)], dim=-1)


def step_inputs(buf: torch.Tensor, pos: int, phase: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Inputs (B, I) for the step whose value goes to ``buf[:, pos]``.

    ``buf`` (B, P) holds scaled values (NaN where missing) up to ``pos - 1``;
    ``phase`` (B,) is that step's seasonal phase.
    """
    lagged = torch.stack([buf[:, pos - l] for l in spec.lags], dim=-1)  # (B, len(lags))
    observed = torch.isfinite(lagged[:, :1]).to(buf.dtype)
    lagged = torch.nan_to_num(lagged, nan=0.0).clamp(-INPUT_CLIP, INPUT_CLIP)
    return torch.cat([lagged, observed, seasonal(phase, spec.harmonics)], dim=-1)
