"""Deploying trained models: torch.export programs (``.pt2``) and ONNX files.

The fused engine's loops over time are registered operators
(``rnnforge::recurrence``, ``engines/fused/ops.py``), so torch.export traces a
layer-direction as one node that runs any sequence length and batch size, and
the saved program calls the same compiled loops as eager. Loading a ``.pt2``
needs ``import rnnforge`` (which registers the operator); an ONNX file needs
only onnxruntime: ``onnx_translations()`` turns each ``rnnforge::recurrence``
node into one ONNX ``LSTM``, ``GRU`` or ``RNN`` operator (the notes' sigmoid
RNN as ``RNN`` with ``activations=["Sigmoid"]``).

Library calls:

* :func:`export_program` and :func:`export_onnx`: any module holding rnnforge
  layers, example inputs and torch.export ``dynamic_shapes``;
* :func:`stateful` wraps a character model or a forecaster so that its
  recurrent state is an input and an output (one step at a time works);
* :func:`export_run`: a checkpoint or run folder of either application to a
  file, with batch and time dynamic (what ``rnnforge export`` calls).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import OptionError, UserError
from .layers import RecurrentLayer

FORMATS = ("pt2", "onnx")
#: the engines ``export_run`` takes; torch.export unrolls the others' loops over time
EXPORT_ENGINES = ("fused", "auto")

# ONNX's gate orders, as indices into ours (torch.nn's): LSTM i f g o -> i o f c; GRU r z n -> z r h
_ONNX_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,), "rnn_sigmoid": (0,)}
_INT32 = 6  # onnx.TensorProto.INT32


def _onnx_recurrence(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, lengths):
    """ONNX for one ``rnnforge::recurrence`` node: the ONNX LSTM / GRU / RNN operator, one direction.

    Only the outputs a traced forward reads are made (out, h_n, and c_n for the
    LSTM); the saved activations are for training. The GRU runs with
    ``linear_before_reset=1``: the reset gate multiplies the recurrent product
    (plus its candidate bias), as the notes, torch.nn and cuDNN have it.
    """
    from onnxscript import opset18 as op

    H = w_hh.shape[1]
    order = _ONNX_ORDER[mode]
    rows = op.Constant(value_ints=[g * H + k for g in order for k in range(H)])

    def onnx_order(w):  # one Gather over constant rows: folded into the weights when exported
        return op.Gather(w, rows, axis=0) if len(order) > 1 else w

    W, R = op.Unsqueeze(onnx_order(w_ih), [0]), op.Unsqueeze(onnx_order(w_hh), [0])
    B = None
    if b_ih is not None:
        wb = onnx_order(b_ih)
        zeros = op.Mul(wb, op.Constant(value_float=0.0))
        if b_hh is not None:  # the GRU's b_γ: ONNX's Rbh, the other recurrent biases zero
            rb = op.Concat(op.Slice(zeros, [0], [2 * H]), b_hh, axis=0)
        else:
            rb = zeros
        B = op.Unsqueeze(op.Concat(wb, rb, axis=0), [0])
    seq = op.Cast(lengths, to=_INT32) if lengths is not None else None
    h = op.Unsqueeze(h0, [0])
    if mode == "lstm":
        Y, Y_h, Y_c = op.LSTM(x, W, R, B, seq, h, op.Unsqueeze(c0, [0]), hidden_size=H)
        return op.Squeeze(Y, [1]), op.Squeeze(Y_h, [0]), op.Squeeze(Y_c, [0])
    if mode == "gru":
        Y, Y_h = op.GRU(x, W, R, B, seq, h, hidden_size=H, linear_before_reset=1)
    else:
        act = "Sigmoid" if mode == "rnn_sigmoid" else "Tanh"
        Y, Y_h = op.RNN(x, W, R, B, seq, h, hidden_size=H, activations=[act])
    return op.Squeeze(Y, [1]), op.Squeeze(Y_h, [0])


def onnx_translations() -> dict:
    """The ``custom_translation_table`` for ``torch.onnx.export`` of modules with rnnforge layers."""
    from .engines.fused import ops  # noqa: F401  (registers the operator)

    return {torch.ops.rnnforge.recurrence.default: _onnx_recurrence}


def export_program(module: nn.Module, args: tuple, *, dynamic_shapes=None, kwargs=None
                   ) -> torch.export.ExportedProgram:
    """``torch.export.export(module, args)``; a layer whose engine cannot run the requested
    dynamic sizes raises a UserError that names the engine to use."""
    return torch.export.export(module, tuple(args), kwargs=kwargs, dynamic_shapes=dynamic_shapes)


def export_onnx(module: nn.Module, args: tuple, path=None, *, dynamic_shapes=None,
                input_names=None, output_names=None):
    """The module as an ONNX program (``torch.onnx.ONNXProgram``), saved to ``path`` if given.

    Traced with :func:`export_program`, then translated with ``onnx_translations()``;
    needs the ``rnnforge[onnx]`` extra (onnx, onnxscript; onnxruntime to run it)."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install 'rnnforge[onnx]'") from None
    program = export_program(module, args, dynamic_shapes=dynamic_shapes)
    onnx_program = torch.onnx.export(program, tuple(args), dynamo=True,
                                     custom_translation_table=onnx_translations(),
                                     input_names=input_names, output_names=output_names,
                                     verbose=False)
    if path is not None:
        onnx_program.save(str(path), external_data=False)
    return onnx_program


