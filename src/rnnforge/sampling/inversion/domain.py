"""Before any interval: where the distribution lives.

The density (or CDF) is scanned on a grid: log-spaced out to 1e20 from
``center`` on an infinite side (1e300 if a tail is not cut by 1e20), uniform on
the cut domain. On an infinite side
the tail is cut where it holds less than 5% of the wanted u-resolution (by its
mass, so a tail as heavy as the Levy law's, cut near 1e23, is sampled); runs of
exact zeros split the support into components (intervals of positive density),
whose ends are located by bisection.

The edges: an infinite or undefined value exactly at a finite end of the support
is taken as a singular end (the density is not called there again); a
non-finite value far out in a tail, beyond the points that already hold all but
a negligible mass (a pdf that overflows to NaN at 1e20), ends the scan on that
side; any other non-finite value is refused. At each finite component end the
density's power law ``f ~ |x - e|^beta`` is fitted from points within 1e-14 to
1e-13 of the component's width (:func:`singular_ends`): ``beta < 0`` marks a
singular end, integrated after a change of variable (:class:`.quadrature.PdfMass`),
``beta <= -1`` (not integrable) is refused.
"""
from __future__ import annotations

import math

import numpy as np

from .quadrature import evaluate


#: the tail scan reaches |x - center| = 10^_NEAR, and 10^_FAR where a tail is not cut by then (a
#: tail as heavy as the Levy law's); not further at once, since some densities return garbage
#: when x * x overflows (scipy's jf_skew_t is 0.186 at 1e300)
_NEAR, _FAR = 20, 300


def scan_grid(a: float, b: float, c: float, per_decade: int = 8, far: int = _NEAR) -> np.ndarray:
    """Points from c out to each end: log-spaced to +-10^far on an infinite side,
    uniform plus geometric towards a finite end."""
    parts = [np.array([c])]
    offs = 10.0 ** np.arange(-3.0, far + 1e-9, 1.0 / per_decade)
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


def _scan(fn, what, x, a, b, c):
    """``(x, f)``: the function on the sorted grid ``x``, non-finite values judged.

    At an exact finite end of the support a non-finite pdf value (a singular
    end) takes its neighbour's value, for the scan only. On an infinite side the
    grid stops before the first non-finite value from the centre outward (the
    caller checks that the tail is cut before it: ``cut_off``, the first such x
    and its value per side). Anything else raises ValueError."""
    f = evaluate(fn, x, what, strict=False)
    bad = ~np.isfinite(f)
    cut_off, odd = {}, set()
    keep = np.ones(x.size, bool)
    if what == "pdf":
        for e, step in ((a, 1), (b, -1)):
            if not math.isfinite(e):
                continue
            # within 4 ulps of the end (where a singular density overflows), the end's own
            # value, and a zero there next to a positive value, are replaced by the value
            # inside (the end is then a component end, checked by singular_ends)
            near = np.abs(x - e) <= 4 * np.spacing(abs(e) if e else 1.0)
            j = np.nonzero(near)[0]
            if not j.size:
                continue
            i_in = j[-1] + 1 if step > 0 else j[0] - 1
            if not 0 <= i_in < x.size or not np.isfinite(f[i_in]) or not f[i_in] > 0:
                continue
            fix = near & (bad | (f == 0))
            if fix.any():
                f[fix] = f[i_in]
                bad[fix] = False
                odd.add(float(e))
    if not bad.any():
        return x, f, cut_off, odd
    for sign, bound in ((-1.0, a), (1.0, b)):
        side = (x - c) * sign > 0
        out = bad & side
        if math.isinf(bound) and out.any():
            d = np.abs(x - c)
            i = int(np.nonzero(out)[0][np.argmin(d[out])])
            cut_off[sign] = (float(x[i]), float(f[i]))
            drop = side & (d >= d[i])
            keep &= ~drop
            bad &= ~drop
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{what} is {f[i]} at x={float(x[i])!r}; it must be finite on the support "
                         "(an infinite value is allowed only at an end of the support)")
    return x[keep], f[keep], cut_off, odd


def singular_ends(fn, comps, support, domain, scale, odd=()):
    """``(e, side, k, beta, d, f)`` for each finite component end e where the density grows without
    bound like ``|x - e|^beta``, -1 < beta < 0 (side +1 at a left end, -1 at a right
    end); k = ceil(2 / (beta + 1)) in [2, 64] is the power of the change of variable
    ``x = e + side h s^k`` that makes the integrand vanish like s^(k (beta + 1) - 1)
    at the end (see :class:`.quadrature.PdfMass`), and f the density at distance d
    from e, the nearer point of the fit. The law is fitted at 1e-14 and
    1e-13 of ``min(width, max(|e|, 1))`` from e; ends made by the tail cut are skipped.
    Ends where the scan found no finite value, or a zero next to a positive value,
    are listed whatever beta (k = 2 for beta >= 0: the density is never called at e)."""
    out = []
    for l, r in comps:
        w = r - l
        for e, side in ((l, 1.0), (r, -1.0)):
            if (side > 0 and math.isinf(support[0]) and e == domain[0]) or \
                    (side < 0 and math.isinf(support[1]) and e == domain[1]):
                continue
            x = np.unique(e + side * min(w, max(abs(e), 1.0)) * np.array([1e-14, 1e-13]))
            d = np.abs(x - e)
            f = evaluate(fn, x, "pdf", scale=scale)
            beta = 0.0
            if d.size == 2 and (d > 0).all() and (f > 0).all():
                beta = math.log(f[1] / f[0]) / math.log(d[1] / d[0])
            if beta >= -0.01 and e not in odd:
                continue
            if beta <= -0.995:
                raise ValueError(f"pdf grows like |x - {float(e)!r}|^{beta:.3g} toward x={float(e)!r}; a density must "
                                 "be integrable (narrow the support away from it)")
            k = int(np.clip(math.ceil(2.0 / (max(beta, -0.99) + 1.0)), 2, 64))
            ref = (float(d[0]), float(f[0])) if d.size and d[0] > 0 and f[0] > 0 else (1.0, 0.0)
            out.append((float(e), side, k, beta, *ref))
    return out


