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

import warnings
import weakref
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .series import Series, check_context_window
from ..errors import OptionError, UserError
from ..layers import CELL_NAMES, make_layer
from ..readout import Readout
from . import heads as heads_mod
from .features import (FeatureSpec, growth_inputs, lag_inputs, running_sums, scale_stats, transform,
                       transform_floor, untransform, window_inputs)

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
                     device: str | torch.device = "cpu", cuda_graph: bool | None = None) -> np.ndarray:
        """``num_samples`` future paths (S, N, H) from ``origins[i]`` of ``series[i]``, in data units.

        The ``context`` values before each origin condition the forecast (NaNs
        allowed; an all-NaN context is a UserError); values at or after the
        origin are never read.

        Each horizon step (inputs from the values drawn so far, every layer, the
        readout δ, the head's inverse transform) is one static step
        (:class:`Rollout`): buffers that stay in place, the step's position a
        counter on the device. ``cuda_graph``: on CUDA (None, the default, or True)
        that step is captured once as a CUDA graph per paths count, horizon, dtype
        and weights version, and replayed; False runs it op by op; True off CUDA or
        with a capture that fails is an error (under None a failed capture warns and
        runs op by op). The uniforms are drawn up front as before, so a seed gives the
        same paths with or without the graph on the same device. The Student-t
        head cannot be captured (its quantile solver and incomplete beta function
        decide on the host when they have converged), and the mixture head's
        bisection is not captured (not yet run on a GPU): on CUDA they run op by
        op, and ``cuda_graph=True`` with them is an error.
        """
        if num_samples < 1:
            raise OptionError("samples", f"must be >= 1, got {num_samples}")
        if cuda_graph and torch.device(device).type != "cuda":
            raise OptionError("cuda_graph", f"needs a CUDA device, got device {device}")
        if cuda_graph and self.head.name not in GRAPH_HEADS:
            why = ("its solver checks convergence on the host" if self.head.name == "student-t"
                   else "it has not been run in one on a GPU")
            raise OptionError("cuda_graph", f"the {self.head.name} head cannot be captured in a CUDA graph "
                                            f"({why}); heads that can: {', '.join(GRAPH_HEADS)}")
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
        graph = torch.device(device).type == "cuda" and cuda_graph is not False and self.head.name in GRAPH_HEADS
        run = Rollout.of(self, S * N, H, ids_f is not None, graph, strict=cuda_graph is True)
        z = run(buf, phase_f, u, state, ids_f)[:, K:].reshape(S, N, H).double().cpu().numpy()
        return untransform(loc[:, None, None] + scale[:, None, None] * z, tstate)  # paths in levels


#: heads whose inverse transform runs without host synchronization, so a CUDA graph can capture it
GRAPH_HEADS = ("gaussian", "quantile")

