"""The native engine: torch's own recurrent kernels over our named parameters.

The named parameters are concatenated into torch.nn's layout on every call
(differentiably, so gradients reach them; on CUDA into one flat buffer, cuDNN's
own layout, so that it need not copy them again) and passed to ``torch._VF.lstm`` /
``gru`` / ``rnn_tanh``: cuDNN on GPU, oneDNN or ATen on CPU. torch has no
sigmoid RNN, so the notes' RNN cannot run here.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..interop import packed_weights

_KERNELS = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn_tanh": torch._VF.rnn_tanh}
_DTYPES = {"cpu": (torch.float32, torch.float64),
           "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def flat_weights(layer) -> list[torch.Tensor]:
    """Every cell's ``[weight_ih, weight_hh(, bias_ih, bias_hh)]`` in torch's layout, as views of
    one buffer built by a single concatenation of the named parameters (differentiable).

    This is the order of cuDNN's own weight buffer, so cuDNN uses the views in place rather
    than copying per-layer tensors into a buffer of its own on every call.
    """
    parts, shapes = [], []
    for cell in layer.cells:
        gates, GH = cell.GATES, len(cell.GATES) * cell.hidden_size
        groups = [[getattr(cell, g.input) for g in gates], [getattr(cell, g.recurrent) for g in gates]]
        shapes += [(GH, cell.input_size), (GH, cell.hidden_size)]
        if cell.bias:
            zeros = getattr(cell, gates[0].bias).new_zeros(cell.hidden_size)
            groups += [[getattr(cell, g.bias) for g in gates],
                       [getattr(cell, g.recurrent_bias) if g.recurrent_bias else zeros for g in gates]]
            shapes += [(GH,), (GH,)]
        parts += [t.reshape(-1) for group in groups for t in group]
    flat = torch.cat(parts)
    sizes = [math.prod(s) for s in shapes]
    return [v.view(s) for v, s in zip(flat.split(sizes), shapes)]


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

    def forward(self, layer, x, h0, c0, lengths):
        kernel = _KERNELS[layer.mode]
        hx = (h0, c0) if c0 is not None else h0
        if not x.is_cuda:
            weights = [w for cell in layer.cells for w in packed_weights(cell)]
            args = (weights, layer.bias, layer.num_layers, layer.dropout, layer.training, layer.bidirectional)
            return self._run(kernel, x, hx, args, c0, lengths)
        args = (flat_weights(layer), layer.bias, layer.num_layers, layer.dropout, layer.training,
                layer.bidirectional)
        with warnings.catch_warnings():
            # should cuDNN's layout ever differ from the flat one (padding), it copies the weights
            # into its own buffer and warns on every call; the result is the same, so stay quiet
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
