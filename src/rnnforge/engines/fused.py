"""The fused engine: our own forward and backward through time, in PyTorch ops, on CPU.

Per layer and direction (shape symbols as in layers.py; G gates, G*H stacked
pre-activations in the cell's ``GATES`` order, which is torch.nn's):

forward
    xg = x W_ih^T + b                 one GEMM for all T steps            (T*B, G*H)
    per step t: one GEMM h_{t-1} W_hh^T into a preallocated buffer, then the
    gate arithmetic as a handful of in-place / ``out=`` kernels
    (LSTM 8, GRU 6, RNN 2 kernels per step; no autograd graph is recorded).

backward (``_Recurrence.backward``, hand-written, run once per layer-direction)
    The gate activations are saved by the forward. Every factor of the step
    Jacobians that does not depend on the incoming gradient (``σ'``, ``tanh'``,
    products of saved gates) is computed for all T steps at once, in a few large
    elementwise kernels, before the loop. The loop then carries only what is
    truly sequential -- dh (and dC for the LSTM) -- with one recurrent GEMM
    ``dh_{t-1} += dgates_t W_hh`` and 1 to 4 small kernels per step
    (LSTM 5, GRU 3, RNN 2). The weight gradients are single GEMMs over all
    steps: ``dW_hh = dgates^T H_prev`` as (G*H, T*B) x (T*B, H); ``dW_ih`` and
    the input gradient come from autograd through the one projection GEMM.

Variable lengths run the way packed sequences do: the batch is sorted by
length (longest first), so at step t only the first ``b_t`` rows are live and
every kernel works on that prefix. Rows past their end are never touched, so
their state is frozen, their outputs stay zero and their gradients are zero.

Gradients reach the named parameters because the stacked weights are built
with ``torch.cat`` outside the custom Function. Double backward is not
supported: asking for it (``create_graph=True``) raises a clear error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import reverse_padded

_MODES = ("lstm", "gru", "rnn_tanh", "rnn_sigmoid")
_DTYPES = (torch.float32, torch.float64)


# -- packing the named parameters (differentiably) --------------------------------------
def stacked_weights(cell):
    """``(w_ih (G*H, I), w_hh (G*H, H), b_ih (G*H,) or None, b_hh (G*H,) or None)``.

    Built with ``torch.cat`` from the cell's named parameters in ``GATES`` order,
    so autograd routes the stacked gradients back to each named parameter.
    ``b_hh`` is only the GRU's recurrent candidate bias (``b_gamma``, zeros for
    the other two gates); the other cells have no bias inside the recurrence.
    """
    gates = cell.GATES
    if len(gates) == 1:
        g = gates[0]
        return (getattr(cell, g.input), getattr(cell, g.recurrent),
                getattr(cell, g.bias) if cell.bias else None, None)
    w_ih = torch.cat([getattr(cell, g.input) for g in gates], 0)  # (G*H, I)
    w_hh = torch.cat([getattr(cell, g.recurrent) for g in gates], 0)  # (G*H, H)
    if not cell.bias:
        return w_ih, w_hh, None, None
    b_ih = torch.cat([getattr(cell, g.bias) for g in gates], 0)  # (G*H,)
    b_hh = None
    if any(g.recurrent_bias for g in gates):
        zeros = b_ih.new_zeros(cell.hidden_size)
        b_hh = torch.cat([getattr(cell, g.recurrent_bias) if g.recurrent_bias else zeros
                          for g in gates], 0)  # (G*H,)
    return w_ih, w_hh, b_ih, b_hh


# -- per-step views ----------------------------------------------------------------------
def _steps(buf: torch.Tensor, bs):
    """Per-step views of a time-major buffer, restricted to the live rows ``[:b_t]``."""
    if bs is None:
        return buf.unbind(0)
    return [buf[t, :b] for t, b in enumerate(bs)]


def _prev_steps(first: torch.Tensor, buf: torch.Tensor, bs):
    """Views of the previous step's value for each step: ``first`` at t=0, else ``buf[t-1]``."""
    if bs is None:
        return (first, *buf.unbind(0)[:-1])
    return [first[:bs[0]]] + [buf[t - 1, :b] for t, b in enumerate(bs) if t > 0]


