"""The fused engine: our own forward and backward through time, in PyTorch ops, on CPU.

Per layer and direction (shape symbols as in layers.py; G gates, G*H stacked
pre-activations in the cell's ``GATES`` order, which is torch.nn's):

forward (``_Recurrence.forward``)
    xg = x W_ih^T + b, one GEMM for all T steps, written straight into the gate
    buffer (T*B, G*H); then per step t one GEMM ``gates_t += h_{t-1} W_hh^T`` in
    place and the gate arithmetic as a handful of in-place / ``out=`` kernels
    (LSTM 8, GRU 7, RNN 2 kernels per step; no autograd graph is recorded).

backward (``_Recurrence.backward``, hand-written, run once per layer-direction)
    The gate activations are saved by the forward. Every factor of the step
    Jacobians that does not depend on the incoming gradient (``σ'``, ``tanh'``,
    products of saved gates) is computed for all T steps at once, in a few large
    elementwise kernels, before the loop. The loop then carries only what is
    truly sequential -- dh (and dC for the LSTM) -- with one recurrent GEMM
    ``dh_{t-1} += dgates_t W_hh`` and 1 to 4 small kernels per step
    (LSTM 5, GRU 4, RNN 2). The gradients of the weights and of the input are
    single GEMMs over all steps: ``dW_hh = dgates^T H_prev`` as
    (G*H, T*B) x (T*B, H), ``dW_ih = dgates^T X``, ``dx = dgates W_ih``.

At batch sizes up to ``C_LOOP_MAX_BATCH`` (64) and widths up to
``C_LOOP_MAX_HIDDEN`` (256 units) the two loops over time (not
the big ops around them) run in C instead (``rnnforge/_ckernels/rnn.c``, built
on first use): one register-blocked product and the gate arithmetic per step,
the LSTM's Jacobian factors formed inside its backward loop, the RNN's input
projection inside its forward loop and its backward straight from the output
gradients. With several threads, 4-row blocks of the batch each run the whole
loop over time on torch's OpenMP threads. Without a C compiler the torch-op
loops above run, and a warning says so once.

Large scratch buffers come from ``WORKSPACE`` (reused between calls: fresh
pages cost a page fault each).

Variable lengths run the way packed sequences do: the batch is sorted by
length (longest first), so at step t only the first ``b_t`` rows are live and
every kernel works on that prefix. Rows past their end are never touched, so
their state is frozen, their outputs stay zero and their gradients are zero.

Gradients reach the named parameters because the stacked weights are built
with ``torch.cat`` outside the custom Function. Double backward is not
supported: asking for it (``create_graph=True``) raises a clear error.
"""

from __future__ import annotations

import math
import threading
import warnings

import torch
import torch.nn.functional as F

from .. import _ckernels as _ck
from .reference import reverse_padded

_MODES = ("lstm", "gru", "rnn_tanh", "rnn_sigmoid")
_DTYPES = (torch.float32, torch.float64)


