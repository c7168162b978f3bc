"""The forecaster: inputs -> one of the notes' cells -> readout δ -> distribution head.

DeepAR-style (Salinas et al. 2020): at every step the recurrent state, fed the
lagged values and the seasonal position, gives the parameters of the
distribution of the next scaled value. Training maximises the likelihood (or
minimises the CRPS) of the observed values with teacher forcing; forecasting
runs the context through the layer, then draws each future value by inverse
transform, ``z = F^{-1}(u)`` with u ~ U[0, 1) (the notes' Ex2), and feeds it
back (ancestral sampling), N paths at once as one batch through ``layer.step``.

Shape symbols: S series, N paths per series, C context, H horizon, K max lag,
I inputs, Hd hidden size, P head parameters, L layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .series import Series, check_context_window
from ..errors import OptionError, UserError
from ..layers import CELL_NAMES, make_layer
from ..readout import Readout
from . import heads as heads_mod
from .features import FeatureSpec, scale_stats, step_inputs, transform, transform_floor, untransform, window_inputs

#: the cells: the notes' sigmoid RNN, the tanh RNN, the GRU and the LSTM
CELLS = CELL_NAMES


@dataclass
class ModelConfig:
    cell: str = "lstm"
    hidden: int = 40
    layers: int = 2
    dropout: float = 0.1
    head: str = "quantile"
    head_kwargs: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)  # FeatureSpec as a dict
    #: D > 0: a learned D-vector per training series (``series_names``, in embedding-row order)
    #: concatenated to the inputs at every step (DeepAR's item embedding); 0: none
    series_embedding: int = 0
    series_names: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Forecaster(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.cell not in CELLS:
            raise OptionError("cell", f"{config.cell!r} is not a cell; choose one of {', '.join(CELLS)}")
        self.config = config
        self.spec = FeatureSpec(**config.features)
        self.head = heads_mod.make_head(config.head, **config.head_kwargs)
        D = int(config.series_embedding)
        # not called ``embedding``: export takes a network with that attribute for a character model
        self.series_embed = None
        if D:
            names = [str(n) for n in config.series_names]
            if not names or len(set(names)) != len(names):
                raise UserError(f"a series embedding needs distinct series names, got {len(names)} names "
                                f"of which {len(set(names))} distinct")
            self.series_embed = nn.Embedding(len(names), D)
            nn.init.normal_(self.series_embed.weight, std=0.1)
        self._ids = {n: i for i, n in enumerate(config.series_names)}
        self.rnn = make_layer(config.cell, self.spec.num_inputs + D, config.hidden,
                              num_layers=config.layers, bias=True, batch_first=True,
                              dropout=config.dropout if config.layers > 1 else 0.0)
        self.readout = Readout(config.hidden, self.head.num_params)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: inputs (B, T, I) -> raw head parameters (B, T, P); ``ids`` (B,) the
        windows' series rows of the embedding (needed exactly when the model has one)."""
        out, _ = self.rnn(self.with_embedding(x, ids))  # (B, T, Hd)
        return self.readout(out)

    def series_ids(self, series: list[Series], device: str | torch.device = "cpu") -> torch.Tensor | None:
        """The embedding rows (S,) of series by name; None without an embedding. A series the model
        has no embedding for is refused: no vector was learned for it, and a stand-in would
        forecast it as some other series."""
        if self.series_embed is None:
            return None
        ids = []
        for s in series:
            if s.name not in self._ids:
                known = list(self._ids)
                raise UserError(f"series {s.name!r} has no learned embedding: the model learned one for each "
                                f"of the {len(known)} series it was trained on ({', '.join(known[:5])}"
                                f"{', ...' if len(known) > 5 else ''}); forecast those, or train one with "
                                f"series_embedding 0 for new series")
            ids.append(self._ids[s.name])
        return torch.as_tensor(ids, dtype=torch.long, device=device)

    def with_embedding(self, x: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """Inputs (B, [T,] I) -> (B, [T,] I + D): each row's series embedding appended at every step."""
        if self.series_embed is None:
            if ids is not None:
                raise ValueError("series ids given to a forecaster without a series embedding")
            return x
        if ids is None:
            raise ValueError("this forecaster has a series embedding: give each window's series ids")
        e = self.series_embed(ids).to(x.dtype)  # (B, D)
        if x.dim() == 3:
            e = e[:, None, :].expand(-1, x.shape[1], -1)
        return torch.cat([x, e], dim=-1)

    # -- ancestral sampling ------------------------------------------------------
    @torch.no_grad()
    def sample_paths(self, series: list[Series], origins: list[int], *, context: int, horizon: int,
                     num_samples: int, generator: torch.Generator | None = None,
                     device: str | torch.device = "cpu") -> np.ndarray:
        """``num_samples`` future paths (S, N, H) from ``origins[i]`` of ``series[i]``, in data units.

        The ``context`` values before each origin condition the forecast (NaNs
        allowed; an all-NaN context is a UserError); values at or after the
        origin are never read.
        """
        if num_samples < 1:
            raise OptionError("samples", f"must be >= 1, got {num_samples}")
        self.eval()
        spec, K, C, H, N = self.spec, self.spec.max_lag, context, horizon, num_samples
        for s, o in zip(series, origins):
            check_context_window(s, o, C)
        R = spec.history(C)  # >= K: the lags, and the span a drift transform is fitted to
        hist = np.stack([_slice(s.values, o - C - R, o) for s, o in zip(series, origins)])  # (S, R+C)
        phase = np.stack([s.phase(o - C - R, o + H) for s, o in zip(series, origins)])  # (S, R+C+H)
        hist, tstate = transform(hist, start=R, context=C, phase=phase, **spec.transform_kwargs())
        hist, phase = hist[:, R - K:], phase[:, R:]  # (S, K+C) in model space, (S, C+H)
        for s, o, row in zip(series, origins, hist):
            if not np.isfinite(row[K:]).any():
                raise UserError(f"series {s.name!r}: no two consecutive values of the {C} before step {o} "
                                f"are observed, so transform {spec.transform} has nothing to condition on")
        loc, scale = scale_stats(hist[:, K:], spec.scaler, floor=_floor(series, origins, spec.transform))
        dtype = self.readout.delta.dtype
        to = dict(dtype=dtype, device=device)
        z_hist = torch.as_tensor((hist - loc[:, None]) / scale[:, None], **to)  # (S, K+C)
        phase_t = torch.as_tensor(phase, **to)

        ids = self.series_ids(series, device)  # (S,) or None
        x = self.with_embedding(window_inputs(z_hist, phase_t[:, :C], spec), ids)  # (S, C, I [+ D])
        _, state = self.rnn(x)  # (L, S, Hd), or a pair for the LSTM
        S = len(series)
        ids_f = None if ids is None else ids.repeat_interleave(N)  # (S*N,)
        state = repeat_state(state, N)  # (L, S*N, Hd), paths of a series adjacent
        buf = torch.full((S * N, K + H), float("nan"), **to)  # (S*N, K+H) scaled values
        buf[:, :K] = z_hist[:, -K:].repeat_interleave(N, dim=0)  # the K values before the origin
        phase_f = phase_t[:, C:].repeat_interleave(N, dim=0)  # (S*N, H)
        u = uniforms(H, S * N, generator=generator, device=device)
        for k in range(H):
            xk = self.with_embedding(step_inputs(buf, K + k, phase_f[:, k], spec), ids_f)  # (S*N, I [+ D])
            top, state = self.rnn.step(xk, state)  # (S*N, Hd)
            raw = self.readout(top)  # (S*N, P)
            buf[:, K + k] = self.head.ppf(raw, u[k]).to(dtype)  # Ex2: z = F^{-1}(u), u in float64
        z = buf[:, K:].reshape(S, N, H).double().cpu().numpy()
        return untransform(loc[:, None, None] + scale[:, None, None] * z, tstate)  # paths in levels


def repeat_state(state, n: int):
    """A recurrent state (L, B, Hd), or the LSTM's pair of them, with each row repeated n times
    (L, B*n, Hd): the start of n sample paths per row, the copies of a row adjacent."""
    if isinstance(state, tuple):
        return tuple(h.repeat_interleave(n, dim=1) for h in state)
    return state.repeat_interleave(n, dim=1)


def uniforms(horizon: int, n: int, *, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """(horizon, n) uniforms for inverse transform sampling, in float64 and kept off 0 and 1 so
    that every head's ppf stays finite."""
    u = torch.rand((horizon, n), generator=generator, dtype=torch.float64, device=device)
    return u.clamp(1e-12, 1 - 1e-12)


def _slice(values: np.ndarray, start: int, stop: int) -> np.ndarray:
    """values[start:stop], NaN-padded where start < 0."""
    out = np.full(stop - start, np.nan)
    lo = max(start, 0)
    out[lo - start:] = values[lo:stop]
    return out


def _floor(series: list[Series], origins: list[int] | None = None, kind: str = "none") -> np.ndarray:
    """Smallest scale per series: 1% of the spread of its values (in model space, see
    ``transform_floor``) before the origin, so a flat context window still gives a finite scale;
    values from the origin on are never read."""
    ends = origins or [len(s) for s in series]
    return np.array([transform_floor(s.values[:o], kind) for s, o in zip(series, ends)])




class Ensemble(nn.Module):
    """K forecasters of one configuration trained from different seeds (a deep ensemble,
    Lakshminarayanan et al. 2017). A forecast is the equal mixture of theirs: the N paths
    are split among the members, which is stratified sampling of the mixture, so the
    spread between members (what the data could not pin down) widens the forecast."""

    def __init__(self, members: list[Forecaster]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    @property
    def config(self) -> ModelConfig:
        return self.members[0].config

    @property
    def spec(self):
        return self.members[0].spec

    def sample_paths(self, series: list[Series], origins: list[int], *, context: int, horizon: int,
                     num_samples: int, generator: torch.Generator | None = None,
                     device: str | torch.device = "cpu") -> np.ndarray:
        """(S, N, H) paths: member k draws N/K of them (the first N mod K members one more)."""
        K = len(self.members)
        if num_samples < K:
            raise OptionError("samples", f"{num_samples} is fewer than the {K} ensemble members; "
                                         f"draw at least one path per member")
        sizes = [num_samples // K + (1 if k < num_samples % K else 0) for k in range(K)]
        return np.concatenate([m.sample_paths(series, origins, context=context, horizon=horizon,
                                              num_samples=n, generator=generator, device=device)
                               for m, n in zip(self.members, sizes)], axis=1)
