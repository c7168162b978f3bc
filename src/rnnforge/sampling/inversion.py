"""Numerical inversion of a density or a CDF: the notes' Ex2 for any 1-D law.

``from_pdf`` follows PINV (Derflinger, Hoermann and Leydold, "Random variate
generation by numerical inversion when only the density is known", ACM TOMACS
20(4), 2010): the domain is cut where the tails hold less than a fraction of
the wanted accuracy; it is split into intervals; on each interval the CDF is
integrated at Chebyshev-Lobatto nodes with Gauss-Lobatto quadrature and the
inverse CDF is interpolated by a Newton polynomial in u; an interval is accepted
when the u-error at the extremal points between nodes is below the resolution,
otherwise cut. Departures, for speed in Python or for safety:

* all pending intervals of a round are processed together (one density call
  on every point of every pending interval), rather than one after the other;
  the first intervals are spaced by mass and by asinh distance from the centre
  (geometric in the tails); a failing interval is cut into about
  ``(err / tol)^(1/(n+1))`` pieces at once (geometric cuts in the tails); one
  at a component's end, where the density may vanish or blow up like a power so
  that x(u) is not smooth, is cut by the power law fitted to its node masses
  (equal masses, then halving masses down to a piece below tol / 4), so a build
  takes 2 or 3 rounds;
* before the intervals, the density is scanned on a grid (log-spaced out to
  1e20 from ``center`` and uniform on the cut domain). Runs of exact zeros split
  the support into components, and each component's ends are located by
  bisection. So a density that underflows to zero between two separated modes is
  sampled on both modes (scipy's PINV walks out from the centre and samples only
  one). A feature narrower than the scan spacing (about (R - L) / 4096) can still
  be missed: pass ``center`` near it or a narrower ``support``;
* each interval also carries a Gauss-Lobatto error estimate (one panel against
  two), which must be small, since the interval masses add up into the CDF;
* ``ppf`` finds the interval through a guide table (Chen and Asau) and
  evaluates the polynomial in power form, clamped to the interval, so it is
  monotone; ``sample`` goes through a finer table of 2^13 equal u-cells whose
  polynomials are the interval polynomials re-expanded exactly, so a draw needs
  no search (cells that hold an interval boundary fall back to ``ppf``'s path);
* on CPU both run in one threaded pass of a small compiled C kernel
  (:mod:`rnnforge._ckernels`, built on first use) whose uniforms are
  Philox4x32-10 keyed from the caller's ``torch.Generator``; the same tables
  serve the torch-ops path used on GPUs or with ``backend="torch"``.

The user's pdf (or cdf) receives 1-D float64 CPU tensors and must return a
tensor (or array) of the same shape; it is called on many points at once.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .. import _ckernels as _ck
from ._base import F64, Sampler, as_f64

__all__ = ["from_pdf", "from_cdf", "NumericalInverse"]

# Gauss-Lobatto 5-point rule on [0, 1] (positions, weights), and the same rule on
# two halves. The 11 positions are the union of both sets; W1/W2 weight them.
_S7 = math.sqrt(3.0 / 7.0)
_R1 = np.array([0.0, (1 - _S7) / 2, 0.5, (1 + _S7) / 2, 1.0])
_W1 = np.array([1 / 20, 49 / 180, 16 / 45, 49 / 180, 1 / 20])
_R2 = np.concatenate([_R1 / 2, 0.5 + _R1[1:] / 2])
_W2 = np.concatenate([_W1 / 2, np.zeros(4)])
_W2[4:] += _W1 / 2
_R = np.union1d(_R1, _R2)                       # 11 positions
_WA = np.zeros(_R.size)
_WB = np.zeros(_R.size)
for r, w in zip(_R1, _W1):
    _WA[np.argmin(abs(_R - r))] += w
for r, w in zip(_R2, _W2):
    _WB[np.argmin(abs(_R - r))] += w


def _eval(fn, x: np.ndarray, what: str) -> np.ndarray:
    """Call the user's function on a float64 CPU tensor; check what comes back."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = fn(torch.from_numpy(flat))
    out = torch.as_tensor(out).detach().to("cpu", F64).numpy().reshape(-1)
    if out.shape != flat.shape:
        raise ValueError(f"{what} returned shape {out.shape} for {flat.shape} points; "
                         "it must act elementwise on a 1-D float64 tensor")
    # one pass for the common case (NaN fails both comparisons), details only on failure
    if not ((out >= 0) & (out < np.inf)).all() if what == "pdf" else not np.isfinite(out).all():
        bad = ~np.isfinite(out)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{what} is {out[i]} at x={flat[i]!r}; it must be finite on the support "
                             "(shrink support away from a singularity)")
        i = int(np.argmax(out < 0))
        raise ValueError(f"pdf is negative ({out[i]:g}) at x={flat[i]!r}; a density must be >= 0")
    return out.reshape(x.shape)


class _PdfMass:
    """Mass of [lo, hi] by Gauss-Lobatto (one panel vs two: error estimate)."""

    def __init__(self, pdf):
        self.pdf = pdf

    def __call__(self, lo, hi):
        h = hi - lo
        pts = lo[..., None] + h[..., None] * _R
        f = _eval(self.pdf, pts, "pdf")
        one = h * (f @ _WA)
        two = h * (f @ _WB)
        return two, np.abs(two - one)


