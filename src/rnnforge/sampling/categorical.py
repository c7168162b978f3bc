"""Ex2 for a finite set: the categorical quantile function.

For probabilities p_0..p_{V-1} with cumulative sums F_k = p_0 + ... + p_k (in
float64), the generalized inverse ``ppf(u) = min{k : F_k >= u F_{V-1}}`` maps
U ~ U(0, 1] to category k with probability p_k / sum(p) exactly (up to the
float64 resolution of F, about 1e-16 of the total): ``torch.searchsorted`` on
the float64 CDF does it for all rows at once. Categories with p_k = 0 are never
returned (u is drawn in (0, 1], and ``ppf(0)`` is the first category of positive
probability).

``sample_categorical`` is the one-call form the text generator uses per step;
``Categorical`` keeps the CDF table for repeated draws, ``cdf``, ``ppf``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ._base import F64, Sampler, UError, as_shape, check_u, midpoint_grid

__all__ = ["Categorical", "CategoricalStepper", "sample_categorical"]


def _check_options(temperature, top_k, top_p):
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}; "
                         "for greedy decoding take argmax of the logits instead")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None), got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must lie in (0, 1] (or None), got {top_p!r}")


def _bad_logits(x: torch.Tensor):
    """Raise the ValueError that says what is wrong with logits whose row maximum is not finite."""
    if bool(torch.isnan(x).any()):
        raise ValueError("logits contain NaN")
    raise ValueError("a row of logits is +inf or entirely -inf; logits must be finite "
                     "with at least one > -inf per row")


#: Relative tolerance of the top_p threshold: a prefix whose float64 mass is at least
#: ``top_p (1 - _TOP_P_RTOL)`` reaches top_p. It absorbs the rounding of weights computed in
#: float32 (exp, about 1e-7 relative) and of the summation, so that the same law given as
#: float32 logits, float64 logits or probabilities keeps the same set.
_TOP_P_RTOL = 1e-6


def _truncate(w: torch.Tensor, top_k, top_p) -> torch.Tensor:
    """Zero the weights ``w`` (N, V), >= 0, outside the top-k and the nucleus.

    The one truncation of the module (``sample_categorical``, ``CategoricalStepper`` and
    ``Categorical`` all come here). Categories are ranked by weight, larger first, and
    equal weights by index, lower first (the tie rule, for both options).

    top_k: keep the first k of that ranking (so of k-th place ties, the lowest indices).
    top_p: keep the shortest prefix of the ranking (after top_k) whose mass reaches
    top_p, i.e. category r is kept when the mass of the categories ranked before it
    is below ``top_p (1 - 1e-6)``; masses are float64 sums divided by the kept total.
    ``top_p = 1`` keeps every category of positive weight.
    """
    V = w.shape[-1]
    k = int(top_k) if top_k is not None and top_k < V else None
    p = top_p if top_p is not None and top_p < 1.0 else None
    if k is None and p is None:
        return w
    if p is None:
        # the k-th largest value, then the ties at it by index: cheaper than a full sort
        kth = torch.topk(w, k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
        above = w > kth
        tie = w == kth
        room = k - above.sum(-1, keepdim=True)
        keep = above | (tie & (torch.cumsum(tie, -1) <= room))
        return w.masked_fill(~keep, 0.0)
    srt, order = torch.sort(w, dim=-1, descending=True, stable=True)
    srt = srt.to(F64)
    if k is not None:
        srt[..., k:] = 0.0
    mass = srt / srt.sum(-1, keepdim=True)
    before = torch.cumsum(mass, dim=-1) - mass                # mass ranked strictly before each
    drop_sorted = before >= p * (1.0 - _TOP_P_RTOL)
    if k is not None:
        drop_sorted[..., k:] = True
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return w.masked_fill(drop, 0.0)


def _gather_last(table: torch.Tensor, k: torch.Tensor, batch_shape) -> torch.Tensor:
    """table (*batch, V), k (..., *batch) int64 -> table[..., k] of k's shape."""
    nb = len(batch_shape)
    k = torch.broadcast_to(k, torch.broadcast_shapes(k.shape, batch_shape))
    lead = k.shape[:k.dim() - nb]
    S = int(math.prod(lead)) if len(lead) else 1
    idx = k.reshape(S, *batch_shape).movedim(0, -1)                       # (*batch, S)
    return torch.gather(table, -1, idx).movedim(-1, 0).reshape(k.shape)


