"""GRU: forward and hand-written backward through time, torch ops or C loops."""

from __future__ import annotations

import torch

from .cloops import c_loop, call
from .steps import one, prev_steps, project, steps, weight_grad
from .workspace import WORKSPACE


def forward(x, w_ih, b_ih, h0, w_hh, b_hh, bs):
    """``(out, gates, hg)``: the states, the activations r, s, z~ and the recurrent products γ z_prev."""
    T, B, _ = x.shape
    H = h0.shape[-1]
    out = (x.new_zeros if bs else x.new_empty)((T, B, H))
    gates = WORKSPACE.take((T, B, 3 * H), x)  # α x + b, then the activations r, s, z~
    project(x, w_ih, b_ih, gates.view(T * B, 3 * H))
    hg = WORKSPACE.take((T, B, 3 * H), x, zero=bool(bs))  # γ z_prev per gate (+ b_γ for z~)
    wt = w_hh.t().contiguous()  # (H, 3H): row-major W^T, the faster GEMM layout here
    loop = c_loop("gru_forward", x, B, H)
    if loop is not None:
        call(loop, T, B, H, bs, h0, wt, b_hh, gates, hg, out)
        return out, gates, hg
    S = lambda buf: steps(buf, bs)  # noqa: E731
    for (h_prev, hg_t, hg_rs, hg_n, g_rs, r, s, g_n, o_t) in zip(
            prev_steps(h0, out, bs), S(hg), S(hg[..., :2 * H]), S(hg[..., 2 * H:]),
            S(gates[..., :2 * H]), S(gates[..., :H]), S(gates[..., H:2 * H]),
            S(gates[..., 2 * H:]), S(out)):
        torch.mm(h_prev, wt, out=hg_t)
        if b_hh is not None:
            hg_n.add_(b_hh)  # b_γ sits inside the reset product
        g_rs.add_(hg_rs).sigmoid_()  # r, s
        g_n.addcmul_(r, hg_n).tanh_()  # z~ = tanh(α x + r ⊙ (γ z_prev))
        torch.lerp(g_n, h_prev, s, out=o_t)  # z = s ⊙ z_prev + (1 - s) ⊙ z~
    return out, gates, hg


def backward(saved, dH, bs, has_b_hh):
    """``(dG, dh0, dW_hh, db_γ)`` from ``dH``, the total gradient reaching each h_t."""
    h0, w_hh, out, gates, hg = saved
    T, B, H = out.shape
    r, s, n = gates.chunk(3, -1)  # (T, B, H) each
    hg_n = hg[..., 2 * H:]  # γ z_prev (+ b_γ)
    # the step Jacobians' factors, d pre-activation = dh * K, for all T at once
    Kx = WORKSPACE.take((T, B, 3, H), out)  # input side: r, s, z~
    Kr, Ks, Kn = Kx.unbind(2)
    torch.addcmul(one(n), n, n, value=-1, out=Kn)  # 1 - z~^2
    Kn.addcmul_(Kn, s, value=-1)  # (1 - s)(1 - z~^2): candidate
    torch.sub(out[:-1], n[1:], out=Kr[1:])  # Kr holds z_prev - z~ for a moment (no temporary)
    torch.sub(h0, n[0], out=Kr[0])
    torch.addcmul(s, s, s, value=-1, out=Ks).mul_(Kr)  # s(1 - s)(z_prev - z~): update
    torch.mul(Kn, hg_n, out=Kr).mul_(r)
    Kr.addcmul_(Kr, r, value=-1)  # (1 - s)(1 - z~^2) ⊙ (γz + b_γ) ⊙ r(1 - r): reset
    # recurrent side: the same factors, but the candidate's is multiplied by r (applied per step)
    dHG = WORKSPACE.take((T, B, 3, H), out, zero=bool(bs))
    dH4 = dH.unsqueeze(2)  # (T, B, 1, H)
    loop = c_loop("gru_backward", out, B, H)
    if loop is not None:
        call(loop, T, B, H, bs, w_hh, Kx, gates, dH, dHG)
    else:
        S = lambda buf: steps(buf, bs)  # noqa: E731
        # an explicit expand makes the per-step broadcast multiply ~25% faster here than (b, 1, H)
        dHs, dH4s, Kxs, ss, rs = S(dH), S(dH4.expand(T, B, 3, H)), S(Kx), S(s), S(r)
        dHGs, dHGns, dHGfs = S(dHG), S(dHG[:, :, 2]), S(dHG.view(T, B, 3 * H))
        dHp = prev_steps(dH[0], dH, bs)
        for t in range(T - 1, 0, -1):
            torch.mul(dH4s[t], Kxs[t], out=dHGs[t])  # d(r, s, z~ pre-activations), (b, 3, H)
            dHGns[t].mul_(rs[t])  # the candidate's recurrent product sits inside r ⊙ (.)
            dHp[t].addcmul_(dHs[t], ss[t]).addmm_(dHGfs[t], w_hh)  # dh_{t-1}
    # t = 0, where every row is live (lengths are at least 1)
    torch.mul(dH4[0], Kx[0], out=dHG[0])
    dHG[0, :, 2].mul_(r[0])
    dh0 = torch.addmm(dH[0] * s[0], dHG[0].view(B, 3 * H), w_hh)
    dw = weight_grad(dHG.view(T, B, 3 * H), h0, out)
    db = dHG[:, :, 2].sum((0, 1)) if has_b_hh else None  # only z~ has a recurrent bias
    # input side: r and s are the same; the candidate's is dh ⊙ Kn (no r): reuse dHG's memory
    torch.mul(dH, Kn, out=dHG[:, :, 2])  # Kn is a view of Kx: the input-side factor
    dG = dHG.view(T, B, 3 * H)
    return dG, dh0, dw, db