class _CdfMass:
    def __init__(self, cdf):
        self.cdf = cdf

    def __call__(self, lo, hi):
        f = _eval(self.cdf, np.stack([lo, hi]), "cdf")
        d = f[1] - f[0]
        if (d < -1e-14).any():
            i = int(np.argmax(d < -1e-14))
            raise ValueError(f"cdf decreases between x={lo.reshape(-1)[i]!r} and x={hi.reshape(-1)[i]!r}; "
                             "a CDF must be non-decreasing")
        return np.maximum(d, 0.0), np.zeros_like(d)


def _cheb_lobatto(n: int) -> np.ndarray:
    return (1.0 - np.cos(np.pi * np.arange(n + 1) / n)) / 2.0


def _scan_grid(a: float, b: float, c: float, per_decade: int = 8) -> np.ndarray:
    """Points from c out to each end: log-spaced to +-1e20 on an infinite side,
    uniform plus geometric towards a finite end."""
    parts = [np.array([c])]
    offs = 10.0 ** np.arange(-3.0, 20.0 + 1e-9, 1.0 / per_decade)
    for bound, sign in ((a, -1.0), (b, 1.0)):
        if math.isinf(bound):
            parts.append(c + sign * offs)
        else:
            d = abs(bound - c)
            if d > 0:
                parts.append(c + sign * d * np.linspace(0, 1, 257)[1:])
                parts.append(bound - sign * d * 10.0 ** -np.arange(1.0, 13.0))
    x = np.unique(np.concatenate(parts))
    return x[(x >= a) & (x <= b)]


def _trapz_cum(x, f):
    return np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(x))])


