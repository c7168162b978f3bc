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
LSTM, more than a 2 MiB L2 cache). ``step_tokens`` removes a quarter of
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
                x = _lstm_gates(g_ifo, g_c, i, f, o, tc, c, c_out, h_out)
            return x, (h_n, c_n)
        if mode == "gru":
            for (wi, wh, b, bh), (g, hg, g_rs, hg_rs, r, s, g_n, hg_n), h, h_out in zip(
                    cache.layers, bufs, hs, hn):
                _project(x, wi, b, g, table, ids)
                table = None
                torch.mm(h, wh, out=hg)  # (B, 3H) γ z_prev
                x = _gru_gates(g_rs, hg_rs, r, s, g_n, hg_n, bh, h, h_out)
            return x, h_n
        act_ = torch.Tensor.sigmoid_ if mode == "rnn_sigmoid" else torch.Tensor.tanh_
        for (wi, wh, b, _), h, h_out in zip(cache.layers, hs, hn):
            _project(x, wi, b, h_out, table, ids)
            table = None
            x = act_(h_out.addmm_(h, wh))  # z = σ(α x + γ z_prev)
        return x, h_n


def _lstm_gates(g_ifo, g_c, i, f, o, tc, c, c_out, h_out):
    """The LSTM's step from its pre-activations (``g_ifo``, ``g_c`` views of one gate buffer;
    ``i, f, o`` views of ``g_ifo``): writes C to ``c_out`` (which may be ``c``) and returns z."""
    g_ifo.sigmoid_()
    g_c.tanh_()
    torch.mul(f, c, out=c_out).addcmul_(i, g_c)  # C = f ⊙ C_prev + i ⊙ C~
    torch.tanh(c_out, out=tc)
    return torch.mul(o, tc, out=h_out)  # z = o ⊙ tanh(C)


def _gru_gates(g_rs, hg_rs, r, s, g_n, hg_n, bh, h, h_out):
    """The GRU's step from its input (``g_*``) and recurrent (``hg_*``) pre-activations
    (``r, s`` views of ``g_rs``): returns z, written to ``h_out`` (which may be ``h``)."""
    g_rs.add_(hg_rs).sigmoid_()  # r, s
    if bh is not None:
        hg_n.add_(bh)
    g_n.addcmul_(r, hg_n).tanh_()  # z~ = tanh(α x + r ⊙ (γ z_prev + b_γ))
    return torch.lerp(g_n, h, s, out=h_out)  # z = s ⊙ z_prev + (1 - s) ⊙ z~


def _project(x, wi, b, out, table, ids) -> None:
    """``out = x W_ih^T + b``, or the cached table's rows ``ids`` for layer 0 of step_tokens."""
    if table is not None:
        torch.index_select(table, 0, ids, out=out)
    elif b is not None:
        torch.addmm(b, x, wi, out=out)
    else:
        torch.mm(x, wi, out=out)


def _token_table(layer, embedding, who: str) -> torch.Tensor:
    """The embedding's (V, I) weight, checked for stepping ``layer`` from token ids."""
    weight = getattr(embedding, "weight", embedding)
    if getattr(embedding, "max_norm", None) is not None:
        raise ValueError(f"{who}: an embedding with max_norm rescales its rows when "
                         "called; use layer.step(embedding(ids), state) instead")
    if weight.dim() != 2 or weight.shape[1] != layer.input_size:
        raise ValueError(f"{who}: embedding rows must have {layer.input_size} features "
                         f"(the layer's input_size), got weight shape {tuple(weight.shape)}")
    if layer.bidirectional:
        raise ValueError(f"{who}: a bidirectional layer cannot be stepped forward in time")
    return weight


def step_tokens(layer, embedding, ids: torch.Tensor, state=None):
    """One generation step from token ids: ``embedding(ids)`` into ``layer``, fast.

    Computes what ``layer.step(embedding(ids), state)`` computes, with layer 0's
    input projection read from the cached table ``E W_ih^T + b`` (see the module
    docstring). ``embedding`` is an ``nn.Embedding`` (without ``max_norm``) or its
    (V, I) weight; ``ids`` (B,) integer ids. Returns ``(z (B, H), state)``.
    """
    weight = _token_table(layer, embedding, "step_tokens")
    if ids.dim() != 1 or ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"step_tokens: ids must be a 1-D integer tensor (B,), got "
                         f"{tuple(ids.shape)} {ids.dtype}")
    x0 = weight.new_empty((ids.shape[0], layer.input_size))  # shape and dtype for the checks
    h0, c0 = layer._initial_state(state, ids.shape[0], True, x0)
    return step(layer, weight, h0, c0, ids=ids)