# -- packing the named parameters (differentiably) --------------------------------------
def stacked_weights(cell):
    """``(w_ih (G*H, I), w_hh (G*H, H), b_ih (G*H,) or None, b_hh (H,) or None)``.

    Built with ``torch.cat`` from the cell's named parameters in ``GATES`` order,
    so autograd routes the stacked gradients back to each named parameter.
    ``b_hh`` is the GRU's recurrent candidate bias ``b_gamma`` (inside the reset
    product); the other cells have no bias inside the recurrence.
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
    rec = [getattr(cell, g.recurrent_bias) for g in gates if g.recurrent_bias]
    return w_ih, w_hh, b_ih, (rec[0] if rec else None)


# -- workspace: large scratch buffers kept between calls ------------------------------------
class Workspace:
    """Scratch buffers reused from one call to the next.

    Why: a fresh multi-megabyte tensor costs a page fault per 4 KiB page on
    first touch (measured here: filling a fresh 32 MiB buffer takes ~24 ms, a
    reused one ~6 ms), and a forward+backward of the fused engine touches
    hundreds of MiB of gates and gradients. A buffer is handed out again only
    when nothing else holds its memory -- no view, no autograd node that saved
    it -- which ``torch._C._storage_Use_Count`` tells exactly. Buffers returned
    to callers (outputs, gradients) never come from here. ``max_bytes`` caps
    what is kept idle; ``clear()`` drops everything.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._bufs: dict[tuple, list[torch.Tensor]] = {}
        self._lock = threading.Lock()
        self._count = getattr(torch._C, "_storage_Use_Count", None)
        self._lone = self._uses(torch.empty(1)) if self._count is not None else None

    def _uses(self, t: torch.Tensor) -> int:
        return self._count(t.untyped_storage()._cdata)

    def take(self, shape, like: torch.Tensor, zero: bool = False) -> torch.Tensor:
        """An uninitialised (or zeroed) tensor of ``shape``, dtype and device of ``like``."""
        numel = math.prod(shape)
        if self._count is None or numel < 4096:  # small: the allocator's own cache is fine
            return (torch.zeros if zero else torch.empty)(shape, dtype=like.dtype, device=like.device)
        # inference-mode tensors cannot be updated in place outside inference mode: keep apart
        key = (numel, like.dtype, like.device, torch.is_inference_mode_enabled())
        with self._lock:
            bufs = self._bufs.setdefault(key, [])
            for base in bufs:
                if self._uses(base) == self._lone:
                    out = base.view(shape)
                    break
            else:
                base = torch.empty(numel, dtype=like.dtype, device=like.device)
                bufs.append(base)
                out = base.view(shape)
                self._trim()
        return out.zero_() if zero else out

    def _trim(self) -> None:
        total = sum(b.numel() * b.element_size() for bs in self._bufs.values() for b in bs)
        for key in list(self._bufs):
            if total <= self.max_bytes:
                break
            keep = []
            for b in self._bufs[key]:
                if self._uses(b) == self._lone:
                    total -= b.numel() * b.element_size()
                else:
                    keep.append(b)
            self._bufs[key] = keep

    def clear(self) -> None:
        with self._lock:
            self._bufs.clear()


WORKSPACE = Workspace()


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


def _final(buf: torch.Tensor, lengths) -> torch.Tensor:
    """The value at each sequence's last real step, (B, H)."""
    if lengths is None:
        return buf[-1].clone()
    return buf[lengths - 1, torch.arange(buf.shape[1], device=buf.device)]


def _project(x, w_ih, b_ih, out):
    """``out (T*B, G*H) = x W_ih^T + b``: the input projection of every step, one GEMM."""
    x2 = x.reshape(-1, x.shape[-1])  # (T*B, I)
    if b_ih is None:
        torch.mm(x2, w_ih.t(), out=out)
    else:
        torch.addmm(b_ih, x2, w_ih.t(), out=out)


def _weight_grad(dG, first, seq):
    """``dW = sum_t dG_t^T h_{t-1}`` as one (G*H, T*B) x (T*B, H) GEMM (plus the t=0 rank-B term).

    ``first`` is the state entering step 0, ``seq`` (T, B, H) the states after each step.
    """
    GH, H = dG.shape[-1], seq.shape[-1]
    dw = dG[0].t() @ first  # (G*H, H)
    if dG.shape[0] > 1:
        dw.addmm_(dG[1:].reshape(-1, GH).t(), seq[:-1].reshape(-1, H))
    return dw


