"""The fused engine's torch.autograd.Function: one layer-direction, forward and its own backward.

The forward runs a cell's loop over time without recording an autograd graph
and saves what its hand-written backward reads; the backward completes the
gradient reaching every h_t (outputs, final state, padding) before handing it
to the cell's backward, then forms the input projection's gradients as one GEMM
each over all T*B rows.

``run_forward`` and ``run_backward`` hold that arithmetic apart from autograd,
so that ``Recurrence`` (eager) and the registered operators of ``ops`` (traced:
torch.export, torch.compile) run the same code.
"""

from __future__ import annotations

import threading

import torch

from . import gru, lstm, rnn
from .steps import final, mm, weight_grads
from .workspace import WORKSPACE

#: activations the forward saves for the backward, besides its inputs and ``out``
ACTIVATIONS = {"lstm": 3, "gru": 2}  # i, f, C~, o and C, tanh(C); r, s, z~ and γ z_prev


def run_forward(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths, save=True):
    """``(out (T, B, H), h_n (B, H), c_n (B, H) or None, acts)``; ``acts`` is the tuple of
    activations the backward reads (``ACTIVATIONS`` of them; none for the RNN). With ``save``
    false no backward will run, and the LSTM's C loop leaves out what only it reads (None)."""
    if mode == "lstm":
        out, gates, C, tC = lstm.forward(x, w_ih, b_ih, h0, c0, w_hh, bs, save)
        return out, final(out, lengths), final(C, lengths), (gates, C, tC)
    if mode == "gru":
        out, gates, hg = gru.forward(x, w_ih, b_ih, h0, w_hh, b_hh, bs)
        return out, final(out, lengths), None, (gates, hg)
    out = rnn.forward(mode, x, w_ih, b_ih, h0, w_hh, bs)
    if bs:  # the projection filled every row: outputs past the end are zero
        T = out.shape[0]
        out.masked_fill_(torch.arange(T).unsqueeze(1).ge(lengths).unsqueeze(-1), 0)
    return out, final(out, lengths), None, ()


def run_backward(mode, bs, lengths, x, w_ih, h0, c0, w_hh, out, acts, d_out, d_hn, d_cn,
                 need, has_b_ih, has_b_hh):
    """``(dx, dw_ih, db_ih, dh0, dc0, dw_hh, db_hh)``, None where not needed or not there.

    ``need`` says which of ``(dx, dw_ih, db_ih)`` to form; the rest are formed when the
    cell has them."""
    T, B = d_out.shape[:2]
    if mode != "lstm" and mode != "gru" and lengths is None:
        # the RNN without padding: the loop starts from d_out itself (no dH buffer: rnn.backward_direct)
        dG, dh0, dw_hh = rnn.backward_direct(mode, (h0, w_hh, out), d_out, d_hn)
        return _input_grads(dG, x, w_ih, T, B, need, has_b_ih) + (dh0, None, dw_hh, None)
    # dH[t]: the total gradient reaching h_t, completed as the loop walks back
    dH = WORKSPACE.take(d_out.shape, d_out)
    dH.copy_(d_out)
    if lengths is None:
        dH[-1] += d_hn
    else:
        dead = torch.arange(T, device=dH.device).unsqueeze(1).ge(lengths)  # (T, B)
        dH.masked_fill_(dead.unsqueeze(-1), 0)  # outputs past the end are constants
        dH[lengths - 1, torch.arange(B, device=dH.device)] += d_hn
    if mode == "lstm":
        # W_ih's gradients wanted with W_hh's: one product for all of them (steps.weight_grads)
        joint = need[1] and (need[2] or not has_b_ih)
        dG, dh0, dc0, dw_hh = lstm.backward((h0, c0, w_hh, out, *acts), dH, d_cn, bs, not joint)
        if joint:
            dw_ih, dw_hh, db_ih = weight_grads(dG, x, h0, out, has_b_ih)
            dx = mm(dG.view(T * B, -1), w_ih).view(T, B, -1) if need[0] else None
            return dx, dw_ih, db_ih, dh0, dc0, dw_hh, None
        db_hh = None
    elif mode == "gru":
        dG, dh0, dw_hh, db_hh = gru.backward((h0, w_hh, out, *acts), dH, bs, has_b_hh)
        dc0 = None
    else:
        dG, dh0, dw_hh = rnn.backward(mode, (h0, w_hh, out), dH, bs)
        dc0 = db_hh = None
    return _input_grads(dG, x, w_ih, T, B, need, has_b_ih) + (dh0, dc0, dw_hh, db_hh)


def _input_grads(dG, x, w_ih, T, B, need, has_b_ih):
    """``(dx, dw_ih, db_ih)``: the input projection's gradients, one GEMM each over all T*B rows."""
    dG2 = dG.view(T * B, -1)  # (T*B, G*H)
    dx = mm(dG2, w_ih).view(T, B, -1) if need[0] else None
    dw_ih = mm(dG2.t(), x.reshape(T * B, -1)) if need[1] else None
    db_ih = dG2.sum(0) if has_b_ih and need[2] else None
    return dx, dw_ih, db_ih


_graph = threading.local()  # .on: grad mode where Recurrence.apply was called


class Recurrence(torch.autograd.Function):
    """One layer-direction: input projection and recurrence, with its own backward.

    Inputs: ``x (T, B, I)``, ``w_ih (G*H, I)``, ``b_ih (G*H,)`` or None,
    ``h0``/``c0`` (B, H), ``w_hh (G*H, H)``, the GRU's ``b_hh (H,)`` or None, the live
    batch sizes ``bs`` (list of T ints, or None when every sequence has T steps)
    and the sorted ``lengths``. Returns ``out (T, B, H), h_n (B, H), c_n (B, H)``
    (c_n only for the LSTM, else an empty tensor).
    """

    @classmethod
    def apply(cls, *args):
        # forward runs with grad off: whether a graph is recorded is known only out here
        _graph.on = torch.is_grad_enabled()
        return super().apply(*args)

    @staticmethod
    def forward(ctx, mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths):
        ctx.mode, ctx.bs = mode, bs
        ctx.has_b_ih, ctx.has_b_hh = b_ih is not None, b_hh is not None
        save = getattr(_graph, "on", True) and any(ctx.needs_input_grad)
        out, h_n, c_n, acts = run_forward(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths, save)
        ctx.save_for_backward(x, w_ih, h0, c0, w_hh, out, lengths, *acts)
        return out, h_n, (c_n if c_n is not None else x.new_empty(0))

    @staticmethod
    def backward(ctx, d_out, d_hn, d_cn):
        if torch.is_grad_enabled():  # create_graph=True: a graph of this backward is wanted
            raise RuntimeError(
                "the fused engine's backward is not differentiable (no double backward): "
                "use engine='reference' for higher-order gradients")
        x, w_ih, h0, c0, w_hh, out, lengths, *acts = ctx.saved_tensors
        dx, dw_ih, db_ih, dh0, dc0, dw_hh, db_hh = run_backward(
            ctx.mode, ctx.bs, lengths, x, w_ih, h0, c0, w_hh, out, acts, d_out, d_hn, d_cn,
            ctx.needs_input_grad[1:4], ctx.has_b_ih, ctx.has_b_hh)
        return None, dx, dw_ih, db_ih, dh0, dc0, dw_hh, db_hh, None, None
