"""RNN (tanh or sigmoid): forward and hand-written backward through time, torch ops or C loops."""

from __future__ import annotations

import torch

from .cloops import c_loop, call
from .steps import one, prev_steps, project, steps, weight_grad
from .workspace import WORKSPACE


def forward(mode, x, w_ih, b_ih, h0, w_hh, bs):
    """``out (T, B, H)``: the states z_t; the backward needs nothing else."""
    T, B, _ = x.shape
    H = h0.shape[-1]
    out = x.new_empty((T, B, H))  # pre-activations, then z: returned, so not from the workspace
    wt = w_hh.t().contiguous()  # (H, H): row-major W^T, the faster GEMM layout here
    loop = c_loop("rnn_forward", x, B, H)
    if loop is not None:  # the input projection too, per row range (see rnn_body.h)
        call(loop, T, B, H, bs, int(mode == "rnn_sigmoid"), h0, wt, out, x, x.shape[-1],
             w_ih.t(), b_ih)
        return out
    project(x, w_ih, b_ih, out.view(T * B, H))
    act_ = torch.Tensor.sigmoid_ if mode == "rnn_sigmoid" else torch.Tensor.tanh_
    for h_t, o_t in zip(prev_steps(h0, out, bs), steps(out, bs)):
        act_(o_t.addmm_(h_t, wt))  # z = σ(α x + γ z_prev)
    return out


def backward(mode, saved, dH, bs):
    """``(dP, dh0, dW_hh)`` from ``dH``, the total gradient reaching each h_t (with padding)."""
    h0, w_hh, out = saved
    T, B, H = out.shape
    # d pre-activation / d h_t for all steps at once, then times dH_t in the loop
    dP = WORKSPACE.take((T, B, H), out, zero=bool(bs))
    K = WORKSPACE.take((T, B, H), out)
    if mode == "rnn_sigmoid":
        torch.addcmul(out, out, out, value=-1, out=K)  # z (1 - z) = z - z^2, one pass
    else:
        torch.addcmul(one(out), out, out, value=-1, out=K)  # 1 - z^2, one pass
    loop = c_loop("rnn_backward", out, B, H)
    if loop is not None:
        call(loop, T, B, H, bs, w_hh, K, dH, dP)
    else:
        dHs, Ks, dPs = steps(dH, bs), steps(K, bs), steps(dP, bs)
        dHp = prev_steps(dH[0], dH, bs)  # dHp[t] is dH[t-1] (live rows of step t)
        for t in range(T - 1, 0, -1):
            dHp[t].addmm_(torch.mul(dHs[t], Ks[t], out=dPs[t]), w_hh)  # dh_{t-1} += dP_t W_hh
    torch.mul(dH[0], K[0], out=dP[0])  # t = 0: every row is live (lengths are at least 1)
    dh0 = dP[0] @ w_hh
    return dP, dh0, weight_grad(dP, h0, out)


def backward_direct(mode, saved, d_out, d_hn):
    """``backward`` without padding and without the (T, B, H) buffer dH.

    The gradient reaching h_t is ``d_out_t + dP_{t+1} W_hh`` (``+ d_hn`` at the
    last step); one ``addmm`` per step writes it into a small (B, H) buffer that
    stays in cache, and ``dP_t`` is it times the saved Jacobian factor. Same
    operations and rounding as the dH loop, less memory traffic: no copy of
    d_out (often an expanded tensor) into dH, and per step two (B, H) slices
    read and one written instead of three read and two written.
    """
    h0, w_hh, out = saved
    T, B, H = out.shape
    dP = WORKSPACE.take((T, B, H), out)
    loop = c_loop("rnn_backward_direct", out, B, H)
    if loop is not None:  # forms f'(z) itself, dP is its own scratch
        call(loop, T, B, H, None, int(mode == "rnn_sigmoid"), w_hh, out, d_out, d_hn, dP)
        return dP, dP[0] @ w_hh, weight_grad(dP, h0, out)
    K = WORKSPACE.take((T, B, H), out)
    if mode == "rnn_sigmoid":
        torch.addcmul(out, out, out, value=-1, out=K)  # z (1 - z) = z - z^2, one pass
    else:
        torch.addcmul(one(out), out, out, value=-1, out=K)  # 1 - z^2, one pass
    g = torch.empty((B, H), dtype=out.dtype, device=out.device)
    dOs, Ks, dPs = d_out.unbind(0), K.unbind(0), dP.unbind(0)
    torch.mul(torch.add(dOs[-1], d_hn, out=g), Ks[-1], out=dPs[-1])
    for t in range(T - 2, -1, -1):
        torch.mul(torch.addmm(dOs[t], dPs[t + 1], w_hh, out=g), Ks[t], out=dPs[t])  # dh_t, dP_t
    dh0 = dP[0] @ w_hh
    return dP, dh0, weight_grad(dP, h0, out)