# -- the applications' networks with their state as inputs and outputs ---------------------------
class Stateful(nn.Module):
    """``(inputs, h_0[, c_0]) -> (outputs, h_n[, c_n])`` for a character model or a forecaster.

    Character model: ``ids (B, T)`` int64 -> ``logits (B, T, V)``. Forecaster:
    ``x (B, T, I)`` -> the head's raw parameters ``(B, T, P)``; a forecaster with a
    series embedding also takes ``series (B,)`` int64, each row's embedding row (the
    checkpoint's ``series_names`` order), after ``x``. States are (L, B, H); zeros start
    a sequence, and feeding back the returned state with T = 1 runs one step at a time.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.lstm = net.rnn.mode == "lstm"

    def forward(self, inputs, h0, c0=None):
        net = self.net
        x = net.embedding(inputs) if hasattr(net, "embedding") else inputs
        return self._run(x, h0, c0)

    def _run(self, x, h0, c0):
        net = self.net
        out, state = net.rnn(x, (h0, c0) if self.lstm else h0)
        y = net.readout(out)
        return (y, *state) if self.lstm else (y, state)


class StatefulSeries(Stateful):
    """A forecaster with a series embedding: ``(x, series, h_0[, c_0])``."""

    def forward(self, x, series, h0, c0=None):
        return self._run(self.net.with_embedding(x, series), h0, c0)


def stateful(net: nn.Module, batch: int = 2, steps: int = 3):
    """``(Stateful(net), example args, dynamic_shapes, input names, output names)``: batch and time dynamic."""
    by_series = getattr(net, "series_embed", None) is not None
    wrapped = (StatefulSeries if by_series else Stateful)(net).eval()
    rnn = net.rnn
    w = rnn._param
    state = torch.zeros(rnn.num_layers * rnn.num_directions, batch, rnn.hidden_size, dtype=w.dtype)
    if hasattr(net, "embedding"):
        inputs = torch.zeros(batch, steps, dtype=torch.long)
        names = ["ids", "h0"]
        first = "logits"
    else:
        D = net.series_embed.embedding_dim if by_series else 0
        inputs = torch.zeros(batch, steps, rnn.input_size - D, dtype=w.dtype)
        names = ["x", "series", "h0"] if by_series else ["x", "h0"]
        first = "params"
    B, T = torch.export.Dim("batch"), torch.export.Dim("time")
    args, dims = [inputs, state], [{0: B, 1: T}, {1: B}]
    if by_series:
        args.insert(1, torch.zeros(batch, dtype=torch.long))
        dims.insert(1, {0: B})
    outs = [first, "h_n"]
    if wrapped.lstm:
        args.append(state.clone())
        dims.append({1: B})
        names.append("c0")
        outs.append("c_n")
    return wrapped, tuple(args), tuple(dims), names, outs


def load_network(path) -> tuple[nn.Module, str]:
    """The network of a character-model or forecaster checkpoint (file or run folder) and its kind."""
    from . import checkpoint
    from .charlm import checkpoint as charlm_ckpt
    from .forecast import checkpoint as forecast_ckpt

    path = Path(path)
    if path.is_dir():
        for name in (charlm_ckpt.BEST, charlm_ckpt.LAST, forecast_ckpt.FILENAME):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise UserError(f"{path} holds no checkpoint ({charlm_ckpt.BEST}, {charlm_ckpt.LAST} or "
                            f"{forecast_ckpt.FILENAME}); train into it first")
    elif not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    kind = checkpoint.read_meta(path).get("kind")
    if kind == charlm_ckpt.KIND:
        return charlm_ckpt.load_model(path)[0], "character model"
    if kind == forecast_ckpt.KIND:
        model = forecast_ckpt.load(path)[0]
        if not hasattr(model, "rnn"):
            raise UserError(f"{path} holds an ensemble of {len(model.members)} forecasters; export "
                            f"exports one network: train without an ensemble to export it")
        return model, "forecaster"
    raise UserError(f"{path} is a checkpoint of kind {kind!r}; export takes a character model "
                    f"or a forecaster")


def export_format(format: str | None, out=None) -> str:
    """The format an export writes: ``format`` (one of FORMATS), or the suffix of ``out``
    (``.onnx``, ``.pt2``), or pt2; a format that contradicts the suffix is refused rather than
    written under the wrong name."""
    suffix = Path(out).suffix.lower().lstrip(".") if out is not None else ""
    if format is None:
        format = suffix if suffix in FORMATS else "pt2"
    if format not in FORMATS:
        raise OptionError("format", f"{format!r} is unknown; choose one of {', '.join(FORMATS)}")
    if suffix in FORMATS and suffix != format:
        raise OptionError("format", f"is {format}, but --out {out} names a .{suffix} file; name the file "
                                    f".{format}, or leave --format out to write {suffix}")
    return format


def export_run(path, format: str | None = None, out=None, *, force: bool = False, engine: str = "fused"
               ) -> tuple[Path, str]:
    """Export the network of a checkpoint or run folder to ``out`` (default: beside the
    checkpoint, ``model.pt2`` / ``model.onnx``); returns the file written and the network's kind.

    ``format``: see :func:`export_format`.

    ``engine`` is the engine the program runs: fused (the default: its loops are one
    operator over any length) or auto (fused wherever auto runs it at the example).
    """
    from .checkpoint import atomic_write

    format = export_format(format, out)
    if engine not in EXPORT_ENGINES:
        why = ("steps the cells in a Python loop" if engine == "reference" else
               "calls torch's kernels, which torch.export traces step by step" if engine == "native"
               else "is not an engine")
        raise OptionError("engine", f"{engine!r} cannot be exported: it {why}, which would fix the "
                                    f"program to one sequence length; use fused")
    net, kind = load_network(path)
    if out is None:
        base = Path(path) if Path(path).is_dir() else Path(path).parent
        out = base / f"model.{format}"
    out = Path(out)
    if out.is_dir():
        raise OptionError("out", f"{out} is a folder; give a file name")
    if out.exists() and not force:
        raise OptionError("force", f"is needed to replace {out}, which exists")
    net.rnn.engine = engine
    wrapped, args, dims, names, outs = stateful(net)
    if format == "pt2":
        program = export_program(wrapped, args, dynamic_shapes=dims)
        def write(tmp):
            with open(tmp, "wb") as f:  # a buffer: torch.export.save wants a path to end in .pt2
                torch.export.save(program, f)

        atomic_write(out, write)
    else:
        onnx_program = export_onnx(wrapped, args, dynamic_shapes=dims, input_names=names,
                                   output_names=outs)
        atomic_write(out, lambda tmp: onnx_program.save(tmp, external_data=False))
    return out, kind
