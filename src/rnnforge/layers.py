"""Multi-layer, bidirectional recurrent layers over the notes' cells.

``rf.RNN``, ``rf.GRU`` and ``rf.LSTM`` take the arguments and return the shapes
of torch.nn.RNN / GRU / LSTM. Shape symbols, used in every comment below:
T steps, B batch, I input size, H hidden size, L layers, D directions (2 when
bidirectional, else 1).

    x: (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched,
       or a PackedSequence
    hx: (D*L, B, H) -- the LSTM takes (h_0, c_0); batch_first never applies to it
    out: (T, B, D*H) like x (a PackedSequence in, a PackedSequence out)
    h_n: (D*L, B, H), row layer*D + direction, the state at each sequence's last real step

The parameters live in the cells, one per layer and direction
(``layer.cell(l, d)``); an engine only computes. Which engine runs is chosen by
``engine=`` ("auto" by default) and reported in ``engine_used``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import optimization_hint
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import engines
from .cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from .cells._base import autocast_cast
from .interop import TORCH_MODULES, load_torch_weights, packed_weights, torch_suffix


class RecurrentLayer(nn.Module):
    """Shared machinery of RNN, GRU and LSTM; use one of those."""

    CELL: type[RecurrentCell]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = False,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 engine: str = "auto", device=None, dtype=None, **cell_kwargs) -> None:
        super().__init__()
        if not (isinstance(num_layers, int) and num_layers >= 1):
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        engines.check_engine_name(engine)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.engine = engine
        self.engine_used: str | None = None
        D = self.num_directions
        self.cells = nn.ModuleList(
            self.CELL(input_size if layer == 0 else D * hidden_size, hidden_size, bias,
                      device=device, dtype=dtype, **cell_kwargs)
            for layer in range(num_layers) for _ in range(D))

    # -- structure ---------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def mode(self) -> str:
        """'lstm', 'gru', 'rnn_tanh' or 'rnn_sigmoid': what the engines dispatch on."""
        return self.CELL.__name__[:-4].lower()

    def cell(self, layer: int, direction: int = 0) -> RecurrentCell:
        """The cell holding the named parameters of ``layer`` and ``direction``."""
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} out of range for {self.num_layers} layer(s)")
        if not 0 <= direction < self.num_directions:
            raise IndexError(f"direction {direction} out of range; the module has "
                             f"{self.num_directions} direction(s)")
        return self.cells[layer * self.num_directions + direction]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + f", engine={self.engine!r}"

    @property
    def _param(self) -> torch.Tensor:
        """A parameter of the first cell: the dtype and device the input must match."""
        return getattr(self.cells[0], self.CELL.GATES[0].input)

    # -- forward -----------------------------------------------------------------
    def forward(self, x, hx=None, lengths=None):
        name = type(self).__name__
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError(f"{name}: pass lengths or a PackedSequence, not both")
            sorted_indices = x.sorted_indices
            x, lengths = pad_packed_sequence(x, batch_first=False)  # (T, B, I), original order
            batched, time_major = True, True
        else:
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name}: input must be a Tensor or PackedSequence, got {type(x).__name__}")
            if x.dim() not in (2, 3):
                raise ValueError(f"{name}: expected input of rank 3 ((T, B, I), or (B, T, I) with "
                                 f"batch_first) or rank 2 ((T, I), unbatched), got shape {tuple(x.shape)}")
            batched, time_major = x.dim() == 3, not self.batch_first
            if not batched:
                x = x.unsqueeze(1)  # (T, 1, I)
            elif not time_major:
                x = x.transpose(0, 1)  # (T, B, I)
        T, B, I = x.shape
        w = self._param
        if I != self.input_size:
            raise ValueError(f"{name}: input has {I} features but input_size is {self.input_size}")
        x = autocast_cast(x, w)
        if x.dtype != w.dtype or x.device != w.device:
            raise ValueError(f"{name}: input is {x.dtype} on {x.device} but the parameters are "
                             f"{w.dtype} on {w.device}; move one with .to()")
        if T == 0 or B == 0:
            raise ValueError(f"{name}: input has an empty time or batch dimension, shape {tuple(x.shape)}")

        h0, c0 = self._initial_state(hx, B, batched, x)
        if lengths is not None:
            if not batched:
                raise ValueError(f"{name}: lengths needs a batched input; unbatched input is one "
                                 f"sequence of length T")
            lengths = _check_lengths(lengths, B, T, x.device, name)

        engine = engines.select(self, _at_example_sizes(x), lengths)
        if engine.name in _STEPPED and not isinstance(T, int) and not torch.compiler.is_dynamo_compiling():
            from .errors import UserError

            raise UserError(
                f"{name}: engine {engine.name!r}{' (chosen by auto)' if self.engine == 'auto' else ''} "
                f"cannot be exported with a dynamic sequence length: its loop over time is traced "
                f"step by step, which fixes the program to the example's {optimization_hint(T)} steps; "
                f"use engine='fused', whose loop is one operator that runs any length")
        self.engine_used = engine.name
        out, h_n, c_n = engine.forward(self, x, h0, c0, lengths)  # (T,B,D*H), (D*L,B,H) x2

        if packed:
            out = _repack(out, lengths, sorted_indices)
        elif not batched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        elif not time_major:
            out = out.transpose(0, 1)
        return out, ((h_n, c_n) if self.CELL.STATES == 2 else h_n)

    def _initial_state(self, hx, B: int, batched: bool, x: torch.Tensor):
        """Zeros or the checked user state, each (D*L, B, H)."""
        name = type(self).__name__
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        if hx is None:
            z = x.new_zeros(shape)
            return z, (x.new_zeros(shape) if self.CELL.STATES == 2 else None)
        if self.CELL.STATES == 2:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise ValueError(f"{name}: hx must be a tuple (h_0, c_0)")
            parts = list(hx)
        else:
            if not isinstance(hx, torch.Tensor):
                raise ValueError(f"{name}: hx must be a tensor of shape {shape}")
            parts = [hx]
        checked = []
        want = shape if batched else (shape[0], shape[2])
        for label, h in zip(("h_0", "c_0"), parts):
            if tuple(h.shape) != want:
                raise ValueError(f"{name}: {label} must have shape {want} (D*num_layers, B, H), "
                                 f"got {tuple(h.shape)}")
            h = autocast_cast(h, x)
            if h.dtype != x.dtype or h.device != x.device:
                raise ValueError(f"{name}: {label} is {h.dtype} on {h.device} but the input is "
                                 f"{x.dtype} on {x.device}")
            checked.append(h if batched else h.unsqueeze(1))
        return checked[0], (checked[1] if len(checked) == 2 else None)

    # -- one step at a time (generation) ------------------------------------------
    @torch.no_grad()
    def step(self, x: torch.Tensor, state=None):
        """Advance every layer by one time step, for generation (no autograd).

        ``x`` (B, I); ``state`` as ``hx`` of ``forward`` ((L, B, H), or a tuple
        of two for the LSTM) or None for zeros. Returns ``(z, state)`` with ``z``
        (B, H) the top layer's output. Unidirectional layers only. Dropout is
        not applied (generation runs in eval mode).
        """
        if self.bidirectional:
            raise ValueError(f"{type(self).__name__}.step: a bidirectional layer cannot be stepped "
                             f"forward in time; generation needs bidirectional=False")
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"{type(self).__name__}.step: expected x of shape (B, {self.input_size}), "
                             f"got {tuple(x.shape)}")
        h0, c0 = self._initial_state(state, x.shape[0], True, x)
        return engines.decode_step(self, x, h0, c0)

    # -- interop -----------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.Module, engine: str = "auto"):
        """An rnnforge layer computing exactly what the torch.nn ``module`` computes."""
        torch_cls = TORCH_MODULES[cls.__name__]
        if not isinstance(module, torch_cls):
            raise TypeError(f"{cls.__name__}.from_torch expects torch.nn.{cls.__name__}, "
                            f"got {type(module).__name__}")
        if getattr(module, "proj_size", 0):
            raise ValueError("LSTM with proj_size > 0 has no counterpart in the notes; "
                             "use proj_size=0")
        kwargs = {}
        if cls is RNN:
            if module.nonlinearity != "tanh":
                raise ValueError(f"torch RNN nonlinearity {module.nonlinearity!r} is not supported; "
                                 f"rnnforge's RNN offers 'sigmoid' and 'tanh'")
            kwargs["nonlinearity"] = "tanh"
        w = module.weight_ih_l0
        new = cls(module.input_size, module.hidden_size, module.num_layers, module.bias,
                  module.batch_first, module.dropout, module.bidirectional, engine=engine,
                  device=w.device, dtype=w.dtype, **kwargs)
        for layer in range(new.num_layers):
            for direction in range(new.num_directions):
                sfx = torch_suffix(layer, direction)
                tensors = [getattr(module, n + sfx) for n in ("weight_ih", "weight_hh")]
                if module.bias:
                    tensors += [getattr(module, n + sfx) for n in ("bias_ih", "bias_hh")]
                load_torch_weights(new.cell(layer, direction), *tensors)
        return new

    def to_torch(self) -> nn.Module:
        """A torch.nn module computing exactly what this layer computes."""
        kwargs = {}
        if self.mode == "rnn_sigmoid":
            raise ValueError("torch.nn.RNN has no sigmoid nonlinearity, so the notes' RNN cannot be "
                             "converted; build the layer with nonlinearity='tanh' to convert")
        if self.mode == "rnn_tanh":
            kwargs["nonlinearity"] = "tanh"
        w = self._param
        module = TORCH_MODULES[type(self).__name__](
            self.input_size, self.hidden_size, self.num_layers, bias=self.bias,
            batch_first=self.batch_first, dropout=self.dropout, bidirectional=self.bidirectional,
            device=w.device, dtype=w.dtype, **kwargs)
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        with torch.no_grad():
            for layer in range(self.num_layers):
                for direction in range(self.num_directions):
                    sfx = torch_suffix(layer, direction)
                    for n, t in zip(names, packed_weights(self.cell(layer, direction))):
                        getattr(module, n + sfx).copy_(t)
        return module


class RNN(RecurrentLayer):
    """Layers of the notes' RNN cell, ``z = σ(alpha x + gamma z_prev)``.

    ``nonlinearity="sigmoid"`` (default, the notes) or ``"tanh"`` (torch.nn.RNN).
    Returns ``out, h_n``.
    """

    CELL = RNNCell

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = False,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 nonlinearity: str = "sigmoid", engine: str = "auto", device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, engine, device, dtype, nonlinearity=nonlinearity)
        self.nonlinearity = nonlinearity

    @property
    def mode(self) -> str:
        return f"rnn_{self.nonlinearity}"


class GRU(RecurrentLayer):
    """Layers of the notes' GRU cell. Returns ``out, h_n``."""

    CELL = GRUCell