# -- the loops over time in C (batches up to 64) -------------------------------------------
# At small and moderate batch sizes a step is a small matrix product plus a few dozen
# elementwise operations, and one torch op per kernel (each a trip through the
# dispatcher and, with threads, the OpenMP pool) costs as much as the arithmetic. There
# the loops over time run in rnnforge/_ckernels/rnn.c on the same buffers; the big ops
# before and after them stay in torch. The batch limits are measured (BENCHMARKS.md,
# "C loops"; `bench_engines.py --parts loops`): forward+backward at H=128 and 256, 1 and
# 2 threads, the C loops against the torch-op loops: with 2 threads the C loops win at
# every batch measured (1.1x to 3.5x, B=1..64); with 1 thread they win or tie. Above
# H=256 the step's product, the C loops' own register-blocked one, falls behind MKL's:
# at H=512 (B=32) they lose 5-10% at 1 thread and 1.3-1.5x at 2 (the tanh RNN alone still
# wins there, 1.09x), at H=1024 9-16% and 1.75-1.8x (BENCHMARKS.md, "C loops beyond the
# first range"), so there the torch-op loops run.
C_LOOP_MAX_BATCH = {"lstm": 64, "gru": 64, "rnn": 64}
C_LOOP_MAX_HIDDEN = 256
_C_SUFFIX = {torch.float32: "_f32", torch.float64: "_f64"}
_warned = False


def _family(mode: str) -> str:
    return "rnn" if mode.startswith("rnn") else mode


def _in_c_range(family: str, batch: int, hidden: int) -> bool:
    return batch <= C_LOOP_MAX_BATCH[family] and hidden <= C_LOOP_MAX_HIDDEN


def runs_c_loops(mode: str, batch: int, hidden: int) -> bool:
    """Whether a ``mode`` layer of ``hidden`` units at this batch size runs its loops over time in C."""
    return _in_c_range(_family(mode), batch, hidden) and _ck.available("rnn")


def _c_loop(name: str, like: torch.Tensor, batch: int, hidden: int):
    """The C function ``rf_<name>_<dtype>`` (name: ``<family>_forward|backward``),
    or None where the torch loop runs (a batch above the family's entry in
    C_LOOP_MAX_BATCH or more units than C_LOOP_MAX_HIDDEN; or no C compiler,
    said once in a warning)."""
    global _warned
    if not _in_c_range(name.split("_")[0], batch, hidden):  # (fused runs on CPU only: why_not)
        return None
    try:
        lib = _ck.load("rnn")
    except _ck.KernelUnavailable as e:
        if not _warned:
            _warned = True
            warnings.warn(f"rnnforge fused engine: its compiled loops are unavailable ({e}); running "
                          "its torch-op loops, several times slower at small batches", RuntimeWarning,
                          stacklevel=2)
        return None
    return getattr(lib, f"rf_{name}{_C_SUFFIX[like.dtype]}")


def _threads_for(B: int) -> int:
    """OpenMP threads for a C loop over B rows: torch's count, one below 8 rows.
    The rows of a recurrence never meet, so each 4-row block runs the whole loop
    over time on whichever thread takes it (rnn_body.h, ROWS_IN_PARALLEL)."""
    n = torch.get_num_threads()
    return 1 if n <= 1 or B < 8 else n


def _call(fn, T: int, B: int, H: int, bs, *args) -> None:
    """Call a C loop on rows ``[0, B)`` (several threads: see ``_threads_for``).

    Tensors become data pointers, the list of live batch sizes an int64 array,
    None a NULL pointer; every array stays referenced here until the call
    returns. Inputs that are not contiguous are copied; the buffers written in
    place are always the engine's own contiguous ones."""
    keep = [None if bs is None else torch.tensor(bs, dtype=torch.int64)]
    for a in args:
        keep.append(a.contiguous() if torch.is_tensor(a) else a)
    ptrs = [a.data_ptr() if torch.is_tensor(a) else a for a in keep]
    n = _threads_for(B)
    fn(T, B, H, ptrs[0], 0, B if n == 1 else -n, *ptrs[1:])