class NumericalInverse(Sampler):
    """Piecewise-polynomial inverse CDF built by :func:`from_pdf` / :func:`from_cdf`.

    ``ppf``/``sample`` run on ``device``; ``cdf`` (and so ``u_error``) integrates
    the user's pdf (or calls the cdf) on CPU float64 tensors and returns to the
    input's device.

    Attributes: ``support`` (the user's), ``domain`` (the computational domain
    after the tail cut), ``components`` (the intervals of positive density found),
    ``intervals`` (number of polynomial pieces), ``area`` (the density's mass),
    ``order`` and ``u_resolution``.
    """

    def __init__(self, *, mass, pdf, support, domain, components, a, b, X, V, P, area,
                 order, u_resolution, device, backend="auto"):
        self._mass = mass
        self._pdf_fn = pdf
        self.support = support
        self.domain = domain
        self.components = components
        self.area = area
        self.order = order
        self.u_resolution = u_resolution
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.batch_shape = torch.Size()
        K = a.size
        self.intervals = K
        cum = np.concatenate([[0.0], np.cumsum(V[:, -1])]) / area
        cum[-1] = 1.0
        cum = np.maximum.accumulate(np.minimum(cum, 1.0))
        W = np.diff(cum)
        invW = np.where(W > 0, 1.0 / np.where(W > 0, W, 1.0), 0.0)
        # numpy copies for the CDF (evaluated on CPU with the user's function)
        self._np = dict(a=a, b=b, X=X, Vnodes=V, cum=cum)
        dev = self.device
        t = lambda arr: torch.as_tensor(np.ascontiguousarray(arr), dtype=F64, device=dev)  # noqa: E731
        self._bounds = t(cum[1:-1])                 # interior boundaries in u, (K-1,)
        self._ustart = t(cum[:-1])                  # (K,)
        self._invw = t(invW)
        self._lo, self._hi = t(a), t(b)
        self._coef = [t(P[:, k]) for k in range(P.shape[1])]   # power form in s
        self._build_guide()
        self._cell_src = (cum, invW, P)      # the sampling table is built on first sample()
        self._cell_coef = None
        self._ctab = None                    # the compiled kernel's view of the tables
        self.backend = _check_backend(backend, self.device)

    # -- tables ---------------------------------------------------------
    def _build_guide(self, cells: int | None = None):
        """Guide table (Chen and Asau): for each of G equal u-cells [e_k, e_k+1) the
        interval that covers it when no interval boundary falls inside the cell;
        the few cells holding a boundary are searched with ``torch.searchsorted``.
        Interval i holds u with B_{i-1} < u <= B_i (so ppf is the left-continuous
        generalized inverse: at a gap, F^{-1}(u) is the gap's left end)."""
        K = self.intervals
        G = cells or int(min(1 << 16, max(1024, 8 * K)))
        bounds = self._np["cum"][1:-1]
        first = np.searchsorted(bounds, np.arange(G + 1) / G)          # bounds < edge
        self._G = G
        # cells that hold a boundary are marked -(f + 1), f = boundaries below the cell
        # start: the torch path searches them, the compiled one scans up from f
        guide = np.where(first[1:] == first[:-1], first[:-1], -first[:-1] - 1).astype(np.int64)
        self._guide = torch.as_tensor(guide, device=self.device)

    def _build_cells(self, cum, invW, P, cells: int = 1 << 13):
        """Sampling table on G = 2^13 equal u-cells: on a cell inside one interval i,
        ``x = Q_k(t)``, ``t = G u - k``, where Q_k is P_i re-expanded exactly
        (``s = alpha + beta t``). Lookup is then ``k = floor(G u)``, no search;
        cells holding an interval boundary get NaN coefficients and fall back to
        the interval path. Used by ``sample`` only (ppf keeps the clamped interval
        path, which is monotone to the last bit); both agree to rounding."""
        G = cells
        edges = np.arange(G + 1) / G
        b = cum[1:-1]
        first = np.searchsorted(b, edges)                      # bounds < edge
        simple = first[1:] == first[:-1]
        i = first[:-1]
        # (cells with a boundary inside are NaN'ed below; zero their maps first)
        alpha = np.where(simple, (edges[:-1] - cum[i]) * invW[i], 0.0)
        beta = np.where(simple, invW[i] / G, 0.0)
        D = np.ascontiguousarray(P.T)[:, i]                     # (n+1, G), power form in s
        n = D.shape[0] - 1
        # Taylor shift by alpha (synthetic division), then scale t by beta
        for j in range(n):
            for k in range(n - 1, j - 1, -1):
                D[k] += alpha * D[k + 1]
        bp = beta.copy()
        for k in range(1, n + 1):
            D[k] *= bp
            bp *= beta
        D[:, ~simple] = np.nan
        self._G2 = G
        self._cell_coef = [torch.as_tensor(D[k], dtype=F64, device=self.device) for k in range(n + 1)]
        self._cell_first = torch.as_tensor(first[:-1].astype(np.int64), device=self.device)

    def _sample_cells(self, u):
        if self._cell_coef is None:
            self._build_cells(*self._cell_src)
        t = u * self._G2                                       # exact: G is a power of two
        k = t.to(torch.int64)
        t = t - k
        c = self._cell_coef
        x = c[-1].index_select(0, k)
        for j in range(len(c) - 2, -1, -1):
            x = torch.addcmul(c[j].index_select(0, k), t, x)
        miss = torch.isnan(x)
        if bool(miss.any()):
            pos = miss.nonzero().squeeze(1)
            um = u.index_select(0, pos)
            x.index_copy_(0, pos, self._eval_pieces(um, self._locate(um)))
        return x

    # -- evaluation -----------------------------------------------------
    def _locate(self, u):
        """Interval index of each u in [0, 1] (1-D float64)."""
        cell = (u * self._G).to(torch.int64).clamp_(max=self._G - 1)
        idx = self._guide.index_select(0, cell)
        hard = idx < 0
        if bool(hard.any()):
            pos = hard.nonzero().squeeze(1)
            idx.index_copy_(0, pos, torch.searchsorted(self._bounds, u.index_select(0, pos)))
        return idx

    def _eval_pieces(self, u, idx):
        """x = P_i(s), s = (u - U_i) / W_i in [0, 1], clamped to [a_i, b_i]; one
        ``index_select`` per table column (cheaper than one gather of packed rows)."""
        take = lambda t: t.index_select(0, idx)  # noqa: E731
        s = (u - take(self._ustart)).mul_(take(self._invw))
        c = self._coef
        x = take(c[-1])
        for k in range(len(c) - 2, -1, -1):
            x = torch.addcmul(take(c[k]), s, x)
        return torch.minimum(torch.maximum(x, take(self._lo)), take(self._hi))

    def _ppf(self, u):
        shape = u.shape
        u = u.reshape(-1)
        out = torch.empty_like(u)
        kernel = self._kernel() if u.device.type == "cpu" else None
        if kernel is not None:
            u = u.contiguous()
            lib, tab, _keep = kernel
            lib.rf_pinv_ppf(tab, u.data_ptr(), u.numel(), out.data_ptr(), _threads(u.numel()))
            return out.reshape(shape)
        chunk = 1 << 16
        for s0 in range(0, u.numel(), chunk):
            us = u[s0:s0 + chunk]
            out[s0:s0 + chunk] = self._eval_pieces(us, self._locate(us))
        out = torch.where(u <= 0, torch.full_like(out, self.support[0]), out)
        out = torch.where(u >= 1, torch.full_like(out, self.support[1]), out)
        return out.reshape(shape)

    def sample(self, shape=(), *, generator=None):
        """Draw ``shape`` values, ``x = ppf(U)`` up to rounding.

        With the compiled kernel (``backend`` "c", or "auto" on CPU where it
        builds) the uniforms are Philox4x32-10 under a 64-bit key drawn from
        ``generator``, evaluated in one threaded pass (``torch.get_num_threads()``
        threads); otherwise ``torch.rand`` on ``generator`` through torch ops.
        Each backend is reproducible from the generator; the two streams differ.
        """
        from ._base import as_shape
        shape = as_shape(shape)
        n = int(np.prod(shape)) if len(shape) else 1
        out = torch.empty(n, dtype=F64, device=self.device)
        kernel = self._kernel()
        if kernel is not None:
            key = torch.randint(0, 1 << 32, (2,), dtype=torch.int64, generator=generator).tolist()
            lib, tab, _keep = kernel
            lib.rf_pinv_sample(tab, key[0] | (key[1] << 32), n, out.data_ptr(), _threads(n))
            return out.reshape(shape)
        chunk = 1 << 16
        for s0 in range(0, n, chunk):
            m = min(chunk, n - s0)
            u = torch.rand(m, dtype=F64, device=self.device, generator=generator)
            out[s0:s0 + m] = self._sample_cells(u)
        return out.reshape(shape)

    # -- compiled kernel ------------------------------------------------
    def _kernel(self):
        """``(library, table, keep)`` when this sampler runs the compiled kernel, else None.
        The caller holds ``keep`` (the tensors the table points into) during its call."""
        if self.backend == "torch" or self.device.type != "cpu":
            return None
        lib = _load_kernels(self.backend)
        if lib is None:
            return None
        entry = self._ctab
        if entry is None:
            if self._cell_coef is None:
                self._build_cells(*self._cell_src)
            keep = dict(guide=self._guide.contiguous(), bounds=self._bounds.contiguous(),
                        ustart=self._ustart, invw=self._invw, lo=self._lo, hi=self._hi,
                        coef=torch.stack(self._coef, 1).contiguous(),
                        cell=torch.stack(self._cell_coef, 1).contiguous(),
                        cell_first=self._cell_first.contiguous())
            ptr = {k: v.data_ptr() for k, v in keep.items()}
            tab = _ck.PinvTable(K=self.intervals, G=self._G, ncoef=len(self._coef), G2=self._G2,
                                support_lo=self.support[0], support_hi=self.support[1], **ptr)
            entry = self._ctab = (tab, keep)  # keep: the tensors the pointers point into
        return lib, entry[0], entry[1]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_ctab"] = None                 # raw pointers: rebuilt on first use
        return state

    def _cdf(self, x):
        dev = x.device
        xn = x.detach().to("cpu").numpy().reshape(-1)
        T = self._np
        a, b, X, Vn, cum = T["a"], T["b"], T["X"], T["Vnodes"], T["cum"]
        out = np.full(xn.shape, np.nan)
        ok = ~np.isnan(xn)
        xo = xn[ok]
        i = np.clip(np.searchsorted(a, xo, side="right") - 1, 0, a.size - 1)
        res = np.empty(xo.shape)
        below = xo <= a[0]
        above = xo >= b[i]
        res[below] = 0.0
        res[above & ~below] = cum[i[above & ~below] + 1]
        mid = ~below & ~above
        if mid.any():
            xm, im = xo[mid], i[mid]
            j = np.clip((X[im] <= xm[:, None]).sum(axis=1) - 1, 0, X.shape[1] - 2)
            x0 = X[im, j]
            m, _ = self._mass(x0, xm)
            res[mid] = cum[im] + (Vn[im, j] + m) / self.area
        out[ok] = np.clip(res, 0.0, 1.0)
        return torch.as_tensor(out, dtype=F64).reshape(x.shape).to(dev)

    def pdf(self, x):
        """The user's density divided by its mass (``from_pdf`` only)."""
        if self._pdf_fn is None:
            raise ValueError("pdf is only known for samplers built by from_pdf")
        x = as_f64(x, name="x")
        inside = (x >= self.support[0]) & (x <= self.support[1])
        f = torch.as_tensor(self._pdf_fn(x.reshape(-1).cpu())).to(F64).reshape(x.shape) / self.area
        return torch.where(inside, f, torch.zeros_like(f)).to(x.device)

    def __repr__(self):
        return (f"NumericalInverse(domain={self.domain}, components={len(self.components)}, "
                f"intervals={self.intervals}, order={self.order}, u_resolution={self.u_resolution:g})")


