"""Evaluating a :class:`.table.NumericalInverse`: torch ops, or the compiled C kernel.

Both read the same tables. The torch path runs on any device: ``ppf`` finds
the interval through the guide table (a ``torch.searchsorted`` for the cells
that hold an interval boundary) and evaluates its polynomial, clamped to the
interval; ``sample`` draws ``torch.rand`` and goes through the 2^13-cell table,
falling back to the interval path in cells that hold a boundary. The kernel
(:mod:`rnnforge._ckernels`, built on first use) does the same in one threaded
pass on CPU, with Philox4x32-10 uniforms keyed from the caller's
``torch.Generator``. Monotonicity of ``ppf`` near u = 0 and 1 rests on the
clamp in :func:`eval_pieces` and its twin in the kernel.
"""
from __future__ import annotations

import warnings

import torch

from ... import _ckernels as _ck
from .._base import F64

BACKENDS = ("auto", "c", "torch")
_warned_fallback = False
_CHUNK = 1 << 16     # u values per pass of the torch path


def check_backend(backend, device):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "c":
        if device.type != "cpu":
            raise ValueError(f"backend='c' runs on CPU only, but the tables live on {device}; "
                             "use backend='auto' or 'torch' there")
        load_kernels("c")
    return backend


def load_kernels(backend):
    """The compiled library, or None for the torch path. backend='c' turns a
    failed build into a ValueError; 'auto' warns once and goes on with torch."""
    global _warned_fallback
    try:
        return _ck.load()
    except _ck.KernelUnavailable as e:
        if backend == "c":
            raise ValueError(f"backend='c' cannot run: {e}; use backend='torch'") from None
        if not _warned_fallback:
            _warned_fallback = True
            # the frames above: c_table, NumericalInverse._kernel, sample or _ppf, the caller
            warnings.warn(f"rnnforge.sampling: the compiled sampling kernel is unavailable ({e}); "
                          "sampling with torch ops instead (several times slower). "
                          "Pass backend='torch' to choose that and silence this warning.",
                          RuntimeWarning, stacklevel=5)
        return None


def _threads(n: int) -> int:
    """Threads for n elements: torch's intra-op count, one for small jobs."""
    return 1 if n < (1 << 15) else max(1, torch.get_num_threads())


# -- torch ops --------------------------------------------------------------------------------
def locate(t, u):
    """Interval index of each u in [0, 1] (1-D float64) in the table ``t``."""
    cell = (u * t._G).to(torch.int64).clamp_(max=t._G - 1)
    idx = t._guide.index_select(0, cell)
    hard = idx < 0
    if bool(hard.any()):
        pos = hard.nonzero().squeeze(1)
        idx.index_copy_(0, pos, torch.searchsorted(t._bounds, u.index_select(0, pos)))
    return idx


def eval_pieces(t, u, idx):
    """x = P_i(s), s = (u - U_i) / W_i in [0, 1], clamped to [a_i, b_i]; one
    ``index_select`` per table column (cheaper than one gather of packed rows)."""
    take = lambda c: c.index_select(0, idx)  # noqa: E731
    s = (u - take(t._ustart)).mul_(take(t._invw))
    c = t._coef
    x = take(c[-1])
    for k in range(len(c) - 2, -1, -1):
        x = torch.addcmul(take(c[k]), s, x)
    return torch.minimum(torch.maximum(x, take(t._lo)), take(t._hi))


def sample_cells(t, u):
    """x for u (1-D float64) through the 2^13-cell table; the interval path where a cell holds a boundary."""
    if t._cell_coef is None:
        t._build_cells(*t._cell_src)
    s = u * t._G2                                       # exact: G is a power of two
    k = s.to(torch.int64)
    s = s - k
    c = t._cell_coef
    x = c[-1].index_select(0, k)
    for j in range(len(c) - 2, -1, -1):
        x = torch.addcmul(c[j].index_select(0, k), s, x)
    miss = torch.isnan(x)
    if bool(miss.any()):
        pos = miss.nonzero().squeeze(1)
        um = u.index_select(0, pos)
        x.index_copy_(0, pos, eval_pieces(t, um, locate(t, um)))
    return x


def torch_ppf(t, u):
    """ppf of 1-D float64 u by torch ops; u <= 0 and u >= 1 map to the support's ends."""
    out = torch.empty_like(u)
    for s0 in range(0, u.numel(), _CHUNK):
        us = u[s0:s0 + _CHUNK]
        out[s0:s0 + _CHUNK] = eval_pieces(t, us, locate(t, us))
    out = torch.where(u <= 0, torch.full_like(out, t.support[0]), out)
    return torch.where(u >= 1, torch.full_like(out, t.support[1]), out)


def torch_sample(t, n, generator):
    """n draws (1-D) from ``torch.rand`` on ``generator`` through the sampling table."""
    out = torch.empty(n, dtype=F64, device=t.device)
    for s0 in range(0, n, _CHUNK):
        m = min(_CHUNK, n - s0)
        u = torch.rand(m, dtype=F64, device=t.device, generator=generator)
        out[s0:s0 + m] = sample_cells(t, u)
    return out


# -- the compiled kernel ----------------------------------------------------------------------
def c_table(t):
    """``(library, table, keep)`` when ``t`` runs the compiled kernel, else None; the
    kernel's view of the tables is built once and kept on ``t`` (``t._ctab``)."""
    if t.backend == "torch" or t.device.type != "cpu":
        return None
    lib = load_kernels(t.backend)
    if lib is None:
        return None
    entry = t._ctab
    if entry is None:
        if t._cell_coef is None:
            t._build_cells(*t._cell_src)
        keep = dict(guide=t._guide.contiguous(), bounds=t._bounds.contiguous(),
                    ustart=t._ustart, invw=t._invw, lo=t._lo, hi=t._hi,
                    coef=torch.stack(t._coef, 1).contiguous(),
                    cell=torch.stack(t._cell_coef, 1).contiguous(),
                    cell_first=t._cell_first.contiguous())
        ptr = {k: v.data_ptr() for k, v in keep.items()}
        tab = _ck.PinvTable(K=t.intervals, G=t._G, ncoef=len(t._coef), G2=t._G2,
                            support_lo=t.support[0], support_hi=t.support[1], **ptr)
        entry = t._ctab = (tab, keep)  # keep: the tensors the pointers point into
    return lib, entry[0], entry[1]


def c_ppf(kernel, u):
    """ppf of 1-D float64 CPU u by the kernel (which maps u = 0 and 1 to the support's ends)."""
    u = u.contiguous()
    out = torch.empty_like(u)
    lib, tab, _keep = kernel
    lib.rf_pinv_ppf(tab, u.data_ptr(), u.numel(), out.data_ptr(), _threads(u.numel()))
    return out


def c_sample(kernel, n, generator):
    """n draws (1-D) by the kernel, its Philox key drawn from ``generator``."""
    out = torch.empty(n, dtype=F64)
    key = torch.randint(0, 1 << 32, (2,), dtype=torch.int64, generator=generator).tolist()
    lib, tab, _keep = kernel
    lib.rf_pinv_sample(tab, key[0] | (key[1] << 32), n, out.data_ptr(), _threads(n))
    return out