class TokenDecoder:
    """Generation at a fixed batch size: ``step(ids)`` -> logits, the state kept inside.

    ``TokenDecoder(layer, embedding, readout, state=None, batch=1)`` computes, step
    after step, what ``readout(step_tokens(layer, embedding, ids, state)[0])``
    computes while carrying ``state`` along, with the per-call work done once:
    the arguments are checked here, the state lives in buffers updated in place,
    every gate and the logits are written into buffers reused from step to step,
    and the readout's ``delta^T`` is cached row-major like the recurrent weights.
    ``readout`` is a module with ``delta`` (O, H) and ``b`` (O,) or None
    (``rnnforge.Readout``), or an ``nn.Linear``.

    Each ``step`` still checks that no parameter of the layer, the embedding or
    the readout has changed (``data_ptr`` and ``_version``, as ``packed``) and
    repacks if one has, so training between steps is seen, never silently missed.

    The logits that ``step`` returns are overwritten by the next step; copy them
    to keep them. ``state()`` returns a copy of the current state in ``hx`` form.

    Cache order (measured by ``benchmarks/bench_engines.py --parts generate``): at batch 1 each step
    streams every weight matrix once, and a 2-layer H=256 LSTM has three of
    1 MiB (layer 0's ``W_hh``, layer 1's ``W_ih`` and ``W_hh``) against a 2 MiB
    L2. In a fixed order each matrix is evicted just before it is read again.
    Every other step therefore starts with the recurrent products of layers >= 1
    (``b + z_prev W_hh^T``, which need only the previous state) and adds the
    input products after, so that step begins with the matrices the step before
    read last, still in cache. Same function; the two orders round the gate sums
    differently (float addition order), by about one unit in the last place.
    """

    #: alternate the order of the products every other step (see above); False keeps one order
    alternate = True

    def __init__(self, layer, embedding, readout, state=None, batch: int = 1) -> None:
        weight = _token_table(layer, embedding, "TokenDecoder")
        if not (isinstance(batch, int) and batch >= 1):
            raise ValueError(f"TokenDecoder: batch must be an integer >= 1, got {batch!r}")
        delta = getattr(readout, "delta", None)
        bias = getattr(readout, "b", None)
        if delta is None:  # nn.Linear
            delta, bias = getattr(readout, "weight", None), getattr(readout, "bias", None)
        if delta is None or delta.dim() != 2 or delta.shape[1] != layer.hidden_size:
            raise ValueError(f"TokenDecoder: readout must map {layer.hidden_size} features (the "
                             f"layer's hidden_size) to logits, like rnnforge.Readout or nn.Linear")
        self.layer, self.weight, self.delta, self.bias = layer, weight, delta, bias
        self.mode, self.batch = layer.mode, batch
        self.params = list(layer.parameters()) + [weight, delta] + ([bias] if bias is not None else [])
        x0 = weight.new_empty((batch, layer.input_size))  # shape, dtype and device for the checks
        h0, c0 = layer._initial_state(state, batch, True, x0)
        with torch.no_grad():
            self.h = h0.detach().clone(memory_format=torch.contiguous_format)  # (L, B, H)
            self.c = c0.detach().clone(memory_format=torch.contiguous_format) if c0 is not None else None
        L, H, O = layer.num_layers, layer.hidden_size, delta.shape[0]
        opts = {"dtype": weight.dtype, "device": weight.device}
        G = {"lstm": 4, "gru": 3}.get(self.mode, 1)
        self.gates = [torch.empty(batch, G * H, **opts) for _ in range(L)]
        self.hgates = ([torch.empty(batch, G * H, **opts) for _ in range(L)]  # GRU: γ z_prev
                       if self.mode == "gru" else None)
        self.tc = torch.empty(batch, H, **opts)
        self.logits = torch.empty(batch, O, **opts)
        if self.mode == "lstm":  # packed gate order i, f, o, C~ (see _pack_cell)
            self.views = [(g, g[:, :3 * H], g[:, 3 * H:], g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H])
                          for g in self.gates]
        elif self.mode == "gru":
            self.views = [(g, hg, g[:, :2 * H], hg[:, :2 * H], g[:, :H], g[:, H:2 * H], g[:, 2 * H:],
                           hg[:, 2 * H:]) for g, hg in zip(self.gates, self.hgates)]
        self.hs = [self.h[l] for l in range(L)]
        self.cs = [self.c[l] for l in range(L)] if self.c is not None else [None] * L
        self.n = 0
        self.key = None
        self._repack()

    def _repack(self) -> None:
        with torch.no_grad():
            cache = packed(self.layer)
            self.table = cache.input_table(self.weight)  # (V, G*H): layer 0's input projection
            self.layers = cache.layers
            self.delta_t = self.delta.detach().t().contiguous()  # (H, O) row-major
        self.key = _key(self.params)

    def state(self):
        """A copy of the current state in ``hx`` form."""
        if self.c is not None:
            return self.h.clone(), self.c.clone()
        return self.h.clone()

    def reset(self, state=None) -> None:
        """Start again from ``state`` (``hx`` form, or None for zeros), written into the
        state buffers in place (their addresses stay, as a captured CUDA graph needs)."""
        x0 = self.weight.new_empty((self.batch, self.layer.input_size))
        h0, c0 = self.layer._initial_state(state, self.batch, True, x0)
        with torch.no_grad():
            self.h.copy_(h0)
            if self.c is not None:
                self.c.copy_(c0)
        self.n = 0

    def fresh(self) -> bool:
        """Whether the packed weights still match every parameter; repacks when not
        (new buffers: a graph captured over the old ones must be captured again)."""
        if _key(self.params) == self.key:
            return True
        self._repack()
        return False

    def swapped(self, n: int) -> bool:
        """Whether step number ``n`` (0 for the first) takes the alternate product order."""
        return bool(self.alternate and n & 1 and len(self.layers) > 1)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ``ids`` (B,) int64, advance the state, return the logits (B, O) (a reused buffer)."""
        self.fresh()
        swap = self.swapped(self.n)
        self.n += 1
        return self.advance(ids, swap)

    def advance(self, ids: torch.Tensor, swap: bool) -> torch.Tensor:
        """``step`` without the parameter check and the step count: only tensor operations
        on buffers that stay in place, with no host synchronization, so that a CUDA graph
        can capture it (one graph per value of ``swap``)."""
        with torch.no_grad():
            if self.mode == "lstm":
                x = self._lstm(ids, swap)
            elif self.mode == "gru":
                x = self._gru(ids, swap)
            else:
                x = self._rnn(ids, swap)
            if self.bias is not None:
                return torch.addmm(self.bias, x, self.delta_t, out=self.logits)
            return torch.mm(x, self.delta_t, out=self.logits)

    def _recurrent_first(self, out) -> None:
        """``out[l] = b + z_prev W_hh^T`` (GRU: ``z_prev W_hh^T``) for layers >= 1, last first."""
        for l in range(len(self.layers) - 1, 0, -1):
            _, wh, b, _ = self.layers[l]
            if b is not None and self.mode != "gru":
                torch.addmm(b, self.hs[l], wh, out=out[l])
            else:
                torch.mm(self.hs[l], wh, out=out[l])

    def _preactivations(self, l, g, x, wi, wh, b, h, ids, swap):
        """``g = b + x W_ih^T + z_prev W_hh^T`` of layer ``l`` (LSTM and RNN): layer 0
        reads its input product from the token table; on a swapped step the
        recurrent products of layers >= 1 are already in ``g``."""
        if l == 0:
            torch.index_select(self.table, 0, ids, out=g)
            g.addmm_(h, wh)
        elif swap:
            g.addmm_(x, wi)
        else:
            _project(x, wi, b, g, None, None)
            g.addmm_(h, wh)

    def _lstm(self, ids, swap):
        if swap:
            self._recurrent_first(self.gates)
        x, tc = None, self.tc
        for l, ((wi, wh, b, _), (g, g_ifo, g_c, i, f, o), h, c) in enumerate(
                zip(self.layers, self.views, self.hs, self.cs)):
            self._preactivations(l, g, x, wi, wh, b, h, ids, swap)  # (B, 4H): i, f, o, C~
            x = _lstm_gates(g_ifo, g_c, i, f, o, tc, c, c, h)  # the new state in place
        return x

    def _gru(self, ids, swap):
        if swap:
            self._recurrent_first(self.hgates)
        x = None
        for l, ((wi, wh, b, bh), (g, hg, g_rs, hg_rs, r, s, g_n, hg_n), h) in enumerate(
                zip(self.layers, self.views, self.hs)):
            if l == 0:
                torch.index_select(self.table, 0, ids, out=g)
            else:
                _project(x, wi, b, g, None, None)
            if l == 0 or not swap:
                torch.mm(h, wh, out=hg)  # (B, 3H) γ z_prev
            x = _gru_gates(g_rs, hg_rs, r, s, g_n, hg_n, bh, h, h)  # the new state in place
        return x

    def _rnn(self, ids, swap):
        if swap:
            self._recurrent_first(self.gates)
        act = torch.sigmoid if self.mode == "rnn_sigmoid" else torch.tanh
        x = None
        for l, ((wi, wh, b, _), g, h) in enumerate(zip(self.layers, self.gates, self.hs)):
            self._preactivations(l, g, x, wi, wh, b, h, ids, swap)
            x = act(g, out=h)  # z = σ(α x + γ z_prev), the new state in place
        return x


class CudaGraph:
    """``fn()`` captured once as a CUDA graph; calling the object replays it.

    ``fn`` takes no arguments and works only on tensors that stay in place between
    calls (its static inputs and outputs). Capture needs one run beforehand on a side
    stream (lazy initialisation of cuBLAS and the allocator); that run changes the
    tensors in ``mutable``, so they are saved before it and restored after. ``share``,
    another ``CudaGraph``, lends its memory pool (graphs replayed one after another).
    """

    def __init__(self, fn, mutable, share: "CudaGraph | None" = None) -> None:
        saved = [t.clone() for t in mutable]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        for t, v in zip(mutable, saved):
            t.copy_(v)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=share.graph.pool() if share is not None else None):
            fn()

    def __call__(self) -> None:
        self.graph.replay()
