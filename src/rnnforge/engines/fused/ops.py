"""The fused engine's loops as registered torch operators, for tracing.

Eager calls run ``Recurrence`` (function.py). A traced call -- torch.export,
torch.compile, FakeTensor or make_fx tracing -- cannot: the C loops read raw
data pointers, which a fake tensor does not have, and a Python autograd
Function is a graph break for dynamo. There the engine calls these operators
instead, which run the same arithmetic (``run_forward`` / ``run_backward``)
on real tensors and have a fake implementation (shapes only) and an autograd
formula registered, so the traced graph holds them as single nodes:

``rnnforge::recurrence(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, lengths)``
    -> ``(out, h_n, c_n, a0, a1, a2)``: as ``Recurrence`` (``c_n`` empty but for
    the LSTM), plus the activations the backward reads (``ACTIVATIONS``; empty
    tensors where the cell has fewer). ``lengths`` (B,), sorted longest first,
    or None: the live rows of each step are derived from it here.
``rnnforge::recurrence_backward(...)``
    -> ``(dx, dw_ih, db_ih, dh0, dc0, dw_hh, db_hh)``, empty where not asked or not there.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .function import ACTIVATIONS, run_backward, run_forward

def tracing(x: Tensor) -> bool:
    """Whether ``x`` flows through a trace (dynamo, torch.export, FakeTensor, make_fx)
    rather than an eager call: then the engine must call the registered operators."""
    return (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0
            or type(x) not in (torch.Tensor, torch.nn.Parameter))


def live_sizes(lengths: Optional[Tensor], T: int):
    """``(bs, lengths)``: the live rows of each step for lengths sorted longest first;
    ``(None, None)`` when every sequence has all T steps (the plain path is exact then)."""
    if lengths is None or bool((lengths == T).all()):
        return None, None
    return (torch.arange(T).unsqueeze(1) < lengths.cpu()).sum(1).tolist(), lengths


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


@torch.library.custom_op("rnnforge::recurrence", mutates_args=(), device_types="cpu")
def recurrence(mode: str, x: Tensor, w_ih: Tensor, b_ih: Optional[Tensor], h0: Tensor,
               c0: Optional[Tensor], w_hh: Tensor, b_hh: Optional[Tensor],
               lengths: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    bs, lengths = live_sizes(lengths, x.shape[0])
    out, h_n, c_n, acts = run_forward(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths)
    acts = tuple(acts) + tuple(_empty(x) for _ in range(3 - len(acts)))
    return (out, h_n, c_n if c_n is not None else _empty(x)) + acts


@recurrence.register_fake
def _recurrence_fake(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, lengths):
    T, B, _ = x.shape
    H = h0.shape[-1]
    state = x.new_empty((B, H))
    if mode == "lstm":
        acts = (x.new_empty((T, B, 4 * H)), x.new_empty((T, B, H)), x.new_empty((T, B, H)))
        return (x.new_empty((T, B, H)), state, x.new_empty((B, H))) + acts
    if mode == "gru":
        acts = (x.new_empty((T, B, 3 * H)), x.new_empty((T, B, 3 * H)), _empty(x))
    else:
        acts = (_empty(x), _empty(x), _empty(x))
    return (x.new_empty((T, B, H)), state, _empty(x)) + acts


@torch.library.custom_op("rnnforge::recurrence_backward", mutates_args=(), device_types="cpu")
def recurrence_backward(mode: str, x: Tensor, w_ih: Tensor, h0: Tensor, c0: Optional[Tensor],
                        w_hh: Tensor, out: Tensor, a0: Tensor, a1: Tensor, a2: Tensor,
                        lengths: Optional[Tensor], d_out: Tensor, d_hn: Tensor,
                        d_cn: Optional[Tensor], need_dx: bool, need_dw_ih: bool, has_b_ih: bool,
                        has_b_hh: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    bs, lengths = live_sizes(lengths, x.shape[0])
    acts = (a0, a1, a2)[:ACTIVATIONS.get(mode, 0)]
    grads = run_backward(mode, bs, lengths, x, w_ih, h0, c0, w_hh, out, acts, d_out, d_hn, d_cn,
                         (need_dx, need_dw_ih, has_b_ih), has_b_ih, has_b_hh)
    return tuple(g if g is not None else _empty(x) for g in grads)


@recurrence_backward.register_fake
def _recurrence_backward_fake(mode, x, w_ih, h0, c0, w_hh, out, a0, a1, a2, lengths, d_out, d_hn,
                              d_cn, need_dx, need_dw_ih, has_b_ih, has_b_hh):
    # every gradient is a fresh contiguous tensor (GEMM results), whatever the inputs' strides
    GH, H = w_hh.shape
    new = x.new_empty
    return (new(x.shape) if need_dx else _empty(x),
            new(w_ih.shape) if need_dw_ih else _empty(x),
            new((GH,)) if has_b_ih else _empty(x),
            new(h0.shape),
            new(h0.shape) if mode == "lstm" else _empty(x),
            new((GH, H)),
            new((H,)) if mode == "gru" and has_b_hh else _empty(x))


def _setup_context(ctx, inputs, output):
    mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, lengths = inputs
    out, _, _, a0, a1, a2 = output
    ctx.mode, ctx.has_b_ih, ctx.has_b_hh = mode, b_ih is not None, b_hh is not None
    ctx.save_for_backward(x, w_ih, h0, c0, w_hh, out, a0, a1, a2, lengths)


def _backward(ctx, d_out, d_hn, d_cn, *_):
    x, w_ih, h0, c0, w_hh, out, a0, a1, a2, lengths = ctx.saved_tensors
    need = ctx.needs_input_grad
    if d_out is None:
        d_out = torch.zeros_like(out)
    if d_hn is None:
        d_hn = torch.zeros_like(h0)
    if ctx.mode == "lstm" and d_cn is None:
        d_cn = torch.zeros_like(h0)
    dx, dw_ih, db_ih, dh0, dc0, dw_hh, db_hh = torch.ops.rnnforge.recurrence_backward(
        ctx.mode, x, w_ih, h0, c0, w_hh, out, a0, a1, a2, lengths, d_out, d_hn,
        d_cn if ctx.mode == "lstm" else None, need[1], need[2], ctx.has_b_ih and need[3],
        ctx.has_b_hh)
    return (None, dx if need[1] else None, dw_ih if need[2] else None,
            db_ih if ctx.has_b_ih and need[3] else None, dh0,
            dc0 if ctx.mode == "lstm" else None, dw_hh,
            db_hh if ctx.mode == "gru" and ctx.has_b_hh else None, None)


recurrence.register_autograd(_backward, setup_context=_setup_context)
