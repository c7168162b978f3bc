"""The native engine: torch's own recurrent kernels over our named parameters.

The named parameters are laid out in torch.nn's order (per layer and direction
``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, the gates stacked) and
passed to ``torch._VF.lstm`` / ``gru`` / ``rnn_tanh``: cuDNN on GPU, oneDNN or
ATen on CPU. torch has no sigmoid RNN, so the notes' RNN cannot run here.

Packing without repacking (on CUDA by default; ``NativeEngine.cache_devices``):
the packed weights are views into one flat buffer, built by one ``torch.cat``
of every gate's parameter and kept per layer until a parameter changes (the
key is every parameter's ``data_ptr``, ``_version`` and ``requires_grad``, with
the grad and inference modes: an optimizer step, ``load_state_dict`` and
``.to()`` all change it). On CUDA the buffer has cuDNN's own layout (learned
once from ``torch._cudnn_rnn_flatten_weight``, as ``nn.LSTM.flatten_parameters``
does), so cuDNN reads it in place instead of copying the weights into a buffer
of its own on every call. The buffer is the output of an autograd Function
(``_Pack``) whose backward hands each named parameter its rows of the weight
gradients, as views: training works through the cached buffer, and the cache
is reused by every call between two optimizer steps (several forwards, eval,
generation of a batch). The named parameters, ``state_dict`` and checkpoints
are untouched. Elsewhere (CPU by default) the weights are concatenated per call,
differentiably, by ``interop.packed_weights``.
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..interop import packed_weights

_KERNELS = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn_tanh": torch._VF.rnn_tanh}
_DTYPES = {"cpu": (torch.float32, torch.float64),
           "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


class NativeEngine:
    name = "native"

    def why_not(self, layer, x, lengths):
        if layer.mode not in _KERNELS:
            return (f"torch's kernels have no {layer.mode} cell (only tanh and relu RNNs); "
                    f"use engine='reference' or 'auto'")
        ok = _DTYPES.get(x.device.type)
        if ok is None:
            return f"device type {x.device.type!r} is not supported by the native engine"
        if x.dtype not in ok:
            return f"torch's {x.device.type} kernels do not take {x.dtype}"
        return None

    #: device types on which the packed weights are cached (see the module docstring)
    cache_devices: tuple = ("cuda",)

    def forward(self, layer, x, h0, c0, lengths):
        if x.device.type in self.cache_devices and not _tracing():
            weights = packed(layer)
        else:
            weights = [w for cell in layer.cells for w in packed_weights(cell)]
        kernel = _KERNELS[layer.mode]
        hx = (h0, c0) if c0 is not None else h0
        args = (weights, layer.bias, layer.num_layers, layer.dropout, layer.training,
                layer.bidirectional)
        if not x.is_cuda:
            return self._run(kernel, x, hx, args, c0, lengths)
        with warnings.catch_warnings():
            # cuDNN warns that our per-call packed weights are not one flat buffer and
            # copies them into one: that copy is the price of engines owning no
            # parameters, paid knowingly, so the warning would only be noise.
            warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk")
            return self._run(kernel, x, hx, args, c0, lengths)

    @staticmethod
    def _run(kernel, x, hx, args, c0, lengths):
        if lengths is None:
            res = kernel(x, hx, *args, False)
        else:
            T = x.shape[0]
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
            order = packed.sorted_indices
            hx = tuple(h.index_select(1, order) for h in hx) if c0 is not None else hx.index_select(1, order)
            res = kernel(packed.data, packed.batch_sizes, hx, *args)
            out = PackedSequence(res[0], packed.batch_sizes, order, packed.unsorted_indices)
            out, _ = pad_packed_sequence(out, total_length=T)  # (T, B, D*H), original order
            back = packed.unsorted_indices
            res = (out, *(h.index_select(1, back) for h in res[1:]))
        out, h_n = res[0], res[1]
        c_n = res[2] if c0 is not None else None
        return out, h_n, c_n


def _tracing() -> bool:
    """Under tracing or compilation a cache would be read once and baked in."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return torch.jit.is_tracing() or bool(compiling and compiling())


#: per layer: (key, the packed weights, the parameters keyed); dropped with the layer
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: flat layouts by (mode, sizes, bias, dtype, device)
_LAYOUTS: dict = {}


def _weights_of(layer):
    """Per weight in torch's order: ``(shape, [named parameter or None for zeros, per gate])``."""
    out = []
    for cell in layer.cells:
        G, H = len(cell.GATES), cell.hidden_size
        I = getattr(cell, cell.GATES[0].input).shape[1]
        out.append(((G * H, I), [getattr(cell, g.input) for g in cell.GATES]))
        out.append(((G * H, H), [getattr(cell, g.recurrent) for g in cell.GATES]))
        if cell.bias:
            out.append(((G * H,), [getattr(cell, g.bias) for g in cell.GATES]))
            out.append(((G * H,), [getattr(cell, g.recurrent_bias) if g.recurrent_bias else None
                                   for g in cell.GATES]))
    return out