BACKENDS = ("auto", "c", "torch")
_warned_fallback = False


def _check_backend(backend, device):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "c":
        if device.type != "cpu":
            raise ValueError(f"backend='c' runs on CPU only, but the tables live on {device}; "
                             "use backend='auto' or 'torch' there")
        _load_kernels("c")
    return backend


def _load_kernels(backend):
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
            warnings.warn(f"rnnforge.sampling: the compiled sampling kernel is unavailable ({e}); "
                          "sampling with torch ops instead (several times slower). "
                          "Pass backend='torch' to choose that and silence this warning.",
                          RuntimeWarning, stacklevel=4)
        return None


def _threads(n: int) -> int:
    """Threads for n elements: torch's intra-op count, one for small jobs."""
    return 1 if n < (1 << 15) else max(1, torch.get_num_threads())


def _check_common(support, u_resolution, order):
    try:
        a, b = (float(v) for v in support)
    except (TypeError, ValueError):
        raise ValueError(f"support must be a pair (a, b) of numbers, got {support!r}") from None
    if math.isnan(a) or math.isnan(b) or not a < b:
        raise ValueError(f"support must satisfy a < b, got ({a}, {b})")
    if not (1e-14 <= u_resolution <= 1e-5):
        raise ValueError(f"u_resolution must lie in [1e-14, 1e-5], got {u_resolution}")
    if int(order) != order or not 3 <= order <= 12:
        raise ValueError(f"order must be an integer in [3, 12], got {order}")
    return a, b


def _default_center(a, b, center):
    if center is not None:
        c = float(center)
        if not (a <= c <= b) or math.isnan(c):
            raise ValueError(f"center={center} lies outside the support ({a}, {b})")
        return c
    if math.isfinite(a) and math.isfinite(b):
        return 0.5 * (a + b)
    if math.isfinite(a):
        return a
    if math.isfinite(b):
        return b
    return 0.0


def _refine_edge(fn, zero_x, pos_x, what, span, steps=4):
    """Locate where f turns positive between a zero point and a positive point
    (arrays), 256 points per call: 32 bits after 4 calls, fewer when every
    bracket is already narrower than 2^-44 of ``span`` (the scanned width)."""
    lo, hi = zero_x.copy(), pos_x.copy()          # f(lo) == 0, f(hi) > 0 (either order)
    t = np.linspace(0, 1, 257)
    for _ in range(steps):
        if np.abs(hi - lo).max() <= span * 2.0 ** -44:
            break
        pts = lo[:, None] + (hi - lo)[:, None] * t
        f = _eval(fn, pts, what) > 0
        k = np.argmax(f, axis=1)                  # first positive from the zero side
        k = np.maximum(k, 1)
        lo, hi = pts[np.arange(lo.size), k - 1], pts[np.arange(lo.size), k]
    return hi


