"""The set-up rounds: intervals, their nodes, and the accuracy loop.

Every pending interval of a round is handled at once: Chebyshev-Lobatto nodes
in x, their masses (so their u-values), the Newton polynomial of x(u) through
them, and its u-error at the extremal points between nodes. An interval is
accepted when that error and the quadrature's error estimate are small;
otherwise it is cut, into about ``(err / tol)^(1/(n+1))`` pieces (geometric
ones in a tail), or, at a component's end where the density may vanish or blow
up like a power, toward the end by the power law fitted to its node masses
(:func:`_end_cuts`). The accepted intervals, sorted by x, are the table's
rows (:class:`.table.NumericalInverse`).
"""
from __future__ import annotations

import math

import numpy as np

def _cheb_lobatto(n: int) -> np.ndarray:
    return (1.0 - np.cos(np.pi * np.arange(n + 1) / n)) / 2.0


def build_intervals(mass, *, grid, cdf_grid, comps, u_resolution, order, area_guess, center):
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
_EDGE_TESTS = np.array([1e-3, 1e-2, 5e-2])   # extra test points, as fractions of the end gaps


def _initial_intervals(grid, cdf_grid, comps, center):
    """The first round's intervals, (K, 2): component ends and about 2 * _START
    grid points inside each component."""
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
    return np.concatenate(starts, axis=0)


def _end_pieces(lo, hi, at_left, masses, nodes, pieces, tol):
    """The pieces, (k, 2), of a failing interval [lo, hi] at a component's end (the
    left end if ``at_left``), where the density may vanish or blow up like a power,
    so that x(u) is not smooth: cut geometrically toward the end by the power law
    m(d) ~ d^p of the mass within d of the end, fitted to its first two node
    masses; pieces whose masses shrink by _END_RATIO each, down to an end piece
    of mass below tol / 4. ``masses`` and ``nodes`` are the interval's node
    masses and nodes, ``pieces`` the number of equal-mass pieces it asked for."""
    side = 1.0 if at_left else -1.0
    cum = np.cumsum(masses if side > 0 else masses[::-1])
    e0 = lo if side > 0 else hi
    d = np.abs(nodes - e0)[1:] if side > 0 else np.abs(nodes - e0)[::-1][1:]
    frac = 8.0 ** -np.arange(2, 0, -1)            # no power law: w/64, w/8
    if cum[0] > 0 and cum[1] > cum[0]:
        p = float(np.clip(np.log(cum[1] / cum[0]) / np.log(d[1] / d[0]), 0.25, 16.0))
        # cut points by their mass m (a fraction of the interval's) under the
        # power law, x = w m^(1/p): ``pieces`` pieces of equal mass; below the
        # first, pieces whose masses halve, down to an end piece of mass
        # below tol / 4; a piece's error grows with its mass, so where
        # neighbouring masses differ by more than 2^(1/3) in the heaviest
        # _END_FINE levels (the lowest equal pieces among them) it is cut
        # geometrically to that ratio
        k = pieces
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
    cuts = e0 + side * (hi - lo) * frac
    pts = np.unique(np.concatenate([[lo, hi], cuts]))     # near an end cuts may round together
    return np.stack([pts[:-1], pts[1:]], 1)


def _increasing(P: np.ndarray, width: np.ndarray, depth: int = 3) -> np.ndarray:
    """Which polynomials ``x = P(s)`` (power form, rows of P) are nondecreasing on
    [0, 1]: the Bernstein coefficients of P' bound it on an interval, so all of them
    >= 0 proves it; undecided rows are split in halves (de Casteljau) ``depth``
    times. A dip of the derivative below 0 by 1e-12 of the width (far below one
    ulp of x) counts as rounding."""
    n = P.shape[1] - 1
    m = n - 1
    D = P[:, 1:] * np.arange(1, n + 1)                       # P' in power form, degree m
    M = np.zeros((m + 1, m + 1))
    for j in range(m + 1):
        for i in range(j + 1):
            M[j, i] = math.comb(j, i) / math.comb(m, i)
    B = (D @ M.T)[:, None, :]                                # (K, pieces, m + 1)
    slack = (-1e-12 * np.abs(width))[:, None]
    ok = (B.min(-1) >= slack).all(-1)
    # undecided: not proven, but P' >= 0 at every piece's ends; B and slack follow their rows idx
    und = ~ok & (B[:, :, [0, -1]].min(-1) >= slack).all(-1)
    idx, B, slack = np.nonzero(und)[0], B[und], slack[und]
    for _ in range(depth):
        if not idx.size:
            break
        left, right = np.empty_like(B), np.empty_like(B)
        cur = B
        left[..., 0], right[..., -1] = cur[..., 0], cur[..., -1]
        for r in range(1, m + 1):
            cur = 0.5 * (cur[..., :-1] + cur[..., 1:])
            left[..., r], right[..., m - r] = cur[..., 0], cur[..., -1]
        B = np.concatenate([left, right], axis=1)
        good = (B.min(-1) >= slack).all(-1)
        ok[idx[good]] = True
        still = ~good & (B[:, :, [0, -1]].min(-1) >= slack).all(-1)
        idx, B, slack = idx[still], B[still], slack[still]
    return ok