def _layout(layer, shapes, like: torch.Tensor):
    """``(offsets, total)``: where each packed weight starts in the flat buffer, and its length.

    cuDNN's layout on CUDA when cuDNN takes these tensors (it may align the
    weights); otherwise the weights one after another.
    """
    key = (layer.mode, tuple(shapes), layer.num_layers, layer.bidirectional, like.dtype, like.device)
    found = _LAYOUTS.get(key)
    if found is not None:
        return found
    offsets, total = [], 0
    for shape in shapes:
        offsets.append(total)
        total += int(torch.Size(shape).numel())
    if like.is_cuda and torch.backends.cudnn.is_acceptable(like) and torch._use_cudnn_rnn_flatten_weight():
        import torch.backends.cudnn.rnn as cudnn_rnn

        dummies = [torch.empty(shape, dtype=like.dtype, device=like.device) for shape in shapes]
        mode = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH"}[layer.mode]
        with torch.no_grad(), torch.cuda.device_of(like):
            # moves the dummies into one buffer of cuDNN's layout; their offsets are the layout
            flat = torch._cudnn_rnn_flatten_weight(dummies, 4 if layer.bias else 2, layer.input_size,
                                                   cudnn_rnn.get_cudnn_mode(mode), layer.hidden_size, 0,
                                                   layer.num_layers, False, layer.bidirectional)
        base = flat.untyped_storage().data_ptr()
        if all(d.untyped_storage().data_ptr() == base for d in dummies):
            offsets, total = [d.storage_offset() - flat.storage_offset() for d in dummies], flat.numel()
        # else: a torch that no longer moves them; the plain layout stays right, cuDNN then copies
    _LAYOUTS[key] = found = (offsets, total)
    return found


class _Pack(torch.autograd.Function):
    """Named parameters -> the packed weights, views into one flat buffer (see the module doc).

    ``forward(ctx, plan, *params)``: ``plan`` lists the flat buffer's pieces in order
    (a parameter's index or a zeros tensor) and each weight's (offset, shape);
    ``backward`` gives each parameter its rows of its weight's gradient (views, no copy).
    """

    @staticmethod
    def forward(ctx, plan, *params):
        pieces, views, rows = plan
        flat = torch.cat([params[p].reshape(-1) if isinstance(p, int) else p for p in pieces])
        ctx.rows = rows
        return tuple(flat.narrow(0, off, torch.Size(shape).numel()).view(shape) for off, shape in views)

    @staticmethod
    def backward(ctx, *grads):
        out = []
        for row in ctx.rows:  # parameter j: rows r0:r0+n of weight w
            g = None if row is None else grads[row[0]]
            out.append(None if g is None else g.narrow(0, row[1], row[2]))
        return (None, *out)


def _key(params) -> tuple:
    return (torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
            *((p.data_ptr(), p._version, p.requires_grad) for p in params))


def packed(layer) -> list:
    """The layer's weights in torch's layout, one flat buffer, rebuilt only when a parameter changed."""
    params = list(layer.parameters())
    key = _key(params)
    entry = _CACHE.get(layer)
    if entry is not None and entry[0] == key:
        return entry[1]
    spec = _weights_of(layer)
    shapes = [shape for shape, _ in spec]
    offsets, total = _layout(layer, shapes, params[0])
    index = {id(p): j for j, p in enumerate(params)}
    rows = [None] * len(params)
    pieces, at = [], 0
    opts = {"dtype": params[0].dtype, "device": params[0].device}
    for w in sorted(range(len(spec)), key=offsets.__getitem__):
        if offsets[w] > at:
            pieces.append(torch.zeros(offsets[w] - at, **opts))  # alignment of cuDNN's layout
        shape, gates = spec[w]
        n = shape[0] // len(gates)
        for g, p in enumerate(gates):
            if p is None:
                pieces.append(torch.zeros(n, **opts))  # bias_hh of a gate without a recurrent bias
            else:
                pieces.append(index[id(p)])
                rows[index[id(p)]] = (w, g * n, n)
        at = offsets[w] + torch.Size(shape).numel()
    if total > at:
        pieces.append(torch.zeros(total - at, **opts))
    plan = (pieces, [(off, shape) for off, shape in zip(offsets, shapes)], rows)
    weights = list(_Pack.apply(plan, *params))
    _CACHE[layer] = (key, weights, params)  # params held: their memory cannot pass to a new tensor
    return weights
