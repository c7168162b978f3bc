"""Per-step views and the whole-sequence GEMMs that every cell's arithmetic shares.

Buffers are time-major (T, B, ...). With variable lengths the batch is sorted
longest first and ``bs`` lists the live rows of each step, so a step's view is
the prefix ``[:b_t]`` of its rows.
"""

from __future__ import annotations

import torch

from ... import _ckernels as _ck
from .. import tuner
from ..gemm import addmm, mm  # torch's BLAS or oneDNN, the faster here (engines/gemm.py)
from .workspace import WORKSPACE

_C_SUFFIX = {torch.float32: "_f32", torch.float64: "_f64"}


def _transpose_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst (n, m)`` = ``src (m, n)`` transposed, both 2-D with unit column stride: the C
    routine (rnn_body.h, rf_transpose; 0.7 ms for 4 MiB where torch's strided copy of the
    sequence's permuted states takes 1.8), or torch's copy where the kernels are not there."""
    if src.dtype in _C_SUFFIX and src.device.type == "cpu" and not tuner.tracing(src) \
            and src.stride(1) == 1 and dst.stride(1) == 1 and _ck.available("rnn"):
        fn = getattr(_ck.load("rnn"), "rf_transpose" + _C_SUFFIX[src.dtype])
        fn(src.shape[0], src.shape[1], src.data_ptr(), src.stride(0), dst.data_ptr(), dst.stride(0))
    else:
        dst.copy_(src.t())


def steps(buf: torch.Tensor, bs):
    """Per-step views of a time-major buffer, restricted to the live rows ``[:b_t]``."""
    if bs is None:
        return buf.unbind(0)
    return [buf[t, :b] for t, b in enumerate(bs)]


def prev_steps(first: torch.Tensor, buf: torch.Tensor, bs):
    """Views of the previous step's value for each step: ``first`` at t=0, else ``buf[t-1]``."""
    if bs is None:
        return (first, *buf.unbind(0)[:-1])
    return [first[:bs[0]]] + [buf[t - 1, :b] for t, b in enumerate(bs) if t > 0]


def final(buf: torch.Tensor, lengths) -> torch.Tensor:
    """The value at each sequence's last real step, (B, H)."""
    if lengths is None:
        return buf[-1].clone()
    return buf[lengths - 1, torch.arange(buf.shape[1], device=buf.device)]


def project(x, w_ih, b_ih, out):
    """``out (T*B, G*H) = x W_ih^T + b``: the input projection of every step, one GEMM."""
    addmm(b_ih, x.reshape(-1, x.shape[-1]), w_ih.t(), out)  # (T*B, I) x (I, G*H)


def weight_grad(dG, first, seq):
    """``dW = sum_t dG_t^T h_{t-1}`` as one (G*H, T*B) x (T*B, H) GEMM (plus the t=0 rank-B term).

    ``first`` is the state entering step 0, ``seq`` (T, B, H) the states after each step.
    """
    GH, H = dG.shape[-1], seq.shape[-1]
    dw = dG[0].t() @ first  # (G*H, H)
    if dG.shape[0] > 1:
        dw += mm(dG[1:].reshape(-1, GH).t(), seq[:-1].reshape(-1, H))
    return dw


def weight_grads(dG, x, first, seq, bias: bool):
    """``(dW_ih, dW_hh, db or None)`` as one GEMM: ``dG^T [x_t, h_{t-1}, 1]`` over all T*B rows.

    One product of (G*H, T*B) x (T*B, I+H+1) instead of two products, their two operand
    copies and a column sum: the operand ``[x, h_prev, 1]`` is written once, transposed
    ((I+H+1, T*B), the layout the product reads without a further copy; engines/gemm.py)."""
    T, B, GH = dG.shape
    I, H = x.shape[-1], seq.shape[-1]
    Z = WORKSPACE.take((I + H + bias, T * B), dG)
    Z[:I].copy_(x.reshape(T * B, I).t())
    Z[I:I + H, :B].copy_(first.t())
    if T > 1:
        _transpose_into(Z[I:I + H, B:], seq[:-1].reshape((T - 1) * B, H))
    if bias:
        Z[-1].fill_(1)
    W = mm(dG.view(T * B, GH).t(), Z.t())  # (G*H, I+H+1)
    return (W[:, :I].contiguous(), W[:, I:I + H].contiguous(),
            W[:, -1].contiguous() if bias else None)


def one(like: torch.Tensor) -> torch.Tensor:
    """A 0-dim 1 of ``like``'s dtype: ``addcmul(1, a, a, value=-1)`` is ``1 - a^2`` in one pass."""
    return torch.ones((), dtype=like.dtype, device=like.device)