def _rounds(mass, *, grid, cdf_grid, comps, u_resolution, order, tol, center, max_intervals=100_000):
    """The adaptive rounds. Returns the accepted intervals' tables."""
    n = order
    C = _cheb_lobatto(n)
    pend = _initial_intervals(grid, cdf_grid, comps, center)
    acc = []
    comp_l = np.array([c[0] for c in comps])
    comp_r = np.array([c[1] for c in comps])
    singular = getattr(mass, "singular", [])
    ends_x = np.concatenate([comp_l, comp_r])
    ends_w = np.concatenate([comp_r - comp_l] * 2)
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
            # and points close to the interval's ends, in the first and the last gap: where x(u)
            # is not smooth (a power law at a component's end) the error peaks there
            w0, w1 = hi_s[:, :1] - lo_s[:, :1], hi_s[:, -1:] - lo_s[:, -1:]
            st = np.concatenate([st, lo_s[:, :1] + _EDGE_TESTS * w0, hi_s[:, -1:] - _EDGE_TESTS * w1], 1)
            gap = np.concatenate([np.arange(n), np.zeros(_EDGE_TESTS.size, np.int64),
                                  np.full(_EDGE_TESTS.size, n - 1)])
            xt = np.broadcast_to(c[:, n:n + 1], st.shape).copy()
            for k in range(n - 1, -1, -1):
                xt = c[:, k:k + 1] + (st - S[:, k:k + 1]) * xt
            x_lo, x_hi = Xg[:, gap], Xg[:, gap + 1]
            mono = np.concatenate([(xt[:, :n] > x_lo[:, :n]) & (xt[:, :n] < x_hi[:, :n]),
                                   (xt[:, n:] >= x_lo[:, n:]) & (xt[:, n:] <= x_hi[:, n:])], 1)
            xt_c = np.clip(xt, x_lo, x_hi)
            mt, et = mass(x_lo, xt_c)
            err = np.abs(Vg[:, gap] + mt - st * tg[:, None])
            ig = e[good].sum(axis=1) + et.max(axis=1)
            okg = mono.all(axis=1) & (err.max(axis=1) <= 0.9 * tol) & (ig <= 0.05 * tol)
            # no polynomial at an end where the density is a power law (x(u) is not smooth
            # there, so the error between test points can exceed theirs): those intervals are
            # cut toward the end until tiny (a straight line, u-error below its mass)
            for e, side, _k, beta, *_ in singular:
                if abs(beta) > 0.01:
                    okg &= ~((lo[good] == e) if side > 0 else (hi[good] == e))
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
            # and only a polynomial increasing on all of [0, 1] is kept (ppf is monotone)
            inc = _increasing(P, Xg[okg, -1] - Xg[okg, 0])
            P = P[inc]
            okg[np.nonzero(okg)[0][~inc]] = False
            ok[np.nonzero(good)[0][okg]] = True
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
        lb, hb = lo[bad], hi[bad]
        mid = 0.5 * (lb + hb)
        # an interval of adjacent doubles cannot be cut: float64's floor, where the density is
        # so large that the CDF rises by more than the resolution within one spacing of x (near a
        # singular end); it is kept as the straight line, its u-error at most about half its mass
        floor = ~((mid > lb) & (mid < hb))
        near = (np.minimum(np.abs(lb[:, None] - ends_x), np.abs(hb[:, None] - ends_x))
                <= 1e-6 * ends_w).any(1)
        stuck = ~floor & ~near & ((hb - lb) <= 1e-13 * np.maximum(np.abs(lb), np.abs(hb)))
        if stuck.any():
            x0 = float(lb[stuck][0])
            raise ValueError(f"could not reach u_resolution={u_resolution:g} near x={float(x0)!r}: the density "
                             "may be unbounded or wildly oscillating there; shrink the support or raise "
                             "u_resolution")
        if floor.any():
            j = np.nonzero(bad)[0][floor]
            line = np.zeros((j.size, n + 1))
            line[:, 0], line[:, 1] = lo[j], h[j]
            acc.append((lo[j], hi[j], X[j], V[j], line))
            bad[j] = False
            if not bad.any():
                break
            lb, hb = lo[bad], hi[bad]
        pc = np.minimum(need[bad], 16).astype(np.int64)
        # cut interval j into pc[j] parts: equal parts, or geometric ones (in the
        # distance from center) for a tail interval spanning more than a factor 4
        dl, dh = np.abs(lb - center), np.abs(hb - center)
        same_side = np.sign(lb - center) * np.sign(hb - center) > 0
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
        # an interval at a component's end is cut toward that end instead (_end_pieces)
        wb = hb - lb
        at_l = np.abs(lb[:, None] - comp_l[None, :]).min(1) <= 0.01 * wb
        at_r = np.abs(hb[:, None] - comp_r[None, :]).min(1) <= 0.01 * wb
        ends = at_l ^ at_r
        if ends.any():
            mb, Xb, nb = m[bad], X[bad], need[bad]
            extra = [_end_pieces(lb[j], hb[j], bool(at_l[j]), mb[j], Xb[j], int(nb[j]), tol)
                     for j in np.nonzero(ends)[0]]
            pend = np.concatenate([pend[~np.repeat(ends, pc)]] + extra)
        pend = pend[pend[:, 1] > pend[:, 0]]          # cuts that rounded onto each other
        if sum(t[0].size for t in acc) + pend.shape[0] > max_intervals:
            raise ValueError(f"more than {max_intervals} intervals needed for u_resolution="
                             f"{u_resolution:g}; raise u_resolution or narrow the support")
    else:
        raise ValueError("PINV setup did not converge in 80 rounds; raise u_resolution")
    lo = np.concatenate([t[0] for t in acc])
    order_ = np.argsort(lo, kind="stable")
    cat = lambda j: np.concatenate([t[j] for t in acc])[order_]  # noqa: E731
    return cat(0), cat(1), cat(2), cat(3), cat(4)
