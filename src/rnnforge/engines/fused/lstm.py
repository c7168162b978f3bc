"""LSTM: forward and hand-written backward through time, torch ops or C loops."""

from __future__ import annotations

import torch

from .cloops import c_loop, call, sibling
from .steps import one, prev_steps, project, steps, weight_grad
from .workspace import WORKSPACE

#: attribute of a constant W_hh (engine.constant_weights): its packed panels by panel width
PANELS = "_rnnforge_panels"


def pack(w_ih, w_hh, b_ih, units: int, packer=None):
    """The weights and bias in the panels of ``rf_lstm_forward`` (rnn_body.h):
    ``wp (P, I+H, 4*units)`` and ``bp (P, 4*units)`` or None, P = ceil(H / units), each
    panel row the i, f, C~, o weights of ``units`` consecutive units, zero past H.
    ``packer``: ``rf_lstm_pack`` (its units must be ``units``), which forms ``wp`` a panel
    at a time into a reused buffer: 0.4 ms at I = H = 256 where torch's strided copies of
    the same permutation into a fresh tensor took 0.3-2 ms (wall clock, one thread).
    Weights of ``engine.constant_weights`` are packed once and kept on ``w_hh``."""
    H, I = w_hh.shape[1], w_ih.shape[1]
    P = -(-H // units)
    kept = getattr(w_hh, PANELS, None)  # constant weights (engine.constant_weights): packed once
    if kept is not None:
        if units not in kept:
            wp = torch.empty((P, I + H, 4 * units), dtype=w_hh.dtype)
            kept[units] = (_panels(w_ih, w_hh, units, packer, wp), _pack_bias(b_ih, H, P, units))
        return kept[units]
    wp = WORKSPACE.take((P, I + H, 4 * units), w_hh) if packer is not None else None  # (reused: no page faults)
    return _panels(w_ih, w_hh, units, packer, wp), _pack_bias(b_ih, H, P, units)


def _panels(w_ih, w_hh, units: int, packer, wp):
    """``wp`` of :func:`pack`: by ``packer`` into the buffer ``wp``, else by torch's copies (into
    ``wp`` when given, else a fresh tensor)."""
    H, I = w_hh.shape[1], w_ih.shape[1]
    P, full = -(-H // units), H // units
    if packer is not None:
        w_ih, w_hh = w_ih.contiguous(), w_hh.contiguous()  # (held while the packer reads)
        packer(H, I, H, w_ih.data_ptr(), w_hh.data_ptr(), wp.data_ptr())
        return wp
    out = (torch.zeros if P * units != H else torch.empty)((P, I + H, 4, units), dtype=w_hh.dtype)
    for w, k0, n in ((w_ih, 0, I), (w_hh, I, H)):
        wt = w.t().contiguous().view(n, 4, H)  # (k, gate, unit): then each copy moves runs of units
        if full:
            out[:full, k0:k0 + n].copy_(wt[:, :, :full * units].view(n, 4, full, units).permute(2, 0, 1, 3))
        if full < P:
            out[full, k0:k0 + n, :, :H - full * units].copy_(wt[:, :, full * units:])
    out = out.view(P, -1, 4 * units)
    return out if wp is None else wp.copy_(out)


def _pack_bias(b_ih, H: int, P: int, units: int):
    if b_ih is None:
        return None
    b = torch.nn.functional.pad(b_ih.view(4, H), (0, P * units - H))
    return b.view(4, P, units).transpose(0, 1).reshape(P, 4 * units)


def pack_columns(w_hh, width: int):
    """``W_hh (4H, H)`` in panels of ``width`` columns, ``(ceil(H / width), 4H, width)``,
    zero past H: the layout of ``rf_lstm_backward`` (rnn_body.h)."""
    G, H = w_hh.shape
    P = -(-H // width)
    w = torch.nn.functional.pad(w_hh, (0, P * width - H)) if P * width != H else w_hh.contiguous()
    return w.view(G, P, width).transpose(0, 1).contiguous()


def forward(x, w_ih, b_ih, h0, c0, w_hh, bs, save=True):
    """``(out, gates, C, tC)``: the states, and the activations i, f, C~, o, C, tanh(C) the
    backward reads (gates and tC None where ``save`` is false and the C loop runs)."""
    T, B, I = x.shape
    H = h0.shape[-1]
    out = (x.new_zeros if bs else x.new_empty)((T, B, H))
    loop = c_loop("lstm_forward", x, B, H)
    if loop is not None:  # projection, recurrence and cell in one C loop (rnn_body.h)
        wp, bp = pack(w_ih, w_hh, b_ih, sibling("lstm_panel", x)(), sibling("lstm_pack", x))
        C = WORKSPACE.take((T, B, H), x, zero=bool(bs))
        gates = WORKSPACE.take((T, B, 4 * H), x, zero=bool(bs)) if save else None
        tC = WORKSPACE.take((T, B, H), x, zero=bool(bs)) if save else None
        call(loop, T, B, H, bs, I, x, wp, bp, h0, c0, gates, C, tC, out)
        return out, gates, C, tC
    gates = WORKSPACE.take((T, B, 4 * H), x)  # projections, then the activations i, f, C~, o
    project(x, w_ih, b_ih, gates.view(T * B, 4 * H))
    C = WORKSPACE.take((T, B, H), x, zero=bool(bs))
    tC = WORKSPACE.take((T, B, H), x, zero=bool(bs))  # tanh(C)
    wt = w_hh.t().contiguous()  # (H, 4H): row-major W^T, the faster GEMM layout here
    S = lambda buf: steps(buf, bs)  # noqa: E731
    for (h_prev, c_prev, g_t, g_if, g_g, g_o, i, f, c_t, tc_t, o_t) in zip(
            prev_steps(h0, out, bs), prev_steps(c0, C, bs), S(gates),
            S(gates[..., :2 * H]), S(gates[..., 2 * H:3 * H]), S(gates[..., 3 * H:]),
            S(gates[..., :H]), S(gates[..., H:2 * H]), S(C), S(tC), S(out)):
        g_t.addmm_(h_prev, wt)  # all four pre-activations, (b, 4H)
        g_if.sigmoid_()
        g_g.tanh_()
        g_o.sigmoid_()
        torch.mul(f, c_prev, out=c_t).addcmul_(i, g_g)  # C = f ⊙ C_prev + i ⊙ C~
        torch.tanh(c_t, out=tc_t)
        torch.mul(g_o, tc_t, out=o_t)  # z = o ⊙ tanh(C)
    return out, gates, C, tC


def backward(saved, dH, d_cn, bs, weights=True):
    """``(dG, dh0, dc0, dW_hh)`` from ``dH``, the total gradient reaching each h_t, and d c_n
    (dW_hh None where ``weights`` is false: the caller forms it with W_ih's, steps.weight_grads)."""
    h0, c0, w_hh, out, gates, C, tC = saved
    T, B, H = out.shape
    dG = WORKSPACE.take((T, B, 4 * H), out, zero=bool(bs))
    dc = d_cn.clone(memory_format=torch.contiguous_format)  # dC carried back, (B, H)
    loop = c_loop("lstm_backward", out, B, H)
    if loop is not None:  # forms the Jacobian factors per element itself
        call(loop, T, B, H, bs, pack_columns(w_hh, 4 * c_loop("lstm_panel", out, B, H)()),
             gates, C, tC, c0, dH, dc, dG)
        # every row is live at t = 0
        return dG, dG[0] @ w_hh, dc, weight_grad(dG, h0, out) if weights else None
    i, f, g, o = gates.chunk(4, -1)  # (T, B, H) each
    # the step Jacobians' factors, for all T at once
    K = WORKSPACE.take((T, B, 5, H), out)
    Ki, Kf, Kg, Ko, Kc = K.unbind(2)
    torch.addcmul(i, i, i, value=-1, out=Ki).mul_(g)  # d i-pre / dC = C~ i (1 - i)
    torch.addcmul(f, f, f, value=-1, out=Kf)  # f (1 - f) ...
    Kf[0].mul_(c0)
    Kf[1:].mul_(C[:-1])  # ... ⊙ C_prev
    torch.addcmul(one(g), g, g, value=-1, out=Kg).mul_(i)  # d C~-pre / dC = i (1 - C~^2)
    torch.addcmul(o, o, o, value=-1, out=Ko).mul_(tC)  # d o-pre / dh = tanh(C) o (1 - o)
    torch.addcmul(one(tC), tC, tC, value=-1, out=Kc).mul_(o)  # dC / dh = o (1 - tanh(C)^2)
    Kifg = K[:, :, :3]
    dG4 = dG.view(T, B, 4, H)
    dcs = [dc] * T if bs is None else [dc[:b] for b in bs]
    dc3 = dc.unsqueeze(1).expand(B, 3, H)  # (B, 3, H), stride 0 over the gates
    dc3s = [dc3] * T if bs is None else [dc3[:b] for b in bs]
    S = lambda buf: steps(buf, bs)  # noqa: E731
    dHs, Kcs, Kifgs, Kos, fs = S(dH), S(Kc), S(Kifg), S(Ko), S(f)
    dGs, dG3s, dGos = S(dG), S(dG4[:, :, :3]), S(dG[..., 3 * H:])
    dHp = prev_steps(dH[0], dH, bs)
    for t in range(T - 1, -1, -1):
        dh, dc_t = dHs[t], dcs[t]
        dc_t.addcmul_(dh, Kcs[t])  # dC_t
        torch.mul(dc3s[t], Kifgs[t], out=dG3s[t])  # d(i, f, C~ pre-activations)
        torch.mul(dh, Kos[t], out=dGos[t])  # d(o pre-activation)
        dc_t.mul_(fs[t])  # dC_{t-1}
        if t:
            dHp[t].addmm_(dGs[t], w_hh)  # dh_{t-1} += dG_t W_hh
    dh0 = dGs[0] @ w_hh
    return dG, dh0, dc, weight_grad(dG, h0, out) if weights else None