class LSTM(RecurrentLayer):
    """Layers of the notes' LSTM cell. Returns ``out, (h_n, c_n)``."""

    CELL = LSTMCell


#: the notes' cells by command-line name: the sigmoid RNN, the tanh RNN, GRU, LSTM
CELL_NAMES = ("rnn", "rnn-tanh", "gru", "lstm")


def make_layer(cell: str, input_size: int, hidden_size: int, **kwargs) -> RecurrentLayer:
    """``RNN`` / ``GRU`` / ``LSTM`` by command-line name (``CELL_NAMES``).

    ``kwargs`` go to the layer (num_layers, bias, batch_first, dropout, engine, ...).
    """
    from .errors import UserError

    if cell == "lstm":
        return LSTM(input_size, hidden_size, **kwargs)
    if cell == "gru":
        return GRU(input_size, hidden_size, **kwargs)
    if cell in ("rnn", "rnn-tanh"):
        return RNN(input_size, hidden_size, nonlinearity="sigmoid" if cell == "rnn" else "tanh", **kwargs)
    raise UserError(f"unknown cell {cell!r}; choose one of {', '.join(CELL_NAMES)}")


#: engines whose loop over time torch.export unrolls (a Python loop; torch's CPU kernels decompose)
_STEPPED = ("reference", "native")


