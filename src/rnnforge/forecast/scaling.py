"""Per-series scaling for a global model over many series (DeepAR's point: one network learns from
all of them, so each must be brought to a common scale first).

Each series is standardised by the mean and the mean absolute deviation of its observed values
in the training part (before any held-out window), ``z = (y - loc) / scale``; the model trains on
and forecasts the scaled series, and its sample paths are mapped back, ``y = loc + scale z``. The
statistics are stored in the checkpoint by series name, so ``predict`` and ``evaluate`` apply the
ones training saw. The model's own per-window scaling (``--scaler``) still acts on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .series import Series


@dataclass
class SeriesScaling:
    stats: dict[str, tuple[float, float]]  # series name -> (loc, scale)

    @classmethod
    def fit(cls, series: list[Series]) -> "SeriesScaling":
        stats = {}
        for s in series:
            v = s.values[np.isfinite(s.values)]
            loc = float(v.mean())
            scale = float(np.abs(v - loc).mean())
            stats[s.name] = (loc, scale if scale > 0 else 1.0)
        return cls(stats)

    def _of(self, s: Series) -> tuple[float, float]:
        try:
            return self.stats[s.name]
        except KeyError:
            raise UserError(f"series {s.name!r} was not among the series the model was trained on, so its "
                            f"scale is unknown (the checkpoint scales each series by its own statistics)") from None

    def scale(self, series: list[Series]) -> list[Series]:
        out = []
        for s in series:
            loc, scale = self._of(s)
            out.append(Series(s.name, (s.values - loc) / scale, s.timestamps, s.freq, s.phase0, s.phase_step,
                              s.step_days))
        return out

    def unscale(self, paths: np.ndarray, series: list[Series]) -> np.ndarray:
        """Sample paths (S, ...) of the scaled series back in data units."""
        loc = np.array([self._of(s)[0] for s in series]).reshape((-1,) + (1,) * (paths.ndim - 1))
        scale = np.array([self._of(s)[1] for s in series]).reshape(loc.shape)
        return loc + scale * paths

    def to_dict(self) -> dict:
        return {k: [float(a), float(b)] for k, (a, b) in self.stats.items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> "SeriesScaling | None":
        if not d:
            return None
        return cls({str(k): (float(v[0]), float(v[1])) for k, v in d.items()})


class Scaled:
    """A forecaster of scaled series seen as one of the series in data units (``sample_paths``)."""

    def __init__(self, model, scaling: SeriesScaling) -> None:
        self.model, self.scaling = model, scaling
        self.config, self.spec = model.config, model.spec
        self.members = getattr(model, "members", None)

    def sample_paths(self, series: list[Series], origins: list[int], **kw) -> np.ndarray:
        paths = self.model.sample_paths(self.scaling.scale(series), origins, **kw)
        return self.scaling.unscale(paths, series)