def _components_from_scan(fn, x, f, what):
    """Maximal runs of positive f on the sorted grid x, ends refined."""
    pos = f > 0
    if not pos.any():
        return []
    d = np.diff(pos.astype(np.int8))
    starts = list(np.nonzero(d == 1)[0] + 1)
    ends = list(np.nonzero(d == -1)[0])
    if pos[0]:
        starts.insert(0, 0)
    if pos[-1]:
        ends.append(x.size - 1)
    starts, ends = np.array(starts), np.array(ends)
    left = x[starts].copy()
    right = x[ends].copy()
    ls = starts > 0
    rs = ends < x.size - 1
    if ls.any() or rs.any():
        # all edges in one search: (zero side, positive side) pairs
        zero = np.concatenate([x[starts[ls] - 1], x[ends[rs] + 1]])
        posx = np.concatenate([x[starts[ls]], x[ends[rs]]])
        found = _refine_edge(fn, zero, posx, what, span=float(x[-1] - x[0]))
        left[ls] = found[:int(ls.sum())]
        right[rs] = found[int(ls.sum()):]
    return [(float(l), float(r)) for l, r in zip(left, right) if r > l]


def _build(mass, *, grid, cdf_grid, comps, u_resolution, order, area_guess, center):
    """Run the adaptive rounds with the tolerance ``u_resolution * area``; if the
    mass found is more than 2% below the guess the tolerance was too loose, so run
    again with the mass found."""
    for _ in range(3):
        out = _rounds(mass, grid=grid, cdf_grid=cdf_grid, comps=comps, u_resolution=u_resolution,
                      order=order, tol=u_resolution * area_guess, center=center)
        area = float(out[3][:, -1].sum())
        if not area > 0:
            raise ValueError("the density has zero mass on the support; check pdf and support")
        if area >= 0.98 * area_guess:
            return out
        area_guess = area
    return out


_START = 64     # initial intervals per component: about 2 * _START (by mass and by x)
_END_RATIO = 2.0  # mass ratio of neighbouring pieces cut toward a component's end
_END_FINE = 6     # top levels of those pieces cut in three
_NEWTON = 1     # Newton steps toward each test point (an extremum of the node polynomial)
_CUT = 1.2      # safety factor on the number of pieces a failing interval is cut into