# -- forward kernels ---------------------------------------------------------------------
# Each writes the input projection of all steps into its gate buffer with one GEMM, then
# adds the recurrent GEMM of each step in place (no copy of the projection per step).
def _rnn_forward(mode, x, w_ih, b_ih, h0, w_hh, bs):
    T, B, _ = x.shape
    H = h0.shape[-1]
    out = x.new_empty((T, B, H))  # pre-activations, then z: returned, so not from the workspace
    wt = w_hh.t().contiguous()  # (H, H): row-major W^T, the faster GEMM layout here
    loop = _c_loop("rnn_forward", x, B, H)
    if loop is not None:  # the input projection too, per row range (see rnn_body.h)
        _call(loop, T, B, H, bs, int(mode == "rnn_sigmoid"), h0, wt, out, x, x.shape[-1],
              w_ih.t(), b_ih)
        return out
    _project(x, w_ih, b_ih, out.view(T * B, H))
    act_ = torch.Tensor.sigmoid_ if mode == "rnn_sigmoid" else torch.Tensor.tanh_
    for h_t, o_t in zip(_prev_steps(h0, out, bs), _steps(out, bs)):
        act_(o_t.addmm_(h_t, wt))  # z = σ(α x + γ z_prev)
    return out


def _gru_forward(x, w_ih, b_ih, h0, w_hh, b_hh, bs):
    T, B, _ = x.shape
    H = h0.shape[-1]
    out = (x.new_zeros if bs else x.new_empty)((T, B, H))
    gates = WORKSPACE.take((T, B, 3 * H), x)  # α x + b, then the activations r, s, z~
    _project(x, w_ih, b_ih, gates.view(T * B, 3 * H))
    hg = WORKSPACE.take((T, B, 3 * H), x, zero=bool(bs))  # γ z_prev per gate (+ b_γ for z~)
    wt = w_hh.t().contiguous()  # (H, 3H): row-major W^T, the faster GEMM layout here
    loop = _c_loop("gru_forward", x, B, H)
    if loop is not None:
        _call(loop, T, B, H, bs, h0, wt, b_hh, gates, hg, out)
        return out, gates, hg
    S = lambda buf: _steps(buf, bs)  # noqa: E731
    for (h_prev, hg_t, hg_rs, hg_n, g_rs, r, s, g_n, o_t) in zip(
            _prev_steps(h0, out, bs), S(hg), S(hg[..., :2 * H]), S(hg[..., 2 * H:]),
            S(gates[..., :2 * H]), S(gates[..., :H]), S(gates[..., H:2 * H]),
            S(gates[..., 2 * H:]), S(out)):
        torch.mm(h_prev, wt, out=hg_t)
        if b_hh is not None:
            hg_n.add_(b_hh)  # b_γ sits inside the reset product
        g_rs.add_(hg_rs).sigmoid_()  # r, s
        g_n.addcmul_(r, hg_n).tanh_()  # z~ = tanh(α x + r ⊙ (γ z_prev))
        torch.lerp(g_n, h_prev, s, out=o_t)  # z = s ⊙ z_prev + (1 - s) ⊙ z~
    return out, gates, hg