#: Categories per block of the two-level search (see _search); rows shorter than 4 blocks use one cumsum
_BLOCK = 64
#: Tables of at least this many weights (N * V) use the two-level search: below it the arrays stay
#: in cache and one cumsum is faster (measured, B x 50304 on the 2 MiB L2 CPU: crossover near B = 8)
_TWO_LEVEL_MIN = 1 << 19
#: Unshifted weights are kept when each row's total is at least V * e^-30 (see _draw)
_TINY = math.exp(-30.0)
#: Bytes of float32 + float64 weights per chunk of rows and thread, to stay in a 2 MiB L2 between
#: passes (measured at 16 x 50304, 1 thread, alternating with torch.multinomial: 2 rows per chunk
#: 1.13-1.30 ms, 4 rows 1.25-1.40, no chunks 1.40-1.56). More threads take bigger chunks: each has
#: its own L2, and fewer ops mean fewer waits for a descheduled thread on a shared machine.
_CHUNK_BYTES = 1_300_000


def _exp(x: torch.Tensor, temperature: float, m: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """``out = exp(x / T)``, or ``exp((x - m) / T)`` with the row maxima ``m``."""
    if m is None:
        if temperature == 1.0:
            return torch.exp(x, out=out)
        return torch.div(x, temperature, out=out).exp_()
    torch.sub(x, m, out=out)
    if temperature != 1.0:
        out.div_(temperature)
    return out.exp_()


def _weights(x: torch.Tensor, kind: str, temperature: float, m: torch.Tensor | None,
             out: torch.Tensor) -> torch.Tensor:
    """The weights of rows ``x``: ``exp(x / T)`` (``exp((x - m) / T)`` with row maxima ``m``)
    for logits; for probabilities ``x`` itself (no copy) or ``(x / m)^(1/T)``."""
    if kind == "logits":
        return _exp(x, temperature, m, out)
    if m is None:
        return x
    torch.div(x, m, out=out)
    return out if temperature == 1.0 else out.pow_(1.0 / temperature)


def _tables(x: torch.Tensor, kind: str, temperature: float, top_k, top_p, m: torch.Tensor | None):
    """Float64 tables of the weights (see ``_weights``) of rows ``x`` (N, V) for ``_search``.

    Short rows or small tables: ``(F, None)``, F the float64 cumulative sums (N, V). Otherwise:
    ``(w64, ends)``, the float64 weights zero-padded to whole blocks of 64 and
    ``ends`` (N, blocks + 1): 0, then the cumulative block sums. Without truncation the long-row
    tables are built a few rows at a time (exp in float32 into a small buffer,
    convert, block sums), so that each chunk stays in cache between the passes.
    """
    N, V = x.shape
    C = _BLOCK
    truncate = top_k is not None or top_p is not None
    short = V < 4 * C or N * V < _TWO_LEVEL_MIN
    if short or truncate:
        w = _weights(x, kind, temperature, m, torch.empty(x.shape, dtype=x.dtype, device=x.device))
        if truncate:
            w = _truncate(w, top_k, top_p)
        if short:
            return torch.cumsum(w, -1, dtype=F64), None     # (w may be the caller's x: not in place)
    nb = -(-V // C)
    w64 = torch.empty(N, nb * C, dtype=F64, device=x.device)
    if nb * C > V:
        w64[:, V:].zero_()
    ends = torch.empty(N, nb + 1, dtype=F64, device=x.device)  # 0, then the block sums
    ends[:, 0] = 0.0
    sums = ends[:, 1:]
    if truncate:
        w64[:, :V].copy_(w)
        torch.sum(w64.view(N, nb, C), -1, out=sums)
    else:
        r = max(1, _CHUNK_BYTES * torch.get_num_threads() // (12 * V))
        buf = torch.empty(min(r, N), V, dtype=x.dtype, device=x.device)
        for i in range(0, N, r):
            xc = x[i:i + r]
            wc = _weights(xc, kind, temperature, None if m is None else m[i:i + r], buf[:xc.shape[0]])
            w64[i:i + r, :V].copy_(wc)
            torch.sum(w64[i:i + r].view(-1, nb, C), -1, out=sums[i:i + r])
    return w64, ends.cumsum_(-1)  # ends[:, j + 1] = O_j, the end of block j


def _search(table: torch.Tensor, ends: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
    """Ex2 on the float64 CDF: the first k with F_k >= t F_{V-1}, per row; t (N, 1) in (0, 1].

    Short rows and small tables search the whole CDF. Large tables go in two
    levels, which reads and writes less than a float64 cumsum of every row: the block j whose ends
    satisfy ``O_{j-1} < t' <= O_j`` (``t' = t O_last``), then the first k in it
    whose partial sum from the block's start reaches ``t' - O_{j-1}``. That is
    the inverse of the float64 CDF ``F_k = O_{j-1} + (w_{64j} + ... + w_k)``,
    monotone, with the resolution of one long float64 cumsum. A category of
    zero weight is never returned: its partial sum equals its predecessor's
    (or 0 for a block's first), and k is capped at the first index reaching the
    block's own total, in case that rounds a little below ``t' - O_{j-1}``.
    """
    if ends is None:
        return torch.searchsorted(table, t.mul_(table[:, -1:]).clamp_min_(5e-324))
    C = _BLOCK
    t = t.mul_(ends[:, -1:]).clamp_min_(5e-324)
    j = torch.searchsorted(ends, t).sub_(1)          # (N, 1) block: O_{j-1} < t <= O_j (ends[:, 0] = 0 < t)
    start = ends.gather(1, j)                                              # O_{j-1}
    jC = j.mul_(C)
    part = table.gather(1, jC + _arange(C, t.device)).cumsum_(-1)        # (N, C) partial sums
    k = torch.minimum(torch.searchsorted(part, t.sub_(start)),
                      torch.searchsorted(part, part[:, -1:].contiguous()))
    return k.add_(jC)


def _search_many(table: torch.Tensor, ends: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
    """``_search`` for S uniforms per row, t (N, S) in (0, 1] (overwritten): (N, S).
    The two-level search goes over chunks of columns, with the same arithmetic per
    uniform as ``_search`` (so the same category for the same u)."""
    N, S = t.shape
    if ends is None or S == 1:
        return _search(table, ends, t)
    C = _BLOCK
    t = t.mul_(ends[:, -1:]).clamp_min_(5e-324)
    out = torch.empty(N, S, dtype=torch.int64, device=t.device)
    step = max(1, (1 << 22) // (N * C))
    ar = _arange(C, t.device)
    for c0 in range(0, S, step):
        tc = t[:, c0:c0 + step]
        j = torch.searchsorted(ends, tc).sub_(1)
        start = ends.gather(1, j)
        jC = j.mul_(C)
        s = tc.shape[1]
        part = table.gather(1, (jC.unsqueeze(-1) + ar).view(N, s * C)).view(N, s, C).cumsum_(-1)
        k = torch.minimum(torch.searchsorted(part, (tc - start).unsqueeze(-1)),
                          torch.searchsorted(part, part[..., -1:].contiguous()))
        out[:, c0:c0 + s] = k.squeeze(-1).add_(jC)
    return out


_ARANGE: dict = {}


def _arange(n: int, device) -> torch.Tensor:
    key = (n, str(device))
    a = _ARANGE.get(key)
    if a is None:
        a = _ARANGE[key] = torch.arange(n, device=device)
    return a


def _draw(x: torch.Tensor, temperature: float, top_k, top_p, t: torch.Tensor) -> torch.Tensor:
    """Categories (N, 1) for rows of logits ``x`` (N, V) and uniforms ``t`` (N, 1) in (0, 1]
    (overwritten)."""
    table, ends, _ = _build(x, "logits", temperature, top_k, top_p)
    return _search(table, ends, t)


def _build(x: torch.Tensor, kind: str, temperature: float, top_k, top_p):
    """The tables ``(table, ends)`` of ``_tables`` for rows ``x`` (N, V) of logits or
    probabilities (``kind``), checked (bad rows raise ValueError), and the row maxima
    ``m`` the weights were shifted or divided by (None when they were not).

    For probabilities one pass finds NaN, inf and negative values; a row of zero
    total is refused; the weights are ``x`` itself unless a temperature or a float64
    total that overflows asks for ``(x / max)^(1/T)``. For logits, any positive factor per row leaves the law unchanged, so the usual shift by
    the row maximum is needed only against overflow and underflow. Without
    truncation the weights are first ``exp(x / T)`` unshifted: if every row's
    float64 total is finite and at least V e^-30, no weight overflowed and the
    largest is at least e^-30, so a weight that underflowed is below e^-57 of it,
    far under the 2^-53 resolution of the uniform; this saves a pass over the
    logits and is more exact (``x - max`` rounds in float32, a relative error of
    up to |x - max| 2^-24 in the weight). Otherwise (large or very negative
    logits, or bad ones) the row maxima are computed, checked (NaN, +inf and
    all -inf rows raise ValueError), and the weights are ``exp((x - max) / T)``.
    With top-k / top-p the maxima come first and the shift is skipped when every
    ``max / T`` lies in [-30, 80].
    """
    if kind == "probs":
        return _build_probs(x, temperature, top_k, top_p)
    N, V = x.shape
    m = None
    if top_k is not None or top_p is not None:
        m = x.amax(-1, keepdim=True)  # NaN if a logit is NaN (amax propagates it)
        lo, hi = (m.item(),) * 2 if N == 1 else (m.min().item(), m.max().item())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            _bad_logits(x)
        if -30.0 <= lo / temperature and hi / temperature <= 80.0:
            m = None
        return (*_tables(x, "logits", temperature, top_k, top_p, m), m)
    table, ends = _tables(x, "logits", temperature, None, None, None)
    total = (table if ends is None else ends)[:, -1]  # float64 row totals
    floor = V * _TINY
    if N == 1:
        v = total.item()
        ok = floor <= v < math.inf
    else:
        ok = bool(((total >= floor) & (total < math.inf)).all())
    if not ok:
        m = x.amax(-1, keepdim=True)
        if not bool(torch.isfinite(m).all()):
            _bad_logits(x)
        table, ends = _tables(x, "logits", temperature, None, None, m)
    return table, ends, m


def _build_probs(x: torch.Tensor, temperature: float, top_k, top_p):
    lo, hi = (v.item() for v in torch.aminmax(x))      # NaN propagates to both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("probs contain NaN or inf")
    if lo < 0:
        raise ValueError("probs contain negative values; probabilities must be >= 0")
    m = None
    if temperature != 1.0 or hi > 1e300:   # rows divided by their maxima: no overflow of the sums
        m = x.amax(-1, keepdim=True)
        if bool((m <= 0).any()):
            raise ValueError("a row of probs is all zero; each row needs positive mass")
    table, ends = _tables(x, "probs", temperature, top_k, top_p, m)
    if not bool(((table if ends is None else ends)[:, -1] > 0).all()):
        raise ValueError("a row of probs is all zero; each row needs positive mass")
    return table, ends, m


def sample_categorical(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                       top_p: float | None = None, generator: torch.Generator | None = None,
                       u: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one category per row of ``logits`` (..., V) by inverse transform.

    Computes the weights ``exp(logits / temperature)`` (shifted by the row maximum
    where that is needed against overflow or underflow, see ``_draw``) in the
    logits' precision (float32 or float64; half types go through float32),
    optionally restricted to the top_k largest and/or the top_p nucleus, their
    float64 cumulative sums, one uniform per row (from ``generator``, or the given
    ``u`` of shape ``logits.shape[:-1]`` in [0, 1]), and ``searchsorted`` (in two
    levels for long rows, see ``_search``): no Python loop over rows. Returns a
    LongTensor of shape ``logits.shape[:-1]``. Greedy decoding is the caller's
    ``argmax``. ValueError for NaN logits, +inf or all -inf rows, temperature
    <= 0, top_k < 1 or top_p outside (0, 1].
    """
    _check_options(temperature, top_k, top_p)
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError("logits must have a non-empty last dimension (categories)")
    x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])                                         # (N, V)
    if u is None:
        # 1 - U[0, 1) lies in (0, 1]: zero-probability categories are never hit
        t = torch.rand((x.shape[0], 1), dtype=F64, device=x.device, generator=generator).neg_().add_(1.0)
    else:
        t = check_u(u, device=x.device).reshape(x.shape[0], 1).clamp_min(5e-324)
    return _draw(x, temperature, top_k, top_p, t).reshape(lead)


class CategoricalStepper:
    """``sample_categorical`` for a loop that draws one category per row at every step.

    CategoricalStepper(batch, num_categories, *, temperature=1.0, top_k=None, top_p=None,
                       generator=None, dtype=torch.float32, device="cpu", block=256)

    ``draw(logits)`` with logits (batch, num_categories) returns what
    ``sample_categorical(logits, temperature=..., top_k=..., top_p=..., generator=g)``
    returns, the same arithmetic (same weights, float64 cumulative sums, one
    uniform per row, ``searchsorted``) and the same random stream: the uniforms
    are drawn ``block`` steps at a time by one ``torch.rand`` call, which yields
    the same numbers as one call per step. What it saves per step is the
    per-call work (the options are checked once here, one ``torch.rand`` per
    block). Bad logits raise ``sample_categorical``'s ValueError. The generator's state runs up to ``block`` draws ahead.
    """

    def __init__(self, batch: int, num_categories: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", block: int = 256) -> None:
        _check_options(temperature, top_k, top_p)
        for name, v in (("batch", batch), ("num_categories", num_categories), ("block", block)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64 (the logits' dtype; "
                             f"convert half logits with .float()), got {dtype}")
        self.shape, self.dtype = (batch, num_categories), dtype
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, top_p
        self.truncate = top_k is not None or top_p is not None
        self.generator, self.block, self.device = generator, block, torch.device(device)
        self.u = None
        self.i = block

    def draw(self, logits: torch.Tensor) -> torch.Tensor:
        """One category per row of ``logits`` (batch, V): (batch,) int64."""
        if tuple(logits.shape) != self.shape or logits.dtype != self.dtype:
            raise ValueError(f"logits must be {self.dtype} of shape {self.shape} as this stepper "
                             f"was made for, got {logits.dtype} {tuple(logits.shape)}")
        if self.i == self.block:
            # 1 - U[0, 1) lies in (0, 1]: zero-probability categories are never hit
            self.u = torch.rand((self.block, self.shape[0], 1), dtype=F64, device=self.device,
                                generator=self.generator).neg_().add_(1.0)
            self.i = 0
        t = self.u[self.i].clone()
        self.i += 1
        return _draw(logits, self.temperature, self.top_k, self.top_p, t).view(-1)


class Categorical(Sampler):
    """Categorical law over ``V`` categories, batched over leading dimensions.

    Categorical(probs=None, *, logits=None, temperature=1.0, top_k=None, top_p=None)

    probs: (..., V) non-negative weights (normalised here) or logits: (..., V)
    log-weights; exactly one. ``temperature`` divides the log-weights (probs are
    raised to ``1/temperature``); ``top_k`` / ``top_p`` truncate as in
    :func:`sample_categorical` (one implementation: ``_truncate``, whose docstring
    gives the definition and the tie rule). ``batch_shape`` is ``probs.shape[:-1]``;
    ``sample(shape)`` returns ``shape + batch_shape`` category indices (int64), as
    torch.distributions. ``ppf(u)`` with u of shape ``(..., *batch_shape)``: smallest
    k with ``F_k >= u F_{V-1}``; ``cdf(k)`` = P(X <= k).

    The tables are those of :func:`sample_categorical`, built on first use (not
    here) and kept: weights in the input's precision (float32 or float64; half
    types go through float32, other types through float64), summed in float64. So
    ``Categorical(logits=x).sample(generator=g)`` costs what
    ``sample_categorical(x, generator=g)`` costs and returns the same categories,
    and a NaN, an infinite or a negative probability, a row of zeros, or bad logits
    raise ValueError on that first use. The input tensor is read then, not copied
    here: do not modify it in place before.
    """

    def __init__(self, probs=None, *, logits=None, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None):
        _check_options(temperature, top_k, top_p)
        if (probs is None) == (logits is None):
            raise ValueError("give exactly one of probs= or logits=")
        kind = "probs" if probs is not None else "logits"
        v = probs if probs is not None else logits
        if not torch.is_tensor(v):
            v = torch.as_tensor(v, dtype=F64)
        if v.dim() == 0 or v.shape[-1] == 0:
            raise ValueError(f"{kind} must have a non-empty last dimension (categories)")
        if v.dtype not in (torch.float32, torch.float64):
            v = v.float() if v.is_floating_point() else v.to(F64)
        self._kind, self._x = kind, v
        self.temperature, self.top_k, self.top_p = float(temperature), top_k, top_p
        self.num_categories = v.shape[-1]
        self.batch_shape = v.shape[:-1]
        self.device = v.device
        self._tabs = None       # (table, ends) of _tables, on first use
        self._cum = None        # the full float64 CDF (..., V), for cdf and u_error
        self._probs = None
        self._support = None

    # -- the tables, built on first use ---------------------------------
    def _rows(self) -> int:
        return int(math.prod(self.batch_shape)) if len(self.batch_shape) else 1

    def _tables(self):
        if self._tabs is None:
            x = self._x.reshape(self._rows(), self.num_categories)
            table, ends, self._m = _build(x, self._kind, self.temperature, self.top_k, self.top_p)
            self._tabs = (table, ends)
        return self._tabs

    def _cdf_table(self):
        """(F (..., V), total (..., 1)): the float64 CDF as the search sees it (block
        ends plus the sums inside each block, on the two-level tables)."""
        if self._cum is None:
            table, ends = self._tables()
            V = self.num_categories
            if ends is None:
                F = table
            else:
                N = table.shape[0]
                F = (table.view(N, -1, _BLOCK).cumsum(-1) + ends[:, :-1, None]).view(N, -1)[:, :V]
                F = torch.cummax(F, -1).values          # block sums and inner sums round apart
            total = (table if ends is None else ends)[:, -1:]
            shape = tuple(self.batch_shape)
            self._cum = (F.reshape(shape + (V,)).contiguous(), total.reshape(shape + (1,)))
        return self._cum

    @property
    def probs(self) -> torch.Tensor:
        """The probabilities (..., V), float64: the weights drawn from over their float64 total."""
        if self._probs is None:
            table, ends = self._tables()
            V = self.num_categories
            if ends is None:   # recompute the weights summed in the table (same arithmetic)
                x = self._x.reshape(self._rows(), V)
                w = _weights(x, self._kind, self.temperature, self._m,
                             torch.empty(x.shape, dtype=x.dtype, device=x.device))
                if self.top_k is not None or self.top_p is not None:
                    w = _truncate(w, self.top_k, self.top_p)
                w, total = w.to(F64), table[:, -1:]
            else:
                w, total = table[:, :V], ends[:, -1:]
            self._probs = (w / total).reshape(tuple(self.batch_shape) + (V,))
        return self._probs

    @property
    def support(self):
        """(first, last) categories of positive probability, per row (int64 tensors)."""
        if self._support is None:
            pos = self.probs > 0
            ar = torch.arange(self.num_categories, device=self.device)
            self._support = (torch.where(pos, ar, self.num_categories).amin(-1),
                             torch.where(pos, ar, -1).amax(-1))
        return self._support

    # u of shape (..., *batch_shape) in (0, 1] -> index of the same shape (t is overwritten)
    def _search(self, t: torch.Tensor) -> torch.Tensor:
        nb = len(self.batch_shape)
        t = torch.broadcast_to(t, torch.broadcast_shapes(t.shape, self.batch_shape))
        if t.numel() == 0:
            return torch.empty(t.shape, dtype=torch.int64, device=t.device)
        lead = t.shape[:t.dim() - nb]
        S = int(math.prod(lead)) if len(lead) else 1
        tt = t.reshape(S, self._rows()).transpose(0, 1).contiguous()        # (N, S)
        k = _search_many(*self._tables(), tt)
        return k.transpose(0, 1).reshape(t.shape)

    def _ppf(self, u):
        return self._search(u.clamp_min(5e-324))

    def sample(self, shape: int | Sequence[int] = (), *, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """``shape + batch_shape`` categories from 1 - U, U ~ U[0, 1) from ``generator``:
        with ``shape=()`` the uniforms and categories of ``sample_categorical``."""
        shape = as_shape(shape) + self.batch_shape
        t = torch.rand(shape, dtype=F64, device=self.device, generator=generator).neg_().add_(1.0)
        return self._search(t)

    def _cdf(self, k):
        """P(X <= k) for real k (floored); below 0 gives 0, from V - 1 on gives 1."""
        kf = torch.floor(k)
        V = self.num_categories
        kc = kf.nan_to_num(0.0).clamp(0, V - 1).to(torch.int64)
        cum, total = self._cdf_table()
        g = _gather_last(cum, kc, self.batch_shape)
        tot = torch.broadcast_to(total.squeeze(-1), g.shape)
        out = g / tot
        kf = torch.broadcast_to(kf, out.shape)
        out = torch.where(kf < 0, torch.zeros_like(out), out)
        out = torch.where(kf >= V - 1, torch.ones_like(out), out)
        return torch.where(torch.isnan(kf), kf, out)

    def log_prob(self, k) -> torch.Tensor:
        """log P(X = k) for integer k of shape (..., *batch_shape) (float64)."""
        k = torch.as_tensor(k, device=self.device).to(torch.int64)
        if bool(((k < 0) | (k >= self.num_categories)).any()):
            raise ValueError(f"categories must lie in [0, {self.num_categories - 1}]")
        return torch.log(_gather_last(self.probs, k, self.batch_shape))

    def u_error(self, n: int = 100_000) -> UError:
        """For a discrete law CDF(ppf(u)) >= u with equality only at the steps, so
        the scipy metric does not apply; this reports the violation of the
        generalized-inverse property ``F(k-1) < u <= F(k)`` over the midpoints
        (0 when exact, as it should be)."""
        u = midpoint_grid(n, self.device)
        nb = len(self.batch_shape)
        u = u.reshape((n,) + (1,) * nb).expand((n,) + tuple(self.batch_shape))
        k = self._ppf(u)
        hi = self._cdf(k.to(F64))
        lo = self._cdf(k.to(F64) - 1)
        viol = torch.clamp(u - hi, min=0) + torch.clamp(lo - u, min=0)
        return UError(viol.max().item(), viol.mean().item())

    def __repr__(self):
        return f"Categorical(num_categories={self.num_categories}, batch_shape={tuple(self.batch_shape)})"
