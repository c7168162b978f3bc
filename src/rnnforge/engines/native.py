"""The native engine: torch's own recurrent kernels over our named parameters.

The named parameters are concatenated into torch.nn's layout on every call
(differentiably, so gradients reach them) and passed to ``torch._VF.lstm`` /
``gru`` / ``rnn_tanh``: cuDNN on GPU, oneDNN or ATen on CPU. torch has no
sigmoid RNN, so the notes' RNN cannot run here.
"""

from __future__ import annotations

import warnings

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

    def forward(self, layer, x, h0, c0, lengths):
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
