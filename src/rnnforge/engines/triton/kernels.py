"""The triton engine's two kernels: the recurrence forward and its backward in reverse time.

Imported only when the engine runs (``engine.load_kernels``), so that rnnforge imports
without triton. ``triton.jit`` decides at decoration time whether a kernel is compiled
or interpreted (``TRITON_INTERPRET=1``), so ``INTERPRETED`` records which these are.

Layouts (row-major, contiguous; G gates of H units stacked in the cell's ``GATES`` order):
``xg (T, B, G*H)`` float32, the input projection plus ``b_ih``; ``w (G*H, H)`` the
recurrent weights in the compute dtype; ``h (T+1, B, H)`` and ``c (T+1, B, H)``
float32 state sequences with the initial state at index 0; ``acts (T, B, 4*H)``
float32 saved activations (LSTM: i, f, C~, o; GRU: r, s, z~ and the reset product's
operand ``W_hn z_prev + b_hn``); ``dg (T, B, G*H)`` float32 recurrent gate gradients.

Program p owns the units ``[p*BH, (p+1)*BH)`` of every gate. It loads its slice of
``w`` once and keeps it on chip for all steps of its launch ``[t0, t1)``. Steps
are ordered by a grid barrier (``SYNC``: an atomic counter, release on arrival,
acquire while spinning; all programs must be co-resident, so the launcher keeps their
number at or below the SM count) or, with ``SYNC`` off, by the launch boundary (one
program, or one launch per step). The batch runs in blocks of ``BB`` rows.
"""

from __future__ import annotations

import triton
import triton.language as tl

MODES = {"rnn_tanh": 0, "rnn_sigmoid": 1, "lstm": 2, "gru": 3}