def _rounds(mass, *, grid, cdf_grid, comps, u_resolution, order, tol, center, max_intervals=100_000):
    """The adaptive rounds. Returns the accepted intervals' tables."""
    n = order
    C = _cheb_lobatto(n)
    # initial breakpoints: component ends and about 2 * _START grid points inside,
    # half equally spaced in mass, half equally spaced in asinh((x - center) / scale)
    # (even near the bulk, geometric in the tails), scale = the interquartile range
    q1, q3 = np.interp([0.25, 0.75], cdf_grid / cdf_grid[-1], grid)
    scale = max(q3 - q1, 1e-300)
    starts = []
    for l, r in comps:
        inside = grid[(grid > l) & (grid < r)]
        if inside.size > 2 * _START:
            cg = np.interp(inside, grid, cdf_grid)
            z = np.arcsinh((inside - center) / scale)
            keep = np.unique(np.concatenate([
                np.searchsorted(cg, np.linspace(cg[0], cg[-1], _START + 1)),
                np.searchsorted(z, np.linspace(z[0], z[-1], _START + 1))]).clip(0, inside.size - 1))
            inside = inside[keep]
        pts = np.unique(np.concatenate([[l], inside, [r]]))
        starts.append(np.stack([pts[:-1], pts[1:]], axis=1))
    pend = np.concatenate(starts, axis=0)
    acc = []
    comp_l = np.array([c[0] for c in comps])
    comp_r = np.array([c[1] for c in comps])
    for _round in range(80):
        lo, hi = pend[:, 0], pend[:, 1]
        h = hi - lo
        X = lo[:, None] + h[:, None] * C
        X[:, -1] = hi
        m, e = mass(X[:, :-1], X[:, 1:])                        # (K, n)
        V = np.concatenate([np.zeros((X.shape[0], 1)), np.cumsum(m, axis=1)], axis=1)
        tot = V[:, -1]
        tiny = tot <= 0.5 * tol
        good = (m > 0).all(axis=1) & ~tiny
        need = np.full(X.shape[0], 2)   # pieces a failing interval asks for (16 at most but at an end)
        ok = tiny.copy()
        if good.any():
            Xg, Vg, tg = X[good], V[good], tot[good]
            S = Vg / tg[:, None]
            S[:, -1] = 1.0
            c = Xg.copy()
            for k in range(1, n + 1):
                c[:, k:] = (c[:, k:] - c[:, k - 1:-1]) / (S[:, k:] - S[:, :-k])
            # test points: extrema of prod(s - S_k) inside each gap (Newton on its log-derivative)
            lo_s, hi_s = S[:, :-1], S[:, 1:]
            st = 0.5 * (lo_s + hi_s)
            for _ in range(_NEWTON):
                dd = st[:, :, None] - S[:, None, :]
                g = (1.0 / dd).sum(-1)
                g2 = (1.0 / dd ** 2).sum(-1)
                st = np.clip(st + g / g2, lo_s + 0.1 * (hi_s - lo_s), hi_s - 0.1 * (hi_s - lo_s))
            xt = np.broadcast_to(c[:, n:n + 1], st.shape).copy()
            for k in range(n - 1, -1, -1):
                xt = c[:, k:k + 1] + (st - S[:, k:k + 1]) * xt
            mono = (xt > Xg[:, :-1]) & (xt < Xg[:, 1:])
            xt_c = np.clip(xt, Xg[:, :-1], Xg[:, 1:])
            mt, et = mass(Xg[:, :-1], xt_c)
            err = np.abs(Vg[:, :-1] + mt - st * tg[:, None])
            ig = e[good].sum(axis=1) + et.max(axis=1)
            okg = mono.all(axis=1) & (err.max(axis=1) <= 0.9 * tol) & (ig <= 0.05 * tol)
            ok[np.nonzero(good)[0][okg]] = True
            # pieces for a failing interval: the interpolation error scales as h^(n+1)
            # (the quadrature's as h^8), so cut into about (err / tol)^(1/(n+1)) parts
            ratio = np.maximum(err.max(axis=1) / (0.5 * tol), (ig / (0.02 * tol)) ** ((n + 1) / 8))
            # (a non-monotone one too: its error says how many)
            want = np.ceil(_CUT * ratio ** (1.0 / (n + 1)))
            need[np.nonzero(good)[0]] = np.clip(np.where(np.isfinite(want), want, 2), 2, 64)
            # power form of the Newton polynomial in s in [0, 1], for the accepted ones
            ca, Sa = c[okg], S[okg]
            P = np.zeros((ca.shape[0], n + 1))
            P[:, 0] = ca[:, n]
            for k in range(n - 1, -1, -1):
                P[:, 1:] = P[:, :-1] - Sa[:, k:k + 1] * P[:, 1:]   # P <- (s - S_k) P + c_k
                P[:, 0] = ca[:, k] - Sa[:, k] * P[:, 0]
            Pall = np.zeros((X.shape[0], n + 1))
            Pall[np.nonzero(good)[0][okg]] = P
        else:
            Pall = np.zeros((X.shape[0], n + 1))
        # tiny intervals: the straight line from lo to hi (u-error at most their mass)
        Pall[tiny, 0] = lo[tiny]
        Pall[tiny, 1] = h[tiny]
        if ok.any():
            acc.append((lo[ok], hi[ok], X[ok], V[ok], Pall[ok]))
        bad = ~ok
        if not bad.any():
            break
        lb, hb, pc = lo[bad], hi[bad], np.minimum(need[bad], 16).astype(np.int64)
        mid = 0.5 * (lb + hb)
        stuck = ~((mid > lb) & (mid < hb)) | ((hb - lb) <= 1e-13 * np.maximum(np.abs(lb), np.abs(hb)))
        if stuck.any():
            x0 = float(lb[stuck][0])
            raise ValueError(f"could not reach u_resolution={u_resolution:g} near x={x0!r}: the density "
                             "may be unbounded or wildly oscillating there; shrink the support or raise "
                             "u_resolution")
        # cut interval j into pc[j] parts: equal parts, or geometric ones (in the
        # distance from center) for a tail interval spanning more than a factor 4
        dl, dh = np.abs(lb - center), np.abs(hb - center)
        same_side = (lb - center) * (hb - center) > 0
        geo = same_side & (np.maximum(dl, dh) > 4 * np.minimum(dl, dh))
        k = np.arange(pc.sum()) - np.repeat(np.cumsum(pc) - pc, pc)
        frac = k / np.repeat(pc, pc)
        L_, H_ = np.repeat(lb, pc), np.repeat(hb, pc)
        lin = L_ + frac * (H_ - L_)
        dL, dH = np.repeat(dl, pc), np.repeat(dh, pc)
        sgn = np.sign(np.repeat(lb + hb, pc) - 2 * center)
        with np.errstate(divide="ignore", invalid="ignore"):
            geo_pts = center + sgn * dL * (dH / dL) ** frac
        new_lo = np.where(np.repeat(geo, pc), geo_pts, lin)
        new_lo[frac == 0] = L_[frac == 0]
        new_hi = np.concatenate([new_lo[1:], [0.0]])
        last = np.cumsum(pc) - 1
        new_hi[last] = hb
        pend = np.stack([new_lo, new_hi], 1)
        # an interval at a component's end (where the density may vanish or blow up
        # like a power, so that x(u) is not smooth there) is cut geometrically
        # toward the end instead, by the power law m(d) ~ d^p of the mass within d
        # of the end fitted to its first two node masses: pieces whose masses
        # shrink by _END_RATIO each, down to an end piece of mass below tol / 4
        wb = hb - lb
        at_l = np.abs(lb[:, None] - comp_l[None, :]).min(1) <= 0.01 * wb
        at_r = np.abs(hb[:, None] - comp_r[None, :]).min(1) <= 0.01 * wb
        ends = at_l ^ at_r
        if ends.any():
            mb, Xb, nb = m[bad], X[bad], need[bad]
            extra = []
            for j in np.nonzero(ends)[0]:
                side = 1.0 if at_l[j] else -1.0
                cum = np.cumsum(mb[j] if side > 0 else mb[j][::-1])
                e0 = lb[j] if side > 0 else hb[j]
                d = np.abs(Xb[j] - e0)[1:] if side > 0 else np.abs(Xb[j] - e0)[::-1][1:]
                frac = 8.0 ** -np.arange(2, 0, -1)            # no power law: w/64, w/8
                if cum[0] > 0 and cum[1] > cum[0]:
                    p = float(np.clip(np.log(cum[1] / cum[0]) / np.log(d[1] / d[0]), 0.25, 16.0))
                    # cut points by their mass m (a fraction of the interval's) under the
                    # power law, x = w m^(1/p): nb[j] pieces of equal mass; below the
                    # first, pieces whose masses halve, down to an end piece of mass
                    # below tol / 4; a piece's error grows with its mass, so where
                    # neighbouring masses differ by more than 2^(1/3) in the heaviest
                    # _END_FINE levels (the lowest equal pieces among them) it is cut
                    # geometrically to that ratio
                    k = int(nb[j])
                    levels = int(np.clip(np.ceil(np.log(max(cum[-1] / k / (0.25 * tol), 1.0))
                                                 / np.log(_END_RATIO)), 0, 64))
                    m = np.concatenate([_END_RATIO ** -np.arange(levels, 0, -1.0) / k, np.arange(1, k) / k])
                    m = np.concatenate([m, [1.0]])
                    fine = m[1:] / m[:-1] > 2 ** (1 / 3) + 1e-12
                    fine &= m[1:] >= _END_RATIO ** -_END_FINE / k
                    a, ratio = m[:-1], m[1:] / m[:-1]
                    n_sub = np.where(fine, np.ceil(np.log(ratio) / np.log(2 ** (1 / 3)) - 1e-9), 1)
                    n_sub = n_sub.astype(np.int64)
                    piece = np.repeat(np.arange(a.size), n_sub)
                    first = np.repeat(np.cumsum(n_sub) - n_sub, n_sub)
                    step = (np.arange(piece.size) - first + 1) / n_sub[piece]
                    m = np.concatenate([m[:1], a[piece] * ratio[piece] ** step])
                    frac = m[:-1] ** (1.0 / p)
                cuts = e0 + side * wb[j] * frac
                pts = np.sort(np.concatenate([[lb[j], hb[j]], cuts]))
                extra.append(np.stack([pts[:-1], pts[1:]], 1))
            pend = np.concatenate([pend[~np.repeat(ends, pc)]] + extra)
        if sum(t[0].size for t in acc) + pend.shape[0] > max_intervals:
            raise ValueError(f"more than {max_intervals} intervals needed for u_resolution="
                             f"{u_resolution:g}; raise u_resolution or narrow the support")
    else:
        raise ValueError("PINV setup did not converge in 80 rounds; raise u_resolution")
    lo = np.concatenate([t[0] for t in acc])
    order_ = np.argsort(lo, kind="stable")
    cat = lambda j: np.concatenate([t[j] for t in acc])[order_]  # noqa: E731
    return cat(0), cat(1), cat(2), cat(3), cat(4)


