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

At batch 1 the step is bound by memory traffic, not arithmetic: every step
streams all weights through the core (4 MiB of float32 for a 2-layer H=256
LSTM, more than this machine's 2 MiB L2). ``step_tokens`` removes a quarter of
that for a character model: when layer 0's input is an embedding row, its
input projection ``E[id] W_ih^T + b`` is a row of the table ``E W_ih^T + b``
(V, G*H), computed once and cached like the weights, so layer 0 reads one table
row instead of the whole ``W_ih``. Same function, same numbers up to float
rounding order.
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
        self.table = None  # (embedding key, E W_ih^T + b) for step_tokens

    def input_table(self, weight: torch.Tensor) -> torch.Tensor:
        """Layer 0's input projection of every embedding row, (V, G*H), cached."""
        key = (weight.data_ptr(), weight._version, tuple(weight.shape))
        if self.table is None or self.table[0] != key:
            wi, _, b, _ = self.layers[0]
            with torch.no_grad():
                w = weight.detach()
                table = torch.addmm(b, w, wi) if b is not None else w @ wi  # (V, G*H)
            self.table = (key, table)
        return self.table[1]

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


def step(layer, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None, ids=None):
    """Advance every layer of ``layer`` one step: ``x (B, I)`` -> ``(z (B, H), state)``.

    ``h0``/``c0`` are (L, B, H). Returns the state in ``hx`` form. With ``ids``
    (B,), ``x`` is an embedding weight (V, I) and layer 0's input is its rows
    ``ids`` (see ``step_tokens``).
    """
    with torch.no_grad():
        mode = layer.mode
        B, H = h0.shape[1], layer.hidden_size
        cache = packed(layer)
        bufs = cache.buffers(B, h0, mode, H)
        table = None
        if ids is not None:
            table, x = cache.input_table(x), None
        h_n = torch.empty_like(h0)
        L = h0.shape[0]
        hs, hn = [h0[l] for l in range(L)], [h_n[l] for l in range(L)]  # cheaper than unbind here
        if mode == "lstm":
            c_n = torch.empty_like(c0)
            cs, cn = [c0[l] for l in range(L)], [c_n[l] for l in range(L)]
            for (wi, wh, b, _), (g, g_ifo, g_c, i, f, o, tc), h, c, h_out, c_out in zip(
                    cache.layers, bufs, hs, cs, hn, cn):
                _project(x, wi, b, g, table, ids)
                table = None
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
                _project(x, wi, b, g, table, ids)
                table = None
                torch.mm(h, wh, out=hg)  # (B, 3H) γ z_prev
                g_rs.add_(hg_rs).sigmoid_()  # r, s
                if bh is not None:
                    hg_n.add_(bh)
                g_n.addcmul_(r, hg_n).tanh_()  # z~ = tanh(α x + r ⊙ (γ z_prev + b_γ))
                x = torch.lerp(g_n, h, s, out=h_out)  # z = s ⊙ z_prev + (1 - s) ⊙ z~
            return x, h_n
        act_ = torch.Tensor.sigmoid_ if mode == "rnn_sigmoid" else torch.Tensor.tanh_
        for (wi, wh, b, _), h, h_out in zip(cache.layers, hs, hn):
            _project(x, wi, b, h_out, table, ids)
            table = None
            x = act_(h_out.addmm_(h, wh))  # z = σ(α x + γ z_prev)
        return x, h_n


def _project(x, wi, b, out, table, ids) -> None:
    """``out = x W_ih^T + b``, or the cached table's rows ``ids`` for layer 0 of step_tokens."""
    if table is not None:
        torch.index_select(table, 0, ids, out=out)
    elif b is not None:
        torch.addmm(b, x, wi, out=out)
    else:
        torch.mm(x, wi, out=out)


def step_tokens(layer, embedding, ids: torch.Tensor, state=None):
    """One generation step from token ids: ``embedding(ids)`` into ``layer``, fast.

    Computes what ``layer.step(embedding(ids), state)`` computes, with layer 0's
    input projection read from the cached table ``E W_ih^T + b`` (see the module
    docstring). ``embedding`` is an ``nn.Embedding`` (without ``max_norm``) or its
    (V, I) weight; ``ids`` (B,) integer ids. Returns ``(z (B, H), state)``.
    """
    weight = getattr(embedding, "weight", embedding)
    if getattr(embedding, "max_norm", None) is not None:
        raise ValueError("step_tokens: an embedding with max_norm rescales its rows when "
                         "called; use layer.step(embedding(ids), state) instead")
    if weight.dim() != 2 or weight.shape[1] != layer.input_size:
        raise ValueError(f"step_tokens: embedding rows must have {layer.input_size} features "
                         f"(the layer's input_size), got weight shape {tuple(weight.shape)}")
    if ids.dim() != 1 or ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"step_tokens: ids must be a 1-D integer tensor (B,), got "
                         f"{tuple(ids.shape)} {ids.dtype}")
    if layer.bidirectional:
        raise ValueError("step_tokens: a bidirectional layer cannot be stepped forward in time")
    x0 = weight.new_empty((ids.shape[0], layer.input_size))  # shape and dtype for the checks
    h0, c0 = layer._initial_state(state, ids.shape[0], True, x0)
    return step(layer, weight, h0, c0, ids=ids)