@triton.jit
def _sigmoid(x):
    # not tl.sigmoid: a jit function of triton.language, which the interpreter runs only when
    # triton itself was imported under TRITON_INTERPRET=1 (torch imports it with rnnforge)
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # tl has no tanh outside libdevice (which the interpreter lacks); exact in float32 to ~1 ulp of 1
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _dot(a, w, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    """``a (BB, HP) @ w (HP, BH)`` with float32 accumulation."""
    if UPCAST:  # w was upcast on load: float32 operands
        return tl.dot(a, w, input_precision="ieee", out_dtype=tl.float32)
    elif IEEE:
        return tl.dot(a, w, input_precision="ieee", out_dtype=tl.float32)
    else:  # half precision operands, as cuDNN: the state rounded for the product only
        return tl.dot(a.to(w.dtype), w, out_dtype=tl.float32)


@triton.jit
def _wtile(w_ptr, g, H, cols, k, cmask, kmask, COLS: tl.constexpr, UPCAST: tl.constexpr):
    """Gate g's (HP, BH) tile of W_hh^T restricted to this program's units: the rows
    ``g*H + cols`` (forward, ``COLS`` off) or the columns ``cols`` (backward, ``COLS``)."""
    if COLS:
        ptr = w_ptr + (g * H + k[:, None]) * H + cols[None, :]
    else:
        ptr = w_ptr + (g * H + cols[None, :]) * H + k[:, None]
    w = tl.load(ptr, mask=kmask[:, None] & cmask[None, :], other=0.0)
    if UPCAST:
        w = w.to(tl.float32)
    return w


@triton.jit
def _wtiles(w_ptr, H, cols, k, cmask, kmask, G: tl.constexpr, COLS: tl.constexpr, UPCAST: tl.constexpr):
    """The tiles of the G gates (``_wtile``), loaded once per kernel and kept on chip for every
    step; the tiles a cell has no gate for are the first one again (never read)."""
    w0 = _wtile(w_ptr, 0, H, cols, k, cmask, kmask, COLS, UPCAST)
    w1 = w0
    w2 = w0
    w3 = w0
    if G > 1:
        w1 = _wtile(w_ptr, 1, H, cols, k, cmask, kmask, COLS, UPCAST)
        w2 = _wtile(w_ptr, 2, H, cols, k, cmask, kmask, COLS, UPCAST)
    if G > 3:
        w3 = _wtile(w_ptr, 3, H, cols, k, cmask, kmask, COLS, UPCAST)
    return w0, w1, w2, w3


@triton.jit
def _grid_barrier(bar_ptr, target):
    tl.debug_barrier()  # every thread of this program has stored its part
    tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
    while tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu") < target:
        pass
    tl.debug_barrier()


@triton.jit
def forward_kernel(xg_ptr, w_ptr, bhh_ptr, h_ptr, c_ptr, acts_ptr, out_ptr, len_ptr, bar_ptr,
                   t0, t1, B, H,
                   MODE: tl.constexpr, G: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
                   BH: tl.constexpr, HAS_LEN: tl.constexpr, HAS_BHH: tl.constexpr,
                   SYNC: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    p = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = p * BH + tl.arange(0, BH)
    cmask = cols < H
    k = tl.arange(0, HP)
    kmask = k < H
    GH = G * H
    w0, w1, w2, w3 = _wtiles(w_ptr, H, cols, k, cmask, kmask, G, False, UPCAST)
    if HAS_BHH:
        bhh = tl.load(bhh_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    for t in range(t0, t1):
        for b0 in range(0, B, BB):
            rows = b0 + tl.arange(0, BB)
            rmask = rows < B
            m2 = rmask[:, None] & cmask[None, :]
            # the whole previous state (every program's units), then this program's part
            hp = tl.load(h_ptr + (t * B + rows[:, None]) * H + k[None, :],
                         mask=rmask[:, None] & kmask[None, :], other=0.0, cache_modifier=".cg")
            hp = hp.to(w0.dtype)  # once for the G products (a no-op in float32)
            own = (t * B + rows[:, None]) * H + cols[None, :]
            h_old = tl.load(h_ptr + own, mask=m2, other=0.0, cache_modifier=".cg")
            xg = xg_ptr + (t * B + rows[:, None]) * GH + cols[None, :]
            a0 = _dot(hp, w0, UPCAST, IEEE) + tl.load(xg, mask=m2, other=0.0)
            acts = acts_ptr + (t * B + rows[:, None]) * (4 * H) + cols[None, :]
            if MODE == 0:
                h_new = _tanh(a0)
            elif MODE == 1:
                h_new = _sigmoid(a0)
            elif MODE == 2:
                i = _sigmoid(a0)
                f = _sigmoid(_dot(hp, w1, UPCAST, IEEE) + tl.load(xg + H, mask=m2, other=0.0))
                g = _tanh(_dot(hp, w2, UPCAST, IEEE) + tl.load(xg + 2 * H, mask=m2, other=0.0))
                o = _sigmoid(_dot(hp, w3, UPCAST, IEEE) + tl.load(xg + 3 * H, mask=m2, other=0.0))
                c_old = tl.load(c_ptr + own, mask=m2, other=0.0)
                c_new = f * c_old + i * g
                h_new = o * _tanh(c_new)
                tl.store(acts, i, mask=m2)
                tl.store(acts + H, f, mask=m2)
                tl.store(acts + 2 * H, g, mask=m2)
                tl.store(acts + 3 * H, o, mask=m2)
            else:
                r = _sigmoid(a0)
                s = _sigmoid(_dot(hp, w1, UPCAST, IEEE) + tl.load(xg + H, mask=m2, other=0.0))
                hn = _dot(hp, w2, UPCAST, IEEE)
                if HAS_BHH:
                    hn = hn + bhh[None, :]
                n = _tanh(tl.load(xg + 2 * H, mask=m2, other=0.0) + r * hn)
                h_new = s * h_old + (1.0 - s) * n
                tl.store(acts, r, mask=m2)
                tl.store(acts + H, s, mask=m2)
                tl.store(acts + 2 * H, n, mask=m2)
                tl.store(acts + 3 * H, hn, mask=m2)
            out = h_new
            if HAS_LEN:  # a row past its end keeps its state and outputs zero
                live = (t < tl.load(len_ptr + rows, mask=rmask, other=0))[:, None]
                h_new = tl.where(live, h_new, h_old)
                out = tl.where(live, out, 0.0)
                if MODE == 2:
                    c_new = tl.where(live, c_new, c_old)
            nxt = ((t + 1) * B + rows[:, None]) * H + cols[None, :]
            tl.store(h_ptr + nxt, h_new, mask=m2)
            if MODE == 2:
                tl.store(c_ptr + nxt, c_new, mask=m2)
            tl.store(out_ptr + own, out.to(out_ptr.dtype.element_ty), mask=m2)
        if SYNC:
            _grid_barrier(bar_ptr, nprog * (t - t0 + 1))
        else:
            tl.debug_barrier()


@triton.jit
def _carry(tn, rows, rmask, cols, cmask, k, kmask, dg_ptr, dh_ptr, acts_ptr, len_ptr, w0, w1, w2, w3,
           B, H, MODE: tl.constexpr, G: tl.constexpr, HAS_LEN: tl.constexpr,
           UPCAST: tl.constexpr, IEEE: tl.constexpr):
    """The gradient reaching this program's units of the state before step ``tn``:
    ``dgates_tn W_hh[:, own]`` (every program's dgates_tn), plus the GRU's direct
    ``s * dh_tn``; a row past its end at ``tn`` passed its state through, so there it is
    ``dh_tn`` itself (``dh_ptr`` holds dh_tn)."""
    GH = G * H
    m2 = rmask[:, None] & cmask[None, :]
    full = (tn * B + rows[:, None]) * GH + k[None, :]
    fm = rmask[:, None] & kmask[None, :]
    acc = _dot(tl.load(dg_ptr + full, mask=fm, other=0.0, cache_modifier=".cg"), w0, UPCAST, IEEE)
    if G > 1:
        acc += _dot(tl.load(dg_ptr + full + H, mask=fm, other=0.0, cache_modifier=".cg"), w1, UPCAST, IEEE)
        acc += _dot(tl.load(dg_ptr + full + 2 * H, mask=fm, other=0.0, cache_modifier=".cg"), w2, UPCAST, IEEE)
    if G > 3:
        acc += _dot(tl.load(dg_ptr + full + 3 * H, mask=fm, other=0.0, cache_modifier=".cg"), w3, UPCAST, IEEE)
    dh = tl.load(dh_ptr + rows[:, None] * H + cols[None, :], mask=m2, other=0.0)
    if MODE == 3:
        s = tl.load(acts_ptr + (tn * B + rows[:, None]) * (4 * H) + H + cols[None, :], mask=m2, other=0.0)
        acc += dh * s
    if HAS_LEN:
        live = (tn < tl.load(len_ptr + rows, mask=rmask, other=0))[:, None]
        acc = tl.where(live, acc, dh)
    return acc


@triton.jit
def backward_kernel(dout_ptr, w_ptr, h_ptr, c_ptr, acts_ptr, dg_ptr, dn_ptr, dh_ptr, dc_ptr,
                    len_ptr, bar_ptr, t0, t1, T, FINISH, B, H,
                    MODE: tl.constexpr, G: tl.constexpr, BB: tl.constexpr, HP: tl.constexpr,
                    BH: tl.constexpr, HAS_LEN: tl.constexpr, SYNC: tl.constexpr,
                    UPCAST: tl.constexpr, IEEE: tl.constexpr):
    """Steps ``t1-1`` down to ``t0``, then (``FINISH``) the gradient of the initial state.

    ``dh`` (B, H) holds the gradient of the final state on entry to step T-1, then dh_t
    (the total gradient reaching h_t) after step t, and dh0 after ``FINISH``; ``dc``
    likewise for the LSTM's C. Each program reads and writes only its own units of them,
    so they carry one launch's result to the next; step t starts from dgates_{t+1},
    which every program wrote before the barrier (or launch boundary) behind it."""
    p = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = p * BH + tl.arange(0, BH)
    cmask = cols < H
    k = tl.arange(0, HP)
    kmask = k < H
    GH = G * H
    w0, w1, w2, w3 = _wtiles(w_ptr, H, cols, k, cmask, kmask, G, True, UPCAST)
    # one pass more with FINISH: t = -1 forms dh0 (one inlined copy of _carry, not two)
    for step in range(t1 - t0 + FINISH):
        t = t1 - 1 - step
        for b0 in range(0, B, BB):
            rows = b0 + tl.arange(0, BB)
            rmask = rows < B
            m2 = rmask[:, None] & cmask[None, :]
            own = (t * B + rows[:, None]) * H + cols[None, :]
            state = rows[:, None] * H + cols[None, :]
            if t + 1 < T:
                carry = _carry(t + 1, rows, rmask, cols, cmask, k, kmask, dg_ptr, dh_ptr, acts_ptr,
                               len_ptr, w0, w1, w2, w3, B, H, MODE, G, HAS_LEN, UPCAST, IEEE)
            else:
                carry = tl.load(dh_ptr + state, mask=m2, other=0.0)
            if t >= 0:
                if HAS_LEN:
                    live = (t < tl.load(len_ptr + rows, mask=rmask, other=0))[:, None]
                else:
                    live = (rows < B)[:, None]
                # an output past a row's end is a constant zero: its gradient goes nowhere
                dh = tl.load(dout_ptr + own, mask=m2 & live, other=0.0) + carry
                dg = dg_ptr + (t * B + rows[:, None]) * GH + cols[None, :]
                acts = acts_ptr + (t * B + rows[:, None]) * (4 * H) + cols[None, :]
                if MODE == 0:
                    h = tl.load(h_ptr + own + B * H, mask=m2, other=0.0)
                    tl.store(dg, tl.where(live, dh * (1.0 - h * h), 0.0), mask=m2)
                elif MODE == 1:
                    h = tl.load(h_ptr + own + B * H, mask=m2, other=0.0)
                    tl.store(dg, tl.where(live, dh * h * (1.0 - h), 0.0), mask=m2)
                elif MODE == 2:
                    i = tl.load(acts, mask=m2, other=0.0)
                    f = tl.load(acts + H, mask=m2, other=0.0)
                    g = tl.load(acts + 2 * H, mask=m2, other=0.0)
                    o = tl.load(acts + 3 * H, mask=m2, other=0.0)
                    c_old = tl.load(c_ptr + own, mask=m2, other=0.0)
                    tc = _tanh(tl.load(c_ptr + own + B * H, mask=m2, other=0.0))
                    dc_in = tl.load(dc_ptr + state, mask=m2, other=0.0)
                    dc = dc_in + dh * o * (1.0 - tc * tc)
                    tl.store(dg, tl.where(live, dc * g * i * (1.0 - i), 0.0), mask=m2)
                    tl.store(dg + H, tl.where(live, dc * c_old * f * (1.0 - f), 0.0), mask=m2)
                    tl.store(dg + 2 * H, tl.where(live, dc * i * (1.0 - g * g), 0.0), mask=m2)
                    tl.store(dg + 3 * H, tl.where(live, dh * tc * o * (1.0 - o), 0.0), mask=m2)
                    tl.store(dc_ptr + state, tl.where(live, dc * f, dc_in), mask=m2)
                else:
                    r = tl.load(acts, mask=m2, other=0.0)
                    s = tl.load(acts + H, mask=m2, other=0.0)
                    n = tl.load(acts + 2 * H, mask=m2, other=0.0)
                    hn = tl.load(acts + 3 * H, mask=m2, other=0.0)
                    h_old = tl.load(h_ptr + own, mask=m2, other=0.0)
                    dn = dh * (1.0 - s) * (1.0 - n * n)
                    tl.store(dn_ptr + own, tl.where(live, dn, 0.0), mask=m2)
                    tl.store(dg, tl.where(live, dn * hn * r * (1.0 - r), 0.0), mask=m2)
                    tl.store(dg + H, tl.where(live, dh * (h_old - n) * s * (1.0 - s), 0.0), mask=m2)
                    tl.store(dg + 2 * H, tl.where(live, dn * r, 0.0), mask=m2)
                tl.store(dh_ptr + state, dh, mask=m2)  # read by this program only, at step t-1
            else:  # dh0: what reaches the initial state through step 0
                tl.store(dh_ptr + state, carry, mask=m2)
        if SYNC:
            if t >= 0:
                _grid_barrier(bar_ptr, nprog * (step + 1))
        else:
            tl.debug_barrier()


INTERPRETED = type(forward_kernel).__name__ == "InterpretedFunction"