def _domain_and_components(fn, what, a, b, c, u_resolution, scan_points):
    """Scan, cut the tails, find the components of positive density."""
    if what == "pdf" and math.isfinite(a) and math.isfinite(b):
        # nothing to cut: one scan of the support (uniform plus the points that
        # approach each end geometrically) does for gaps and the mass guess
        ends = np.concatenate([a + (b - a) * 10.0 ** -np.arange(1.0, 13.0),
                               b - (b - a) * 10.0 ** -np.arange(1.0, 13.0)])
        x2 = np.unique(np.concatenate([np.linspace(a, b, scan_points), [c], ends]))
        f2 = _eval(fn, x2, "pdf")
        comps = _components_from_scan(fn, x2, f2, "pdf")
        if not comps:
            raise ValueError("pdf is zero on every scanned point of the support; the density has "
                             "zero mass there")
        return (a, b), comps, x2, _trapz_cum(x2, f2)
    x1 = _scan_grid(a, b, c)
    if what == "pdf":
        f1 = _eval(fn, x1, "pdf")
        cum = _trapz_cum(x1, f1)
        total = cum[-1]
        if not total > 0:
            raise ValueError("pdf is zero on every scanned point of the support; the density has "
                             "zero mass there (or its mode is far from center: pass center=)")
        eps = 0.05 * u_resolution * total
        # left cut: last grid point whose left-tail mass is below eps
        L = x1[max(0, np.searchsorted(cum, eps, side="right") - 1)] if math.isinf(a) else a
        R = x1[min(x1.size - 1, np.searchsorted(cum, total - eps, side="left"))] if math.isinf(b) else b
        for side, bound, xe, fe in (("left", a, x1[0], f1[0]), ("right", b, x1[-1], f1[-1])):
            if math.isinf(bound) and fe * abs(xe - c) > eps:
                raise ValueError(f"the {side} tail is too heavy to cut at |x - center| = 1e20 for "
                                 f"u_resolution={u_resolution:g}; give a finite support")
    else:
        F1 = _eval(fn, x1, "cdf")
        if (F1 < -1e-12).any() or (F1 > 1 + 1e-12).any():
            raise ValueError("cdf returned values outside [0, 1]")
        if (np.diff(F1) < -1e-14).any():
            i = int(np.argmax(np.diff(F1) < -1e-14))
            raise ValueError(f"cdf decreases between x={x1[i]!r} and x={x1[i + 1]!r}; a CDF must be "
                             "non-decreasing")
        eps = 0.05 * u_resolution
        lo_mass, hi_mass = F1[0], 1.0 - F1[-1]
        if (math.isinf(a) and lo_mass > eps) or (math.isinf(b) and hi_mass > eps):
            raise ValueError("cdf does not reach 0 and 1 within |x - center| <= 1e20; check it or "
                             "give a finite support")
        L = x1[max(0, np.searchsorted(F1, F1[0] + eps, side="right") - 1)] if math.isinf(a) else a
        R = x1[min(x1.size - 1, np.searchsorted(F1, F1[-1] - eps, side="left"))] if math.isinf(b) else b
        if not F1[-1] - F1[0] > 0:
            raise ValueError("cdf is constant on the scanned support: zero mass")
    if not R > L:
        raise ValueError("the cut domain is empty; check the support and center")
    # fine scan of the cut domain
    x2 = np.unique(np.concatenate([np.linspace(L, R, scan_points), x1[(x1 >= L) & (x1 <= R)]]))
    if what == "pdf":
        f2 = _eval(fn, x2, "pdf")
        comps = _components_from_scan(fn, x2, f2, "pdf")
        cdfg = _trapz_cum(x2, f2)
    else:
        F2 = _eval(fn, x2, "cdf")
        if (np.diff(F2) < -1e-14).any():
            i = int(np.argmax(np.diff(F2) < -1e-14))
            raise ValueError(f"cdf decreases between x={x2[i]!r} and x={x2[i + 1]!r}; a CDF must be "
                             "non-decreasing")
        comps = [(float(L), float(R))]
        cdfg = F2
    if not comps:
        raise ValueError("pdf is zero on every scanned point of the cut domain: zero mass")
    return (float(L), float(R)), comps, x2, cdfg