def _shifted(first: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """``cat(first[None], buf[:-1])``: the value entering each step, (T, B, H)."""
    return torch.cat((first.unsqueeze(0), buf[:-1]), 0)


def _final(buf: torch.Tensor, lengths) -> torch.Tensor:
    """The value at each sequence's last real step, (B, H)."""
    if lengths is None:
        return buf[-1].clone()
    return buf[lengths - 1, torch.arange(buf.shape[1], device=buf.device)]


# -- forward kernels: (xg, h0, c0, w_hh, b_hh, bs) -> (out, saved, c_all) ---------------
def _rnn_forward(mode, xg, h0, w_hh, bs):
    T, B, _ = xg.shape
    out = (xg.new_zeros if bs else xg.new_empty)((T, B, h0.shape[-1]))  # (T, B, H)
    wt = w_hh.t()  # (H, H)
    act_ = torch.Tensor.sigmoid_ if mode == "rnn_sigmoid" else torch.Tensor.tanh_
    for x_t, h_t, o_t in zip(_steps(xg, bs), _prev_steps(h0, out, bs), _steps(out, bs)):
        torch.addmm(x_t, h_t, wt, out=o_t)  # pre-activation, (b, H)
        act_(o_t)  # z = σ(...) or tanh(...)
    return out


def _gru_forward(xg, h0, w_hh, b_hh, bs):
    T, B, GH = xg.shape
    H = GH // 3
    new = xg.new_zeros if bs else xg.new_empty
    out = new((T, B, H))
    gates = new((T, B, GH))  # r, s, z~ activations
    hg = new((T, B, GH))  # h_{t-1} W_hh^T (+ b_hh): the recurrent pre-activations
    wt = w_hh.t()  # (H, 3H)
    S = lambda buf: _steps(buf, bs)  # noqa: E731
    for (x_rs, x_n, h_prev, hg_t, hg_rs, hg_n, g_rs, r, s, g_n, o_t) in zip(
            S(xg[..., :2 * H]), S(xg[..., 2 * H:]), _prev_steps(h0, out, bs), S(hg),
            S(hg[..., :2 * H]), S(hg[..., 2 * H:]), S(gates[..., :2 * H]),
            S(gates[..., :H]), S(gates[..., H:2 * H]), S(gates[..., 2 * H:]), S(out)):
        if b_hh is None:
            torch.mm(h_prev, wt, out=hg_t)
        else:
            torch.addmm(b_hh, h_prev, wt, out=hg_t)
        torch.add(x_rs, hg_rs, out=g_rs).sigmoid_()  # r, s
        torch.addcmul(x_n, r, hg_n, out=g_n).tanh_()  # z~ = tanh(α x + r ⊙ (γ z_prev))
        torch.lerp(g_n, h_prev, s, out=o_t)  # z = s ⊙ z_prev + (1 - s) ⊙ z~
    return out, gates, hg


def _lstm_forward(xg, h0, c0, w_hh, bs):
    T, B, GH = xg.shape
    H = GH // 4
    new = xg.new_zeros if bs else xg.new_empty
    out = new((T, B, H))
    gates = new((T, B, GH))  # i, f, C~, o activations
    C = new((T, B, H))
    tC = new((T, B, H))  # tanh(C)
    wt = w_hh.t()  # (H, 4H)
    S = lambda buf: _steps(buf, bs)  # noqa: E731
    for (x_t, h_prev, c_prev, g_t, g_if, g_g, g_o, i, f, c_t, tc_t, o_t) in zip(
            S(xg), _prev_steps(h0, out, bs), _prev_steps(c0, C, bs), S(gates),
            S(gates[..., :2 * H]), S(gates[..., 2 * H:3 * H]), S(gates[..., 3 * H:]),
            S(gates[..., :H]), S(gates[..., H:2 * H]), S(C), S(tC), S(out)):
        torch.addmm(x_t, h_prev, wt, out=g_t)  # all four pre-activations, (b, 4H)
        g_if.sigmoid_()
        g_g.tanh_()
        g_o.sigmoid_()
        torch.mul(f, c_prev, out=c_t).addcmul_(i, g_g)  # C = f ⊙ C_prev + i ⊙ C~
        torch.tanh(c_t, out=tc_t)
        torch.mul(g_o, tc_t, out=o_t)  # z = o ⊙ tanh(C)
    return out, gates, C, tC


class _Recurrence(torch.autograd.Function):
    """One layer-direction of the recurrence over precomputed input projections.

    Inputs: ``xg (T, B, G*H)`` (x W_ih^T + b for every step), ``h0``/``c0``
    (B, H), ``w_hh (G*H, H)``, ``b_hh (G*H,)`` or None, the live batch sizes
    ``bs`` (list of T ints, or None when every sequence has T steps) and the
    sorted ``lengths``. Returns ``out (T, B, H), h_n (B, H), c_n (B, H)`` (c_n
    only for the LSTM, else an empty tensor).
    """

    @staticmethod
    def forward(ctx, mode, xg, h0, c0, w_hh, b_hh, bs, lengths):
        ctx.mode, ctx.bs = mode, bs
        if mode == "lstm":
            out, gates, C, tC = _lstm_forward(xg, h0, c0, w_hh, bs)
            ctx.save_for_backward(h0, c0, w_hh, out, gates, C, tC, lengths)
            return out, _final(out, lengths), _final(C, lengths)
        if mode == "gru":
            out, gates, hg = _gru_forward(xg, h0, w_hh, b_hh, bs)
            ctx.save_for_backward(h0, w_hh, out, gates, hg, lengths)
        else:
            out = _rnn_forward(mode, xg, h0, w_hh, bs)
            ctx.save_for_backward(h0, w_hh, out, lengths)
        ctx.has_b_hh = b_hh is not None
        return out, _final(out, lengths), xg.new_empty(0)

    @staticmethod
    def backward(ctx, d_out, d_hn, d_cn):
        if torch.is_grad_enabled():  # create_graph=True: a graph of this backward is wanted
            raise RuntimeError(
                "the fused engine's backward is not differentiable (no double backward): "
                "use engine='reference' for higher-order gradients")
        mode, bs = ctx.mode, ctx.bs
        saved = ctx.saved_tensors
        lengths = saved[-1]
        T, B = d_out.shape[:2]
        # dH[t]: the total gradient reaching h_t, filled in as the loop walks back
        dH = d_out.clone(memory_format=torch.contiguous_format)
        if lengths is None:
            dH[-1] += d_hn
        else:
            live = torch.arange(T, device=dH.device).unsqueeze(1) < lengths  # (T, B)
            dH.mul_(live.unsqueeze(-1))  # outputs past the end are constants
            dH[lengths - 1, torch.arange(B, device=dH.device)] += d_hn
        if mode == "lstm":
            return (None, *_lstm_backward(saved, dH, d_cn, bs), None, None, None)
        if mode == "gru":
            dxg, dh0, dw, db = _gru_backward(saved, dH, bs, ctx.has_b_hh)
            return None, dxg, dh0, None, dw, db, None, None
        dxg, dh0, dw = _rnn_backward(mode, saved, dH, bs)
        return None, dxg, dh0, None, dw, None, None, None


# -- backward kernels --------------------------------------------------------------------
def _rnn_backward(mode, saved, dH, bs):
    h0, w_hh, out, _ = saved
    # d pre-activation / d h_t, for all steps at once
    K = out * (1 - out) if mode == "rnn_sigmoid" else 1 - out * out  # (T, B, H)
    dP = torch.zeros_like(out) if bs else torch.empty_like(out)  # d pre-activations
    dHs, Ks, dPs = _steps(dH, bs), _steps(K, bs), _steps(dP, bs)
    dHp = _prev_steps(dH[0], dH, bs)  # dHp[t] is dH[t-1] (live rows of step t)
    for t in range(len(dHs) - 1, 0, -1):
        torch.mul(dHs[t], Ks[t], out=dPs[t])
        dHp[t].addmm_(dPs[t], w_hh)  # dh_{t-1} += dP_t W_hh
    torch.mul(dHs[0], Ks[0], out=dPs[0])
    dh0 = dPs[0] @ w_hh
    H = out.shape[-1]
    dw = dP.view(-1, H).t() @ _shifted(h0, out).view(-1, H)  # (H, T*B) x (T*B, H)
    return dP, dh0, dw


def _gru_backward(saved, dH, bs, has_b_hh):
    h0, w_hh, out, gates, hg, _ = saved
    T, B, H = out.shape
    r, s, n = gates.chunk(3, -1)  # (T, B, H) each
    hg_n = hg[..., 2 * H:]  # γ z_prev (+ b_γ)
    h_prev = _shifted(h0, out)
    # the step Jacobians' factors: dpre_gate = dh * K_gate, for all T at once
    Kn = (1 - s) * (1 - n * n)  # candidate pre-activation
    Ks = (h_prev - n) * s * (1 - s)  # update gate pre-activation
    Kr = Kn * hg_n * r * (1 - r)  # reset gate pre-activation
    Kx = torch.stack((Kr, Ks, Kn), 2)  # (T, B, 3, H) input side
    Kh = torch.stack((Kr, Ks, Kn * r), 2)  # (T, B, 3, H) recurrent side
    dHG = (torch.zeros if bs else torch.empty)((T, B, 3, H), dtype=dH.dtype, device=dH.device)
    dH4 = dH.unsqueeze(2)  # (T, B, 1, H)
    dHs, dH4s, Khs, ss = _steps(dH, bs), _steps(dH4, bs), _steps(Kh, bs), _steps(s, bs)
    dHGs, dHGfs = _steps(dHG, bs), _steps(dHG.view(T, B, 3 * H), bs)
    dHp = _prev_steps(dH[0], dH, bs)
    for t in range(T - 1, 0, -1):
        torch.mul(dH4s[t], Khs[t], out=dHGs[t])  # d(recurrent pre-activations), (b, 3, H)
        dHp[t].addcmul_(dHs[t], ss[t]).addmm_(dHGfs[t], w_hh)  # dh_{t-1}
    torch.mul(dH4s[0], Khs[0], out=dHGs[0])
    dh0 = torch.addmm(dHs[0] * ss[0], dHGfs[0], w_hh)
    dxg = (dH4 * Kx).view(T, B, 3 * H)
    dHG = dHG.view(-1, 3 * H)
    dw = dHG.t() @ h_prev.view(-1, H)  # (3H, T*B) x (T*B, H)
    db = dHG.sum(0) if has_b_hh else None
    return dxg, dh0, dw, db


def _lstm_backward(saved, dH, d_cn, bs):
    h0, c0, w_hh, out, gates, C, tC, _ = saved
    T, B, H = out.shape
    i, f, g, o = gates.chunk(4, -1)  # (T, B, H) each
    # the step Jacobians' factors, for all T at once
    Kc = o * (1 - tC * tC)  # dC_t += dh_t * Kc
    Kifg = torch.stack((g * i * (1 - i), _shifted(c0, C) * f * (1 - f), i * (1 - g * g)), 2)
    Ko = tC * o * (1 - o)  # d o-pre-activation = dh_t * Ko
    dG = (torch.zeros if bs else torch.empty)((T, B, 4 * H), dtype=dH.dtype, device=dH.device)
    dG4 = dG.view(T, B, 4, H)
    dc = d_cn.clone(memory_format=torch.contiguous_format)  # dC carried back, (B, H)
    dcs = [dc] * T if bs is None else [dc[:b] for b in bs]
    dc3 = dc.unsqueeze(1)  # (B, 1, H)
    dc3s = [dc3] * T if bs is None else [dc3[:b] for b in bs]
    S = lambda buf: _steps(buf, bs)  # noqa: E731
    dHs, Kcs, Kifgs, Kos, fs = S(dH), S(Kc), S(Kifg), S(Ko), S(f)
    dGs, dG3s, dGos = S(dG), S(dG4[:, :, :3]), S(dG[..., 3 * H:])
    dHp = _prev_steps(dH[0], dH, bs)
    for t in range(T - 1, -1, -1):
        dh, dc_t = dHs[t], dcs[t]
        dc_t.addcmul_(dh, Kcs[t])  # dC_t
        torch.mul(dc3s[t], Kifgs[t], out=dG3s[t])  # d(i, f, C~ pre-activations)
        torch.mul(dh, Kos[t], out=dGos[t])  # d(o pre-activation)
        dc_t.mul_(fs[t])  # dC_{t-1}
        if t:
            dHp[t].addmm_(dGs[t], w_hh)  # dh_{t-1} += dG_t W_hh
    dh0 = dGs[0] @ w_hh
    dw = dG.view(-1, 4 * H).t() @ _shifted(h0, out).view(-1, H)  # (4H, T*B) x (T*B, H)
    return dG, dh0, dc, dw


# -- the engine -----------------------------------------------------------------------------
class FusedEngine:
    name = "fused"

    def why_not(self, layer, x, lengths):
        if layer.mode not in _MODES:
            return f"no fused kernels for the {layer.mode} cell"
        if x.device.type != "cpu":
            return (f"the fused engine runs on CPU; for {x.device.type} tensors use "
                    f"engine='native' (or 'reference' for the sigmoid RNN)")
        if x.dtype not in _DTYPES:
            return f"the fused engine takes float32 or float64, got {x.dtype}"
        return None

    def forward(self, layer, x, h0, c0, lengths):
        T, B, _ = x.shape
        mode = layer.mode
        perm = bs = None
        if lengths is not None:
            if bool((lengths == T).all()):
                lengths = None  # nothing is padded: the plain path is exact
            else:
                if not bool((lengths[:-1] >= lengths[1:]).all()):
                    # longest first, so that the live rows of every step are a prefix
                    perm = torch.argsort(lengths, descending=True, stable=True)
                    lengths = lengths.index_select(0, perm)
                    x = x.index_select(1, perm)
                    h0 = h0.index_select(1, perm)
                    c0 = c0.index_select(1, perm) if c0 is not None else None
                live = torch.arange(T, device=lengths.device).unsqueeze(1) < lengths  # (T, B)
                bs = live.sum(1).tolist()  # live rows per step
                # padding must be inert: the weight-gradient GEMMs read every row of x
                x = x.masked_fill(~live.unsqueeze(-1), 0)
        D = layer.num_directions
        h_n, c_n = [], []
        for l in range(layer.num_layers):
            outs = []
            for d in range(D):
                k = l * D + d
                w_ih, w_hh, b_ih, b_hh = stacked_weights(layer.cells[k])
                x_d = reverse_padded(x, lengths) if d else x
                x2 = x_d.reshape(T * B, x_d.shape[-1])  # (T*B, I)
                xg = torch.addmm(b_ih, x2, w_ih.t()) if b_ih is not None else x2 @ w_ih.t()
                out, h, c = _Recurrence.apply(mode, xg.view(T, B, -1), h0[k],
                                              c0[k] if c0 is not None else None,
                                              w_hh, b_hh, bs, lengths)
                outs.append(reverse_padded(out, lengths) if d else out)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if D == 1 else torch.cat(outs, -1)  # (T, B, D*H)
            if layer.dropout and layer.training and l < layer.num_layers - 1:
                if perm is None:
                    x = F.dropout(x, layer.dropout, training=True)
                else:  # draw the mask in the caller's batch order, as the other engines
                    mask = F.dropout(torch.ones_like(x), layer.dropout, training=True)
                    x = x * mask.index_select(1, perm)
        h_n = torch.stack(h_n)  # (D*L, B, H)
        c_n = torch.stack(c_n) if c0 is not None else None
        if perm is not None:
            inv = torch.argsort(perm)
            x = x.index_select(1, inv)
            h_n = h_n.index_select(1, inv)
            c_n = c_n.index_select(1, inv) if c_n is not None else None
        return x, h_n, c_n
