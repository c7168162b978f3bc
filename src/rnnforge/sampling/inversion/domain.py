"""Before any interval: where the distribution lives.

The density (or CDF) is scanned on a grid: log-spaced out to 1e20 from
``center`` on an infinite side, uniform on the cut domain. On an infinite side
the tail is cut where it holds less than 5% of the wanted u-resolution; runs of
exact zeros split the support into components (intervals of positive density),
whose ends are located by bisection. A tail too heavy to cut at 1e20 and a
non-finite density value are refused here (through :func:`.quadrature.evaluate`),
so this is where a cut by tail mass or a change of variable for heavy tails and
singular ends would go.
"""
from __future__ import annotations

import math

import numpy as np

from .quadrature import evaluate


def scan_grid(a: float, b: float, c: float, per_decade: int = 8) -> np.ndarray:
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


def trapz_cum(x, f):
    return np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(x))])


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
        f = evaluate(fn, pts, what) > 0
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


def domain_and_components(fn, what, a, b, c, u_resolution, scan_points):
    """Scan, cut the tails, find the components of positive density."""
    if what == "pdf" and math.isfinite(a) and math.isfinite(b):
        # nothing to cut: one scan of the support (uniform plus the points that
        # approach each end geometrically) does for gaps and the mass guess
        ends = np.concatenate([a + (b - a) * 10.0 ** -np.arange(1.0, 13.0),
                               b - (b - a) * 10.0 ** -np.arange(1.0, 13.0)])
        x2 = np.unique(np.concatenate([np.linspace(a, b, scan_points), [c], ends]))
        f2 = evaluate(fn, x2, "pdf")
        comps = _components_from_scan(fn, x2, f2, "pdf")
        if not comps:
            raise ValueError("pdf is zero on every scanned point of the support; the density has "
                             "zero mass there")
        return (a, b), comps, x2, trapz_cum(x2, f2)
    x1 = scan_grid(a, b, c)
    if what == "pdf":
        f1 = evaluate(fn, x1, "pdf")
        cum = trapz_cum(x1, f1)
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
        F1 = evaluate(fn, x1, "cdf")
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
        f2 = evaluate(fn, x2, "pdf")
        comps = _components_from_scan(fn, x2, f2, "pdf")
        cdfg = trapz_cum(x2, f2)
    else:
        F2 = evaluate(fn, x2, "cdf")
        if (np.diff(F2) < -1e-14).any():
            i = int(np.argmax(np.diff(F2) < -1e-14))
            raise ValueError(f"cdf decreases between x={x2[i]!r} and x={x2[i + 1]!r}; a CDF must be "
                             "non-decreasing")
        comps = [(float(L), float(R))]
        cdfg = F2
    if not comps:
        raise ValueError("pdf is zero on every scanned point of the cut domain: zero mass")
    return (float(L), float(R)), comps, x2, cdfg
