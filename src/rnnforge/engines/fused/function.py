"""The fused engine's torch.autograd.Function: one layer-direction, forward and its own backward.

The forward runs a cell's loop over time without recording an autograd graph
and saves what its hand-written backward reads; the backward completes the
gradient reaching every h_t (outputs, final state, padding) before handing it
to the cell's backward, then forms the input projection's gradients as one GEMM
each over all T*B rows.
"""

from __future__ import annotations

import torch

from . import gru, lstm, rnn
from .steps import final, mm
from .workspace import WORKSPACE


class Recurrence(torch.autograd.Function):
    """One layer-direction: input projection and recurrence, with its own backward.

    Inputs: ``x (T, B, I)``, ``w_ih (G*H, I)``, ``b_ih (G*H,)`` or None,
    ``h0``/``c0`` (B, H), ``w_hh (G*H, H)``, the GRU's ``b_hh (H,)`` or None, the live
    batch sizes ``bs`` (list of T ints, or None when every sequence has T steps)
    and the sorted ``lengths``. Returns ``out (T, B, H), h_n (B, H), c_n (B, H)``
    (c_n only for the LSTM, else an empty tensor).
    """

    @staticmethod
    def forward(ctx, mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths):
        ctx.mode, ctx.bs = mode, bs
        ctx.has_b_ih, ctx.has_b_hh = b_ih is not None, b_hh is not None
        if mode == "lstm":
            out, gates, C, tC = lstm.forward(x, w_ih, b_ih, h0, c0, w_hh, bs)
            ctx.save_for_backward(x, w_ih, h0, c0, w_hh, out, gates, C, tC, lengths)
            return out, final(out, lengths), final(C, lengths)
        if mode == "gru":
            out, gates, hg = gru.forward(x, w_ih, b_ih, h0, w_hh, b_hh, bs)
            ctx.save_for_backward(x, w_ih, h0, w_hh, out, gates, hg, lengths)
        else:
            out = rnn.forward(mode, x, w_ih, b_ih, h0, w_hh, bs)
            if bs:  # the projection filled every row: outputs past the end are zero
                T = out.shape[0]
                out.masked_fill_(torch.arange(T).unsqueeze(1).ge(lengths).unsqueeze(-1), 0)
            ctx.save_for_backward(x, w_ih, h0, w_hh, out, lengths)
        return out, final(out, lengths), x.new_empty(0)

    @staticmethod
    def backward(ctx, d_out, d_hn, d_cn):
        if torch.is_grad_enabled():  # create_graph=True: a graph of this backward is wanted
            raise RuntimeError(
                "the fused engine's backward is not differentiable (no double backward): "
                "use engine='reference' for higher-order gradients")
        mode, bs = ctx.mode, ctx.bs
        saved = ctx.saved_tensors
        x, w_ih, lengths = saved[0], saved[1], saved[-1]
        T, B = d_out.shape[:2]
        if mode != "lstm" and mode != "gru" and lengths is None:
            # the RNN without padding: the loop starts from d_out itself (no dH buffer: rnn.backward_direct)
            dG, dh0, dw_hh = rnn.backward_direct(mode, saved[2:-1], d_out, d_hn)
            return Recurrence._input_grads(ctx, dG, x, w_ih, T, B) + (dh0, None, dw_hh, None, None, None)
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
            dG, dh0, dc0, dw_hh = lstm.backward(saved[2:-1], dH, d_cn, bs)
            db_hh = None
        elif mode == "gru":
            dG, dh0, dw_hh, db_hh = gru.backward(saved[2:-1], dH, bs, ctx.has_b_hh)
            dc0 = None
        else:
            dG, dh0, dw_hh = rnn.backward(mode, saved[2:-1], dH, bs)
            dc0 = db_hh = None
        return Recurrence._input_grads(ctx, dG, x, w_ih, T, B) + (dh0, dc0, dw_hh, db_hh, None, None)

    @staticmethod
    def _input_grads(ctx, dG, x, w_ih, T, B):
        """``(None, dx, dw_ih, db_ih)``: the input projection's gradients, one GEMM each over all T*B rows."""
        dG2 = dG.view(T * B, -1)  # (T*B, G*H)
        need = ctx.needs_input_grad
        dx = mm(dG2, w_ih).view(T, B, -1) if need[1] else None
        dw_ih = mm(dG2.t(), x.reshape(T * B, -1)) if need[2] else None
        db_ih = dG2.sum(0) if ctx.has_b_ih and need[3] else None
        return None, dx, dw_ih, db_ih