def from_pdf(pdf, *, support=(-math.inf, math.inf), u_resolution: float = 1e-10, order: int = 5,
             center: float | None = None, scan_points: int = 4096, device=None,
             backend: str = "auto") -> NumericalInverse:
    """Inverse-transform sampler of the density ``pdf`` (any scale: normalised here).

    pdf: callable taking a 1-D float64 CPU tensor and returning the density there
      (same shape, float64, >= 0, finite); called on many points at once.
    support: (a, b), ends may be infinite; u = 0 and u = 1 map to a and b.
    u_resolution: the bound on the u-error ``max |u - CDF(ppf(u))|`` (scipy's
      default 1e-10), in [1e-14, 1e-5].
    order: degree of the interpolating polynomials (3..12; 5 as scipy).
    center: a point with positive density near the bulk; the tail scan starts
      there (default: the midpoint of a finite support, its finite end, else 0).
    scan_points: size of the uniform scan that finds zero-density gaps.
    device: where the tables live (sampling and ppf run there).
    backend: "auto" (the compiled C kernel on CPU where it builds, else torch
      ops, with one warning), "c" (the kernel; ValueError if it cannot build or
      the device is not the CPU) or "torch" (torch ops on any device).

    Raises ValueError for a negative, NaN or infinite density value, zero mass, a
    tail too heavy to cut, or a resolution that cannot be reached.
    """
    return _numerical_inverse(pdf, "pdf", support, u_resolution, order, center, scan_points, device,
                              backend)


def from_cdf(cdf, *, support=(-math.inf, math.inf), u_resolution: float = 1e-10, order: int = 5,
             center: float | None = None, scan_points: int = 4096, device=None,
             backend: str = "auto") -> NumericalInverse:
    """Inverse-transform sampler of a distribution given by its CDF.

    Same contract and options as :func:`from_pdf`; the interval masses are CDF
    differences (so the u-error is measured against the given CDF, which must be
    continuous, non-decreasing, 0 at the left end and 1 at the right end of the
    support). A decreasing CDF raises ValueError.
    """
    return _numerical_inverse(cdf, "cdf", support, u_resolution, order, center, scan_points, device,
                              backend)


def _numerical_inverse(fn, kind: str, support, u_resolution, order, center, scan_points, device, backend):
    """The setup shared by :func:`from_pdf` and :func:`from_cdf`; ``kind`` is "pdf" or "cdf"."""
    a, b = _check_common(support, u_resolution, order)
    _check_backend(backend, torch.device(device) if device is not None else torch.device("cpu"))
    if not callable(fn):
        raise ValueError(f"{kind} must be a callable taking and returning float64 tensors")
    c = _default_center(a, b, center)
    domain, comps, grid, cdfg = _domain_and_components(fn, kind, a, b, c, u_resolution, scan_points)
    mass = _PdfMass(fn) if kind == "pdf" else _CdfMass(fn)
    area_guess = float(cdfg[-1]) if kind == "pdf" else float(cdfg[-1] - cdfg[0])
    lo, hi, X, V, P = _build(mass, grid=grid, cdf_grid=cdfg, comps=comps, u_resolution=u_resolution,
                             order=order, area_guess=area_guess, center=c)
    return NumericalInverse(mass=mass, pdf=fn if kind == "pdf" else None, support=(a, b), domain=domain,
                            components=comps, a=lo, b=hi, X=X, V=V, P=P, area=float(V[:, -1].sum()),
                            order=order, u_resolution=u_resolution, device=device, backend=backend)
