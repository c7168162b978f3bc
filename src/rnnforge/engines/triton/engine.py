"""The triton engine as registered: what it runs (``why_not``), the compute dtype, the layers.

Layers, directions, the length sort, the reverse direction and dropout are the fused
engine's ``run_layers``; each layer-direction runs ``TritonRecurrence``.
"""

from __future__ import annotations

import os

import torch

from ..fused.engine import run_layers
from ..fused.ops import tracing
from .function import DEFAULT_SMS, SMEM_SM90, TritonRecurrence, device_limits, max_width

_MODES = ("lstm", "gru", "rnn_tanh", "rnn_sigmoid")
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_missing() -> str | None:
    """Why triton cannot be imported, or None."""
    try:
        import triton  # noqa: F401  (whether it imports)
    except ImportError as e:
        return f"triton is not installed ({e}); pip install 'rnnforge[gpu]'"
    return None


def load_kernels():
    """The kernels module (imports triton; compiled, or interpreted under TRITON_INTERPRET=1
    as it was when the module was first imported)."""
    from . import kernels

    return kernels


def run_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the kernels run in: autocast's for the tensors' device where it is on
    (CUDA, and CPU under the interpreter alike), else the input's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _other(mode: str, device_type: str) -> str:
    """The engine that runs what this one refuses, for the reasons."""
    if device_type == "cpu":
        return "engine='fused'"
    return "engine='reference'" if mode == "rnn_sigmoid" else "engine='native'"


class TritonEngine:
    name = "triton"

    def why_not(self, layer, x, lengths):
        mode, dev = layer.mode, x.device.type
        if mode not in _MODES:
            return f"no triton kernels for the {mode} cell"
        if tracing(x):
            return ("the triton engine's kernels launch on real tensors and cannot be traced "
                    "(torch.compile, torch.export, fake tensors); engine='fused' traces on CPU, "
                    "engine='native' on CUDA")
        missing = triton_missing()
        if missing is not None:
            return f"{missing}; {_other(mode, dev)} runs it without triton"
        for name, p in layer.named_parameters():
            if p.device != x.device:
                return (f"mixed devices: parameter {name} is on {p.device} but the input is on "
                        f"{x.device}; no engine runs that: move the layer with .to({str(x.device)!r})")
        if dev == "cpu":
            if os.environ.get("TRITON_INTERPRET") != "1":
                return ("the triton engine runs CUDA tensors; CPU tensors only under Triton's "
                        "interpreter (TRITON_INTERPRET=1 set before the engine first runs), "
                        "for tests; engine='fused' runs it on CPU")
            if not load_kernels().INTERPRETED:
                return ("TRITON_INTERPRET=1 was set after rnnforge's triton kernels were "
                        "compiled for the GPU; set it before the first triton call to run CPU "
                        "tensors; engine='fused' runs it on CPU")
        elif dev != "cuda":
            return f"the triton engine runs CUDA tensors, got {dev}; {_other(mode, dev)} runs it"
        dtype = run_dtype(x)
        if dtype not in _DTYPES:
            return (f"the triton engine takes float32, bfloat16 or float16, got {dtype}; "
                    f"{_other(mode, dev)} runs {dtype}")
        if dev == "cuda" and not load_kernels().INTERPRETED:
            sms, smem = device_limits(x.device)
        else:  # the interpreter refuses what an H100 or H200 would
            sms, smem = DEFAULT_SMS, SMEM_SM90
        limit = max_width(mode, sms, smem)
        if layer.hidden_size > limit:
            return (f"hidden_size {layer.hidden_size} is past the triton engine's limit of {limit} "
                    f"for the {mode} cell on a GPU with {sms} SMs and {smem // 1024} KiB of shared "
                    f"memory per block (its persistent kernels keep each program's slice of the "
                    f"recurrent weights on chip); {_other(mode, dev)} runs it")
        return None

    def forward(self, layer, x, h0, c0, lengths):
        dtype = run_dtype(x)
        if dtype != x.dtype:  # autocast: inputs, states and (below) weights in its dtype
            x, h0 = x.to(dtype), h0.to(dtype)
            c0 = c0.to(dtype) if c0 is not None else None
        with torch.autocast(x.device.type, enabled=False):  # the dtypes are chosen here
            return run_layers(layer, x, h0, c0, lengths, _recurrence)


def _recurrence(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths):
    dt = x.dtype
    # differentiable casts: autograd brings the gradients back to the parameters' dtype
    w_ih, w_hh = w_ih.to(dt), w_hh.to(dt)
    b_ih = b_ih.to(dt) if b_ih is not None else None
    b_hh = b_hh.to(dt) if b_hh is not None else None
    return TritonRecurrence.apply(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths)
