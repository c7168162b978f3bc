"""The user's function, checked on every call, and interval masses from it.

:func:`evaluate` is the one place where the user's pdf or cdf is called, so
what counts as a valid value (finite, and >= 0 for a density) is decided here.
A :class:`PdfMass` integrates the pdf over intervals by Gauss-Lobatto
quadrature (one panel against two: an error estimate); a :class:`CdfMass`
takes CDF differences.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .._base import F64

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


_EPS = 2.0 ** -52
#: values of a density down to -_NEG_ULPS ulps of its scale are rounding (sin at a zero
#: crossing gives -2e-16) and count as 0; below that they are refused
_NEG_ULPS = 8


def evaluate(fn, x: np.ndarray, what: str, *, scale: float = 0.0, strict: bool = True) -> np.ndarray:
    """Call the user's function on a float64 CPU tensor; check what comes back.

    Complex values and a wrong shape are refused. For a pdf, a negative value
    within ``_NEG_ULPS`` ulps of the density's scale (``scale``, or the largest
    finite value of this call) is rounding and becomes 0; a lower one is refused.
    With ``strict`` (the default) a NaN or infinite value is refused too; without,
    it is returned for the caller to judge (the scan at the ends of the support).
    """
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = fn(torch.from_numpy(flat))
    out = torch.as_tensor(out).detach()
    if out.is_complex():
        raise ValueError(f"{what} returned complex values ({out.dtype}); it must return real numbers")
    out = out.to("cpu", F64).numpy().reshape(-1)
    if out.shape != flat.shape:
        raise ValueError(f"{what} returned shape {out.shape} for {flat.shape} points; "
                         "it must act elementwise on a 1-D float64 tensor")
    if what == "pdf" and not (out >= 0).all():
        neg = out < 0
        fin = out[np.isfinite(out)]
        thr = _NEG_ULPS * _EPS * max(scale, float(fin.max()) if fin.size else 0.0)
        if (out[neg] < -thr).any():
            i = int(np.argmax(out < -thr))
            raise ValueError(f"pdf is negative ({out[i]:g}) at x={float(flat[i])!r}; a density must be >= 0")
        out = np.where(neg, 0.0, out)
    # one pass for the common case (NaN fails both comparisons), details only on failure
    if strict and not ((out < np.inf) & (out > -np.inf)).all():
        bad = ~np.isfinite(out)
        i = int(np.argmax(bad))
        raise ValueError(f"{what} is {out[i]} at x={float(flat[i])!r}; it must be finite on the support "
                         "(an infinite value is allowed only at an end of the support)")
    return out.reshape(x.shape)


class PdfMass:
    """Mass of [lo, hi] by Gauss-Lobatto (one panel vs two: error estimate).

    ``singular``: (e, side, k, beta, d, f) for each component end e where the density
    behaves like |x - e|^beta, unbounded or not (side +1: a left end, -1: a right
    end). An interval ending there is integrated after the change of variable
    x = e + side h s^k, whose Jacobian k s^(k-1) makes the integrand vanish at
    s = 0 (k is chosen from beta, see :func:`.domain.singular_ends`), so the
    density is never called at e itself; one so narrow that its first node rounds
    to within a few ulps of e (x cannot follow the change of variable there)
    takes its mass from the power law fitted at e. ``scale``: the density's scale, for the rounding test of
    :func:`evaluate`.
    """

    def __init__(self, pdf, singular=(), scale: float = 0.0):
        self.pdf = pdf
        self.singular = list(singular)
        self.scale = scale

    def __call__(self, lo, hi):
        h = hi - lo
        pts = lo[..., None] + h[..., None] * _R
        jac = None
        floor_rows = []
        for e, side, k, beta, d_ref, f_ref in self.singular:
            sp = np.spacing(abs(e) if e else 1.0)
            near_d, far_d = (lo - e, hi - e) if side > 0 else (e - hi, e - lo)   # exact near e
            # where x cannot resolve the integrand, within float64's floor at e: an interval
            # a few ulps wide close to e, or one at e whose first node e + h s_1^k rounds to
            # within a few ulps of it; the power law f(t) = f_ref (t / d_ref)^beta fitted at e
            # gives its mass, M(far) - M(near), M(t) = f_ref d_ref (t / d_ref)^(beta + 1) / (beta + 1)
            pl = ((near_d == 0) & (h * _R[1] ** k <= 4 * sp)) | \
                ((h <= 64 * sp) & (near_d >= 0) & (far_d <= 100 * d_ref))
            if pl.any() and f_ref > 0:
                with np.errstate(divide="ignore", invalid="ignore"):
                    M = lambda t: f_ref * d_ref * (t / d_ref) ** (beta + 1.0) / (beta + 1.0)  # noqa: E731
                    floor_rows.append((pl, np.where(h[pl] > 0, M(far_d[pl]) - M(near_d[pl]), 0.0)))
                pts[pl] = e + side * d_ref            # not used: a point where the density is finite
            rows = ((lo == e) if side > 0 else (hi == e)) & ~pl
            if not rows.any():
                continue
            if jac is None:
                jac = np.ones(pts.shape)
            # s from the singular end: positions _R from lo (left end) or 1 - _R (right end)
            s = _R if side > 0 else 1.0 - _R
            sk = s ** k
            xs = e + side * h[rows][..., None] * sk
            j = k * s ** (k - 1)
            at_e = s == 0.0
            xs[..., at_e] = e + side * h[rows][..., None] * _R[1] ** k   # any point inside: weight 0
            pts[rows] = xs
            jac[rows] = np.where(at_e, 0.0, j)
        if not self.singular:
            f = evaluate(self.pdf, pts, "pdf", scale=self.scale)
        else:
            # within a few ulps of a singular end the density may overflow: those points carry
            # a vanishing weight (the Jacobian, or a width of a few ulps), so their value is 0
            f = evaluate(self.pdf, pts, "pdf", scale=self.scale, strict=False)
            bad = ~np.isfinite(f)
            if bad.any():
                near = np.zeros(pts.shape, bool)
                for e, *_ in self.singular:
                    near |= np.abs(pts - e) <= 8 * np.spacing(abs(e) if e else 1.0)
                if (bad & ~near).any():
                    i = np.nonzero((bad & ~near).reshape(-1))[0][0]
                    raise ValueError(f"pdf is {f.reshape(-1)[i]} at x={float(pts.reshape(-1)[i])!r}; it must be "
                                     "finite on the support (an infinite value is allowed only at an "
                                     "end of the support)")
                f = np.where(bad, 0.0, f)
            if jac is not None:
                f = f * jac
        one = h * (f @ _WA)
        two = h * (f @ _WB)
        err = np.abs(two - one)
        for few, m in floor_rows:
            two[few] = m
            err[few] = 0.0
        return two, err


class CdfMass:
    """Mass of [lo, hi] as F(hi) - F(lo), exact up to rounding; a decrease is refused."""

    def __init__(self, cdf):
        self.cdf = cdf

    def __call__(self, lo, hi):
        f = evaluate(self.cdf, np.stack([lo, hi]), "cdf")
        d = f[1] - f[0]
        if (d < -1e-14).any():
            i = int(np.argmax(d < -1e-14))
            a, b = float(lo.reshape(-1)[i]), float(hi.reshape(-1)[i])
            raise ValueError(f"cdf decreases between x={a!r} and x={b!r}; a CDF must be non-decreasing")
        return np.maximum(d, 0.0), np.zeros_like(d)