def _lstm_forward(x, w_ih, b_ih, h0, c0, w_hh, bs):
    T, B, _ = x.shape
    H = h0.shape[-1]
    out = (x.new_zeros if bs else x.new_empty)((T, B, H))
    gates = WORKSPACE.take((T, B, 4 * H), x)  # projections, then the activations i, f, C~, o
    _project(x, w_ih, b_ih, gates.view(T * B, 4 * H))
    C = WORKSPACE.take((T, B, H), x, zero=bool(bs))
    tC = WORKSPACE.take((T, B, H), x, zero=bool(bs))  # tanh(C)
    wt = w_hh.t().contiguous()  # (H, 4H): row-major W^T, the faster GEMM layout here
    loop = _c_loop("lstm_forward", x, B, H)
    if loop is not None:
        _call(loop, T, B, H, bs, h0, c0, wt, gates, C, tC, out)
        return out, gates, C, tC
    S = lambda buf: _steps(buf, bs)  # noqa: E731
    for (h_prev, c_prev, g_t, g_if, g_g, g_o, i, f, c_t, tc_t, o_t) in zip(
            _prev_steps(h0, out, bs), _prev_steps(c0, C, bs), S(gates),
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


class _Recurrence(torch.autograd.Function):
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
            out, gates, C, tC = _lstm_forward(x, w_ih, b_ih, h0, c0, w_hh, bs)
            ctx.save_for_backward(x, w_ih, h0, c0, w_hh, out, gates, C, tC, lengths)
            return out, _final(out, lengths), _final(C, lengths)
        if mode == "gru":
            out, gates, hg = _gru_forward(x, w_ih, b_ih, h0, w_hh, b_hh, bs)
            ctx.save_for_backward(x, w_ih, h0, w_hh, out, gates, hg, lengths)
        else:
            out = _rnn_forward(mode, x, w_ih, b_ih, h0, w_hh, bs)
            if bs:  # the projection filled every row: outputs past the end are zero
                T = out.shape[0]
                out.masked_fill_(torch.arange(T).unsqueeze(1).ge(lengths).unsqueeze(-1), 0)
            ctx.save_for_backward(x, w_ih, h0, w_hh, out, lengths)
        return out, _final(out, lengths), x.new_empty(0)

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
            # the RNN without padding: the loop starts from d_out itself (no dH buffer, see below)
            dG, dh0, dw_hh = _rnn_backward_direct(mode, saved[2:-1], d_out, d_hn)
            return _Recurrence._input_grads(ctx, dG, x, w_ih, T, B) + (dh0, None, dw_hh, None, None, None)
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
            dG, dh0, dc0, dw_hh = _lstm_backward(saved[2:-1], dH, d_cn, bs)
            db_hh = None
        elif mode == "gru":
            dG, dh0, dw_hh, db_hh = _gru_backward(saved[2:-1], dH, bs, ctx.has_b_hh)
            dc0 = None
        else:
            dG, dh0, dw_hh = _rnn_backward(mode, saved[2:-1], dH, bs)
            dc0 = db_hh = None
        return _Recurrence._input_grads(ctx, dG, x, w_ih, T, B) + (dh0, dc0, dw_hh, db_hh, None, None)

    @staticmethod
    def _input_grads(ctx, dG, x, w_ih, T, B):
        """``(None, dx, dw_ih, db_ih)``: the input projection's gradients, one GEMM each over all T*B rows."""
        dG2 = dG.view(T * B, -1)  # (T*B, G*H)
        need = ctx.needs_input_grad
        dx = (dG2 @ w_ih).view(T, B, -1) if need[1] else None
        dw_ih = dG2.t() @ x.reshape(T * B, -1) if need[2] else None
        db_ih = dG2.sum(0) if ctx.has_b_ih and need[3] else None
        return None, dx, dw_ih, db_ih


def _one(like: torch.Tensor) -> torch.Tensor:
    """A 0-dim 1 of ``like``'s dtype: ``addcmul(1, a, a, value=-1)`` is ``1 - a^2`` in one pass."""
    return torch.ones((), dtype=like.dtype, device=like.device)


# -- backward kernels: return the gradient of the gate pre-activations dG (T, B, G*H) ----
def _rnn_backward(mode, saved, dH, bs):
    h0, w_hh, out = saved
    T, B, H = out.shape
    # d pre-activation / d h_t for all steps at once, then times dH_t in the loop
    dP = WORKSPACE.take((T, B, H), out, zero=bool(bs))
    K = WORKSPACE.take((T, B, H), out)
    if mode == "rnn_sigmoid":
        torch.addcmul(out, out, out, value=-1, out=K)  # z (1 - z) = z - z^2, one pass
    else:
        torch.addcmul(_one(out), out, out, value=-1, out=K)  # 1 - z^2, one pass
    loop = _c_loop("rnn_backward", out, B, H)
    if loop is not None:
        _call(loop, T, B, H, bs, w_hh, K, dH, dP)
    else:
        dHs, Ks, dPs = _steps(dH, bs), _steps(K, bs), _steps(dP, bs)
        dHp = _prev_steps(dH[0], dH, bs)  # dHp[t] is dH[t-1] (live rows of step t)
        for t in range(T - 1, 0, -1):
            dHp[t].addmm_(torch.mul(dHs[t], Ks[t], out=dPs[t]), w_hh)  # dh_{t-1} += dP_t W_hh
    torch.mul(dH[0], K[0], out=dP[0])  # t = 0: every row is live (lengths are at least 1)
    dh0 = dP[0] @ w_hh
    return dP, dh0, _weight_grad(dP, h0, out)


def _rnn_backward_direct(mode, saved, d_out, d_hn):
    """``_rnn_backward`` without padding and without the (T, B, H) buffer dH.

    The gradient reaching h_t is ``d_out_t + dP_{t+1} W_hh`` (``+ d_hn`` at the
    last step); one ``addmm`` per step writes it into a small (B, H) buffer that
    stays in cache, and ``dP_t`` is it times the saved Jacobian factor. Same
    operations and rounding as the dH loop, less memory traffic: no copy of
    d_out (often an expanded tensor) into dH, and per step two (B, H) slices
    read and one written instead of three read and two written (measured at
    T=256, B=32, I=128, H=256: the loop 9.1 -> 8.2 ms, the whole forward plus
    backward 42.3 -> 40.9 ms; BENCHMARKS.md, issue 6).
    """
    h0, w_hh, out = saved
    T, B, H = out.shape
    dP = WORKSPACE.take((T, B, H), out)
    loop = _c_loop("rnn_backward_direct", out, B, H)
    if loop is not None:  # forms f'(z) itself, dP is its own scratch
        _call(loop, T, B, H, None, int(mode == "rnn_sigmoid"), w_hh, out, d_out, d_hn, dP)
        return dP, dP[0] @ w_hh, _weight_grad(dP, h0, out)
    K = WORKSPACE.take((T, B, H), out)
    if mode == "rnn_sigmoid":
        torch.addcmul(out, out, out, value=-1, out=K)  # z (1 - z) = z - z^2, one pass
    else:
        torch.addcmul(_one(out), out, out, value=-1, out=K)  # 1 - z^2, one pass
    g = torch.empty((B, H), dtype=out.dtype, device=out.device)
    dOs, Ks, dPs = d_out.unbind(0), K.unbind(0), dP.unbind(0)
    torch.mul(torch.add(dOs[-1], d_hn, out=g), Ks[-1], out=dPs[-1])
    for t in range(T - 2, -1, -1):
        torch.mul(torch.addmm(dOs[t], dPs[t + 1], w_hh, out=g), Ks[t], out=dPs[t])  # dh_t, dP_t
    dh0 = dP[0] @ w_hh
    return dP, dh0, _weight_grad(dP, h0, out)


def _gru_backward(saved, dH, bs, has_b_hh):
    h0, w_hh, out, gates, hg = saved
    T, B, H = out.shape
    r, s, n = gates.chunk(3, -1)  # (T, B, H) each
    hg_n = hg[..., 2 * H:]  # γ z_prev (+ b_γ)
    # the step Jacobians' factors, d pre-activation = dh * K, for all T at once
    Kx = WORKSPACE.take((T, B, 3, H), out)  # input side: r, s, z~
    Kr, Ks, Kn = Kx.unbind(2)
    torch.addcmul(_one(n), n, n, value=-1, out=Kn)  # 1 - z~^2
    Kn.addcmul_(Kn, s, value=-1)  # (1 - s)(1 - z~^2): candidate
    torch.sub(out[:-1], n[1:], out=Kr[1:])  # Kr holds z_prev - z~ for a moment (no temporary)
    torch.sub(h0, n[0], out=Kr[0])
    torch.addcmul(s, s, s, value=-1, out=Ks).mul_(Kr)  # s(1 - s)(z_prev - z~): update
    torch.mul(Kn, hg_n, out=Kr).mul_(r)
    Kr.addcmul_(Kr, r, value=-1)  # (1 - s)(1 - z~^2) ⊙ (γz + b_γ) ⊙ r(1 - r): reset
    # recurrent side: the same factors, but the candidate's is multiplied by r (applied per step)
    dHG = WORKSPACE.take((T, B, 3, H), out, zero=bool(bs))
    dH4 = dH.unsqueeze(2)  # (T, B, 1, H)
    loop = _c_loop("gru_backward", out, B, H)
    if loop is not None:
        _call(loop, T, B, H, bs, w_hh, Kx, gates, dH, dHG)
    else:
        S = lambda buf: _steps(buf, bs)  # noqa: E731
        # an explicit expand makes the per-step broadcast multiply ~25% faster here than (b, 1, H)
        dHs, dH4s, Kxs, ss, rs = S(dH), S(dH4.expand(T, B, 3, H)), S(Kx), S(s), S(r)
        dHGs, dHGns, dHGfs = S(dHG), S(dHG[:, :, 2]), S(dHG.view(T, B, 3 * H))
        dHp = _prev_steps(dH[0], dH, bs)
        for t in range(T - 1, 0, -1):
            torch.mul(dH4s[t], Kxs[t], out=dHGs[t])  # d(r, s, z~ pre-activations), (b, 3, H)
            dHGns[t].mul_(rs[t])  # the candidate's recurrent product sits inside r ⊙ (.)
            dHp[t].addcmul_(dHs[t], ss[t]).addmm_(dHGfs[t], w_hh)  # dh_{t-1}
    # t = 0, where every row is live (lengths are at least 1)
    torch.mul(dH4[0], Kx[0], out=dHG[0])
    dHG[0, :, 2].mul_(r[0])
    dh0 = torch.addmm(dH[0] * s[0], dHG[0].view(B, 3 * H), w_hh)
    dw = _weight_grad(dHG.view(T, B, 3 * H), h0, out)
    db = dHG[:, :, 2].sum((0, 1)) if has_b_hh else None  # only z~ has a recurrent bias
    # input side: r and s are the same; the candidate's is dh ⊙ Kn (no r): reuse dHG's memory
    torch.mul(dH, Kn, out=dHG[:, :, 2])  # Kn is a view of Kx: the input-side factor
    dG = dHG.view(T, B, 3 * H)
    return dG, dh0, dw, db


def _lstm_backward(saved, dH, d_cn, bs):
    h0, c0, w_hh, out, gates, C, tC = saved
    T, B, H = out.shape
    dG = WORKSPACE.take((T, B, 4 * H), out, zero=bool(bs))
    dc = d_cn.clone(memory_format=torch.contiguous_format)  # dC carried back, (B, H)
    loop = _c_loop("lstm_backward", out, B, H)
    if loop is not None:  # forms the Jacobian factors per element itself
        _call(loop, T, B, H, bs, w_hh, gates, C, tC, c0, dH, dc, dG)
        return dG, dG[0] @ w_hh, dc, _weight_grad(dG, h0, out)  # every row is live at t = 0
    i, f, g, o = gates.chunk(4, -1)  # (T, B, H) each
    # the step Jacobians' factors, for all T at once
    K = WORKSPACE.take((T, B, 5, H), out)
    Ki, Kf, Kg, Ko, Kc = K.unbind(2)
    torch.addcmul(i, i, i, value=-1, out=Ki).mul_(g)  # d i-pre / dC = C~ i (1 - i)
    torch.addcmul(f, f, f, value=-1, out=Kf)  # f (1 - f) ...
    Kf[0].mul_(c0)
    Kf[1:].mul_(C[:-1])  # ... ⊙ C_prev
    torch.addcmul(_one(g), g, g, value=-1, out=Kg).mul_(i)  # d C~-pre / dC = i (1 - C~^2)
    torch.addcmul(o, o, o, value=-1, out=Ko).mul_(tC)  # d o-pre / dh = tanh(C) o (1 - o)
    torch.addcmul(_one(tC), tC, tC, value=-1, out=Kc).mul_(o)  # dC / dh = o (1 - tanh(C)^2)
    Kifg = K[:, :, :3]
    dG4 = dG.view(T, B, 4, H)
    dcs = [dc] * T if bs is None else [dc[:b] for b in bs]
    dc3 = dc.unsqueeze(1).expand(B, 3, H)  # (B, 3, H), stride 0 over the gates
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
    return dG, dh0, dc, _weight_grad(dG, h0, out)


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
                out, h, c = _Recurrence.apply(mode, x_d, w_ih, b_ih, h0[k],
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
