"""One time step of a whole recurrent stack, fast: the generation path.

Generation calls the stack once per token with a tiny batch, so the cost is
the number of kernel launches and the Python around them, not arithmetic.
This path therefore

* packs each layer's named parameters once, transposed to row-major
  ``W^T`` for the GEMM, and keeps them until a parameter changes (the cache
  key is every parameter's ``data_ptr`` and ``_version``: an optimizer step,
  ``load_state_dict`` or ``.to()`` all change one of them);
* reorders the LSTM's gates to (i, f, o, C~) so one ``sigmoid_`` covers three
  gates;
* writes every gate into scratch buffers reused from step to step, and the new
  state straight into fresh ``(L, B, H)`` tensors (fresh, because callers may
  keep an old state, e.g. to branch);
* records no autograd graph.

Kernels per layer and step: LSTM 8, GRU 7, RNN 3.
"""

from __future__ import annotations

import weakref

import torch

_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _Packed:
    """A stack's weights in decode layout, and scratch buffers per (batch, dtype, device)."""

    def __init__(self, layer, params) -> None:
        self.params = params
        self.key = _key(params)
        self.layers = [_pack_cell(cell, layer.mode) for cell in layer.cells]
        self.scratch: dict[tuple, list] = {}

    def buffers(self, B: int, like: torch.Tensor, mode: str, H: int):
        key = (B, like.dtype, like.device, torch.is_inference_mode_enabled())
        bufs = self.scratch.get(key)
        if bufs is None:
            bufs = [_scratch(B, like, mode, H) for _ in self.layers]
            self.scratch = {key: bufs}  # keep one batch size: generation uses one at a time
        return bufs


def _key(params) -> tuple:
    return tuple((p.data_ptr(), p._version) for p in params)


def _pack_cell(cell, mode: str):
    """(W_ih^T (I, G*H), W_hh^T (H, G*H), b_ih or None, b_hh or None), row-major, detached."""
    gates = list(cell.GATES)
    if mode == "lstm":  # torch order (i, f, C~, o) -> (i, f, o, C~): one sigmoid over 3H
        gates = [gates[0], gates[1], gates[3], gates[2]]
    w_ih = torch.cat([getattr(cell, g.input).detach() for g in gates], 0)
    w_hh = torch.cat([getattr(cell, g.recurrent).detach() for g in gates], 0)
    b_ih = b_hh = None
    if cell.bias:
        b_ih = torch.cat([getattr(cell, g.bias).detach() for g in gates], 0)
        if mode == "gru":
            b_hh = getattr(cell, gates[2].recurrent_bias).detach()
    return w_ih.t().contiguous(), w_hh.t().contiguous(), b_ih, b_hh


def _scratch(B: int, like: torch.Tensor, mode: str, H: int):
    """Reused gate buffers and their per-gate views for one layer."""
    opts = {"dtype": like.dtype, "device": like.device}
    if mode == "lstm":
        g = torch.empty(B, 4 * H, **opts)
        return g, g[:, :3 * H], g[:, 3 * H:], g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], \
            torch.empty(B, H, **opts)
    if mode == "gru":
        g = torch.empty(B, 3 * H, **opts)
        hg = torch.empty(B, 3 * H, **opts)
        return g, hg, g[:, :2 * H], hg[:, :2 * H], g[:, :H], g[:, H:2 * H], g[:, 2 * H:], \
            hg[:, 2 * H:]
    return ()


def packed(layer) -> _Packed:
    """The layer's decode-layout weights, rebuilt when any parameter has changed."""
    entry = _CACHE.get(layer)
    if entry is not None and _key(entry.params) == entry.key:
        return entry
    params = list(layer.parameters())
    with torch.no_grad():
        entry = _Packed(layer, params)
    _CACHE[layer] = entry
    return entry


def step(layer, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None):
    """Advance every layer of ``layer`` one step: ``x (B, I)`` -> ``(z (B, H), state)``.

    ``h0``/``c0`` are (L, B, H). Returns the state in ``hx`` form.
    """
    with torch.no_grad():
        mode = layer.mode
        B, H = x.shape[0], layer.hidden_size
        cache = packed(layer)
        bufs = cache.buffers(B, x, mode, H)
        h_n = torch.empty_like(h0)
        L = h0.shape[0]
        hs, hn = [h0[l] for l in range(L)], [h_n[l] for l in range(L)]  # cheaper than unbind here
        if mode == "lstm":
            c_n = torch.empty_like(c0)
            cs, cn = [c0[l] for l in range(L)], [c_n[l] for l in range(L)]
            for (wi, wh, b, _), (g, g_ifo, g_c, i, f, o, tc), h, c, h_out, c_out in zip(
                    cache.layers, bufs, hs, cs, hn, cn):
                torch.addmm(b, x, wi, out=g) if b is not None else torch.mm(x, wi, out=g)
                g.addmm_(h, wh)  # (B, 4H): i, f, o, C~ pre-activations
                g_ifo.sigmoid_()
                g_c.tanh_()
                torch.mul(f, c, out=c_out).addcmul_(i, g_c)  # C = f ⊙ C_prev + i ⊙ C~
                torch.tanh(c_out, out=tc)
                x = torch.mul(o, tc, out=h_out)  # z = o ⊙ tanh(C)
            return x, (h_n, c_n)
        if mode == "gru":
            for (wi, wh, b, bh), (g, hg, g_rs, hg_rs, r, s, g_n, hg_n), h, h_out in zip(
                    cache.layers, bufs, hs, hn):
                torch.addmm(b, x, wi, out=g) if b is not None else torch.mm(x, wi, out=g)
                torch.mm(h, wh, out=hg)  # (B, 3H) γ z_prev
                g_rs.add_(hg_rs).sigmoid_()  # r, s
                if bh is not None:
                    hg_n.add_(bh)
                g_n.addcmul_(r, hg_n).tanh_()  # z~ = tanh(α x + r ⊙ (γ z_prev + b_γ))
                x = torch.lerp(g_n, h, s, out=h_out)  # z = s ⊙ z_prev + (1 - s) ⊙ z~
            return x, h_n
        act_ = torch.Tensor.sigmoid_ if mode == "rnn_sigmoid" else torch.Tensor.tanh_
        for (wi, wh, b, _), h, h_out in zip(cache.layers, hs, hn):
            torch.addmm(b, x, wi, out=h_out) if b is not None else torch.mm(x, wi, out=h_out)
            x = act_(h_out.addmm_(h, wh))  # z = σ(α x + γ z_prev)
        return x, h_n
