"""The inverse CDF as a table: one polynomial per interval, and the lookups into it.

Interval i covers u in (B_{i-1}, B_i] and x in [a_i, b_i]; there
``x = P_i(s)``, ``s = (u - B_{i-1}) / W_i``, in power form, clamped to
[a_i, b_i] so that ppf is monotone. Two lookups lead to it: a guide table
(Chen and Asau) over G equal u-cells for ``ppf``, and for ``sample`` a finer
table of 2^13 u-cells whose polynomials are the interval polynomials
re-expanded exactly, so that a draw needs no search. The evaluation itself,
by torch ops or the compiled kernel, is in :mod:`.backends`; ``u = 0`` and
``u = 1`` map to the ends of the support there.
"""
from __future__ import annotations

import numpy as np
import torch

from .._base import F64, Sampler, UError, as_f64, as_shape, midpoint_grid
from . import backends


_U_PROBES = np.array([1e-3, 1e-2, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999])


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
        # 1/W overflows below 2^-1024: such an interval is a point in u (s = 0 there)
        invW = np.where(W > 2.0 ** -1000, 1.0 / np.where(W > 2.0 ** -1000, W, 1.0), 0.0)
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
        self.backend = backends.check_backend(backend, self.device)

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
        """x for u (1-D float64) through the sampling table, as ``sample`` on the torch path."""
        return backends.sample_cells(self, u)

    def _ppf(self, u):
        shape = u.shape
        u = u.reshape(-1)
        kernel = self._kernel() if u.device.type == "cpu" else None
        if kernel is not None:
            return backends.c_ppf(kernel, u).reshape(shape)
        return backends.torch_ppf(self, u).reshape(shape)

    def sample(self, shape=(), *, generator=None):
        """Draw ``shape`` values, ``x = ppf(U)`` up to rounding.

        With the compiled kernel (``backend`` "c", or "auto" on CPU where it
        builds) the uniforms are Philox4x32-10 under a 64-bit key drawn from
        ``generator``, evaluated in one threaded pass (``torch.get_num_threads()``
        threads); otherwise ``torch.rand`` on ``generator`` through torch ops.
        Each backend is reproducible from the generator; the two streams differ.
        """
        shape = as_shape(shape)
        n = int(np.prod(shape)) if len(shape) else 1
        kernel = self._kernel()
        if kernel is not None:
            return backends.c_sample(kernel, n, generator).reshape(shape)
        return backends.torch_sample(self, n, generator).reshape(shape)

    def _kernel(self):
        """``(library, table, keep)`` when this sampler runs the compiled kernel, else None.
        The caller holds ``keep`` (the tensors the table points into) during its call."""
        return backends.c_table(self)

    def u_error(self, n: int = 100_000) -> UError:
        """u-error ``max |u - CDF(ppf(u))|`` with the CDF recomputed from the density
        (or the given cdf), as scipy.stats.sampling defines it, over the ``n``
        midpoints ``(i + 1/2)/n`` and also over points in every interval of the table
        (at 0.001, 0.01, 0.05, 1/4, 1/2, 3/4, 0.95, 0.99 and 0.999 of it), so that an interval much
        narrower than 1/n in u (near a singular end, far in a tail) is checked too and
        the maximum is not understated. ``mean_absolute_error`` is over the midpoints."""
        mid = midpoint_grid(n, self.device)
        cum = self._np["cum"]
        lo, w = cum[:-1], np.diff(cum)
        inner = (lo[:, None] + w[:, None] * _U_PROBES).reshape(-1)
        inner = torch.as_tensor(inner[(inner > 0) & (inner < 1)], dtype=F64, device=self.device)
        err_mid = (mid - self._cdf(self._ppf(mid))).abs()
        err_in = (inner - self._cdf(self._ppf(inner))).abs()
        top = max(err_mid.max().item(), err_in.max().item() if err_in.numel() else 0.0)
        return UError(top, err_mid.mean().item())

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