#: the last Rollout of each forecaster (its buffers and captured graph), reused by the next call
_ROLLOUTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class Rollout:
    """The sampling step of a forecaster in static buffers, graph-capturable.

    Buffers for M paths and horizon H: the scaled values ``buf`` (M, K+H), the
    phases (M, H), the uniforms (H, M), the state, the series ids, and the step's
    column ``pos`` and horizon index on the device. ``step()`` computes what one
    iteration of the plain loop computes (``step_inputs`` at column ``pos``, the
    layer's ``step``, the readout, ``head.ppf``), with the columns picked by
    ``index_select`` from the device counters instead of Python indices: the same
    values, no host synchronization. On CUDA with ``graph`` it is captured once
    (``engines.decode.CudaGraph``) and replayed H times per call; the capture is
    redone when a parameter of the model changes (``data_ptr``, ``_version``).
    """

    def __init__(self, model: Forecaster, M: int, H: int, with_ids: bool, graph: bool,
                 strict: bool = True) -> None:
        p = model.readout.delta
        spec, K = model.spec, model.spec.max_lag
        self.model_ref = weakref.ref(model)
        self.M, self.H, self.with_ids, self.graph = M, H, with_ids, graph
        # graph asked for (the cache key), and whether a failed capture is an error (else a warning
        # and the op-by-op step: the default, cuda_graph=None, is a preference, not a demand)
        self.want, self.strict = (graph, strict), strict
        self.busy = False  # running (another thread): a second call gets its own instance
        self.dtype, self.device = p.dtype, p.device
        to = dict(dtype=p.dtype, device=p.device)
        L, Hd = model.rnn.num_layers, model.rnn.hidden_size
        self.buf = torch.zeros(M, K + H, **to)
        self.phase = torch.zeros(M, H, **to)
        self.u = torch.full((H, M), 0.5, dtype=torch.float64, device=p.device)
        self.h = torch.zeros(L, M, Hd, **to)
        self.c = torch.zeros(L, M, Hd, **to) if model.rnn.CELL.STATES == 2 else None
        self.ids = torch.zeros(M, dtype=torch.long, device=p.device) if with_ids else None
        self.pos = torch.zeros(1, dtype=torch.long, device=p.device)  # column of buf this step writes
        self.k = torch.zeros(1, dtype=torch.long, device=p.device)  # horizon index of this step
        self.lags = torch.as_tensor(spec.lags, dtype=torch.long, device=p.device)
        self.window = torch.arange(-K, 0, device=p.device)  # the K columns before pos
        self.replay = None
        self.key = None

    @classmethod
    def of(cls, model: Forecaster, M: int, H: int, with_ids: bool, graph: bool,
           strict: bool = True) -> "Rollout":
        """The model's cached rollout for these sizes, or a new one (which replaces it)."""
        p = model.readout.delta
        run = _ROLLOUTS.get(model)
        if run is None or run.busy or (run.M, run.H, run.with_ids, run.want, run.dtype, run.device) != (
                M, H, with_ids, (graph, strict), p.dtype, p.device):
            run = _ROLLOUTS[model] = cls(model, M, H, with_ids, graph, strict)
        return run

    def step(self) -> None:
        model = self.model_ref()
        spec, K = model.spec, model.spec.max_lag
        lagged = self.buf.index_select(1, self.pos - self.lags)  # (M, len(lags))
        phase = self.phase.index_select(1, self.k)[:, 0]  # (M,)
        growth = None
        if spec.growth:
            sums, counts = running_sums(self.buf.index_select(1, self.pos + self.window))  # (M, K + 1)
            growth = growth_inputs(lambda back: (sums[:, K - back], counts[:, K - back]), spec)
        x = model.with_embedding(lag_inputs(lagged, phase, spec, growth), self.ids)  # (M, I [+ D])
        state = (self.h, self.c) if self.c is not None else self.h
        top, state = model.rnn.step(x, state)  # (M, Hd)
        if self.c is not None:
            self.h.copy_(state[0])
            self.c.copy_(state[1])
        else:
            self.h.copy_(state)
        raw = model.readout(top)  # (M, P)
        u = self.u.index_select(0, self.k)[0]  # (M,)
        z = model.head.ppf(raw, u).to(self.dtype)  # Ex2: z = F^{-1}(u)
        self.buf.index_copy_(1, self.pos, z[:, None])
        self.pos.add_(1)
        self.k.add_(1)

    def __call__(self, buf, phase, u, state, ids) -> torch.Tensor:
        """The paths' buffer (M, K+H) after H steps from ``buf``'s first K columns."""
        self.busy = True
        try:
            return self._run(buf, phase, u, state, ids)
        finally:
            self.busy = False

    def _run(self, buf, phase, u, state, ids) -> torch.Tensor:
        model = self.model_ref()
        self.buf.copy_(buf)
        self.phase.copy_(phase)
        self.u.copy_(u)
        if self.c is not None:
            self.h.copy_(state[0])
            self.c.copy_(state[1])
        else:
            self.h.copy_(state)
        if self.ids is not None:
            self.ids.copy_(ids)
        self.pos.fill_(model.spec.max_lag)
        self.k.zero_()
        step = self.step
        if self.graph:
            key = tuple((q.data_ptr(), q._version) for q in model.parameters())
            if self.replay is None or key != self.key:
                from ..engines.decode import CudaGraph

                mutable = [t for t in (self.buf, self.h, self.c, self.pos, self.k) if t is not None]
                try:
                    self.replay, self.key = CudaGraph(self.step, mutable), key
                except RuntimeError as e:
                    if self.strict:
                        raise
                    warnings.warn(f"sample_paths: the CUDA graph capture failed ({e}); running the step "
                                  f"op by op (cuda_graph=False avoids the attempt, cuda_graph=True makes it "
                                  f"an error)", RuntimeWarning, stacklevel=3)
                    self.graph = False
            if self.graph:
                step = self.replay
        for _ in range(self.H):
            step()
        return self.buf.clone()


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




def members_of(model: "Forecaster | Ensemble") -> list["Forecaster"]:
    """The forecasters of a model: an ensemble's members, or the model itself."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


class Ensemble(nn.Module):
    """K forecasters trained from different seeds (a deep ensemble, Lakshminarayanan et al.
    2017), of one configuration or of several (the transforms of ``transform="mix"``; ``config``
    and ``spec`` are then the first member's). A forecast is the equal mixture of theirs: the N
    paths are split among the members, which is stratified sampling of the mixture, so the
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