def domain_and_components(fn, what, a, b, c, u_resolution, scan_points):
    """Scan, cut the tails, find the components of positive density and, for a pdf,
    its singular ends. Returns ``(domain, components, grid, cdf_grid, singular, scale)``."""
    if what == "pdf" and math.isfinite(a) and math.isfinite(b):
        # nothing to cut: one scan of the support (uniform plus the points that
        # approach each end geometrically) does for gaps and the mass guess
        ends = np.concatenate([a + (b - a) * 10.0 ** -np.arange(1.0, 13.0),
                               b - (b - a) * 10.0 ** -np.arange(1.0, 13.0)])
        x2 = np.unique(np.concatenate([np.linspace(a, b, scan_points), [c], ends]))
        x2, f2, _, odd = _scan(fn, "pdf", x2, a, b, c)
        scale = float(f2.max())
        comps = _components_from_scan(fn, x2, f2, "pdf")
        if not comps:
            raise ValueError("pdf is zero on every scanned point of the support; the density has "
                             "zero mass there")
        return ((a, b), comps, x2, trapz_cum(x2, f2), singular_ends(fn, comps, (a, b), (a, b), scale, odd),
                scale)
    x1 = scan_grid(a, b, c)
    if what == "pdf":
        x1, f1, cut_off, _ = _scan(fn, "pdf", x1, a, b, c)
        total = trapz_cum(x1, f1)[-1]
        eps = 0.05 * u_resolution * total
        if (math.isinf(a) and f1[0] * abs(x1[0] - c) > eps) or (math.isinf(b) and f1[-1] * abs(x1[-1] - c) > eps):
            x1 = scan_grid(a, b, c, far=_FAR)         # a tail not cut at 1e20: look out to 1e300
            x1, f1, cut_off, _ = _scan(fn, "pdf", x1, a, b, c)
        cum = trapz_cum(x1, f1)
        total = cum[-1]
        if not total > 0:
            raise ValueError("pdf is zero on every scanned point of the support; the density has "
                             "zero mass there (or its mode is far from center: pass center=)")
        eps = 0.05 * u_resolution * total
        # left cut: last grid point whose left-tail mass is below eps
        L = x1[max(0, np.searchsorted(cum, eps, side="right") - 1)] if math.isinf(a) else a
        R = x1[min(x1.size - 1, np.searchsorted(cum, total - eps, side="left"))] if math.isinf(b) else b
        for side, sign, bound, xe, fe in (("left", -1.0, a, x1[0], f1[0]), ("right", 1.0, b, x1[-1], f1[-1])):
            # the mass beyond the last scanned point, about f |x - c| for a power-law tail
            if math.isinf(bound) and fe * abs(xe - c) > eps:
                if sign in cut_off:
                    xb, fb = cut_off[sign]
                    raise ValueError(f"pdf is {fb} at x={float(xb)!r}, in the {side} tail before it holds less "
                                     f"than u_resolution={u_resolution:g}; it must be finite there")
                raise ValueError(f"the {side} tail is too heavy to cut: it holds more than "
                                 f"u_resolution={u_resolution:g} beyond |x - center| = 1e{_FAR}; give a "
                                 "finite support")
    else:
        x1, F1, cut_off, _ = _scan(fn, "cdf", x1, a, b, c)
        if (F1 < -1e-12).any() or (F1 > 1 + 1e-12).any():
            raise ValueError("cdf returned values outside [0, 1]")
        if (np.diff(F1) < -1e-14).any():
            i = int(np.argmax(np.diff(F1) < -1e-14))
            raise ValueError(f"cdf decreases between x={float(x1[i])!r} and x={float(x1[i + 1])!r}; a CDF must be "
                             "non-decreasing")
        eps = 0.05 * u_resolution
        lo_mass, hi_mass = F1[0], 1.0 - F1[-1]
        if (math.isinf(a) and lo_mass > eps) or (math.isinf(b) and hi_mass > eps):
            raise ValueError(f"cdf does not reach 0 and 1 within |x - center| <= 1e{_FAR}; check it or "
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
        x2, f2, _, odd = _scan(fn, "pdf", x2, a, b, c)
        scale = float(f2.max())
        comps = _components_from_scan(fn, x2, f2, "pdf")
        cdfg = trapz_cum(x2, f2)
        if not comps:
            raise ValueError("pdf is zero on every scanned point of the cut domain: zero mass")
        return ((float(L), float(R)), comps, x2, cdfg,
                singular_ends(fn, comps, (a, b), (float(L), float(R)), scale, odd), scale)
    F2 = evaluate(fn, x2, "cdf")
    if (np.diff(F2) < -1e-14).any():
        i = int(np.argmax(np.diff(F2) < -1e-14))
        raise ValueError(f"cdf decreases between x={float(x2[i])!r} and x={float(x2[i + 1])!r}; a CDF must be "
                         "non-decreasing")
    return (float(L), float(R)), [(float(L), float(R))], x2, F2, [], 0.0