def _at_example_sizes(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself, or while torch.export traces it with symbolic sizes (``Dim``) a real
    stand-in at the example input's sizes (one element, expanded; same dtype, device and
    grad flag), for the engine choice alone.

    Why: ``engine="auto"`` picks by batch size and width, and a comparison with a symbolic
    batch size would become a guard that narrows the exported program to the batch sizes
    on the example's side of the threshold (torch.export refuses it). The chosen engine
    runs every size. Under torch.compile (dynamo) the guard is right -- another batch
    size recompiles -- so there ``x`` is used as it is.
    """
    if torch.compiler.is_dynamo_compiling() or all(isinstance(n, int) for n in x.shape):
        return x
    from torch.utils._python_dispatch import _disable_current_modes

    shape = [optimization_hint(n) for n in x.shape]
    with _disable_current_modes():  # a real tensor, outside the trace's fake and proxy modes
        one = torch.empty((), dtype=x.dtype, device=x.device).requires_grad_(x.requires_grad)
        return one.expand(shape)


def _check_lengths(lengths, B: int, T: int, device, name: str) -> torch.Tensor:
    """A LongTensor (B,) on ``device`` with every value in [1, T], or a clear error."""
    if isinstance(lengths, torch.Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
            raise ValueError(f"{name}: lengths must hold integers, got dtype {lengths.dtype}")
        t = lengths
    elif isinstance(lengths, Sequence):
        t = torch.as_tensor(list(lengths))
        if t.dtype.is_floating_point:
            raise ValueError(f"{name}: lengths must hold integers")
    else:
        raise ValueError(f"{name}: lengths must be a 1-D tensor or list of ints, got {type(lengths).__name__}")
    if t.dim() != 1 or t.numel() != B:
        raise ValueError(f"{name}: lengths must be 1-D with one entry per sequence ({B}), "
                         f"got shape {tuple(t.shape)}")
    lo, hi = int(t.min()), int(t.max())
    if lo < 1:
        raise ValueError(f"{name}: every length must be at least 1, got {lo}")
    if hi > T:
        raise ValueError(f"{name}: a length of {hi} exceeds the input's {T} steps")
    return t.to(device=device, dtype=torch.long)


def _repack(out: torch.Tensor, lengths: torch.Tensor, sorted_indices) -> PackedSequence:
    """Pack a padded (T, B, F) output in the batch order of the input PackedSequence."""
    if sorted_indices is None:  # the input was packed with enforce_sorted=True
        return pack_padded_sequence(out, lengths.cpu(), enforce_sorted=True)
    packed = pack_padded_sequence(out.index_select(1, sorted_indices),
                                  lengths.index_select(0, sorted_indices).cpu(), enforce_sorted=True)
    unsorted = torch.empty_like(sorted_indices)
    unsorted[sorted_indices] = torch.arange(sorted_indices.numel(), device=sorted_indices.device)
    return PackedSequence(packed.data, packed.batch_sizes, sorted_indices, unsorted)
