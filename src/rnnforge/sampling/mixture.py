"""Mixtures and truncations of any sampler, still by inverse transform.

``Truncated(base, low, high)``: ``ppf(u) = base.ppf(F(a) + u (F(b) - F(a)))``.

``Mixture(components, weights)``: the CDF is ``sum_k w_k F_k``; its quantile is
found by a bracketed root search (the quantile lies between the smallest and the
largest component quantile at the same u), to ``|F(x) - u| <= 1e-13``. For speed
``sample`` uses the composition form of one uniform by default: u picks the
component k by its weight interval [W_{k-1}, W_k) and ``(u - W_{k-1}) / w_k``
goes through that component's ppf. This is exact in distribution but not
monotone in u; ``sample(..., method="inversion")`` draws ``ppf(U)`` instead.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ._base import F64, Sampler, as_f64, as_shape, check_finite

__all__ = ["Mixture", "Truncated"]


#: below this mass of [low, high] under an analytic base the truncated law gets its own inverse:
#: rescaling u costs the base CDF's rounding (1e-16 absolute near 1) divided by the mass, and in
#: an upper tail F(a) + u (F(b) - F(a)) rounds to 1 (x = inf) for u within 1e-16 / mass of 1
_RESCALE_MIN_MASS = 0.5


class Truncated(Sampler):
    """``base`` restricted to [low, high] (either may be infinite).

    Meets the u-resolution of any sampler, measured against the truncated law:

    * a base built by :func:`from_pdf` / :func:`from_cdf`: its table is cut where
      the tails hold less than the resolution, and its u-error divided by the
      mass of [low, high] would exceed it, so the truncated law gets its own
      inverse, built from the base's pdf (or cdf) on [low, high] with the base's
      options (a far tail such as the normal on [7, 8] included);
    * a scalar :func:`from_distribution` base where [low, high] holds less than
      half the mass: the same, from the distribution's density
      (``exp(log_prob)``), since its CDF near 1 is known only to 1e-16 absolute;
    * otherwise ``ppf(u) = base.ppf(F(a) + u (F(b) - F(a)))`` (exact for the
      analytic bases in the bulk; for a batched base or an empirical, mixture or
      spline base the u-error is the base's divided by the mass).

    ``inverse`` is the own inverse when there is one, else None. ValueError if
    low >= high, a bound is NaN, or [low, high] holds no mass of ``base`` (in
    float64).
    """

    def __init__(self, base: Sampler, low: float = -math.inf, high: float = math.inf):
        if not isinstance(base, Sampler):
            raise ValueError("Truncated needs an rnnforge sampler (from_pdf, from_distribution, ...)")
        low, high = float(low), float(high)
        if math.isnan(low) or math.isnan(high) or not low < high:
            raise ValueError(f"truncation bounds must satisfy low < high, got ({low}, {high})")
        self.base = base
        self.device = base.device
        self.batch_shape = base.batch_shape
        self.low, self.high = low, high
        bl, bh = base.support
        if torch.is_tensor(bl) or torch.is_tensor(bh):
            self.support = (low, high)
        else:
            self.support = (max(low, bl), min(high, bh))
            if not self.support[0] < self.support[1]:
                raise ValueError(f"[{low}, {high}] lies outside the support {base.support} of the base "
                                 "sampler: zero mass")
        self.inverse = self._own_inverse(base)
        if self.inverse is not None:
            return
        lo = torch.full(base.batch_shape, low, dtype=F64, device=base.device)
        hi = torch.full(base.batch_shape, high, dtype=F64, device=base.device)
        self._Fa = base._cdf(lo)
        self._Fb = base._cdf(hi)
        self._mass = self._Fb - self._Fa
        if bool((self._mass <= 0).any()):
            raise ValueError(f"[{low}, {high}] has zero mass under the base sampler (in float64); "
                             "widen the bounds")

    def _own_inverse(self, base):
        """The truncated law's own numerical inverse, or None where rescaling u is exact enough."""
        from .distributions import DistributionSampler
        from .inversion import NumericalInverse, from_cdf, from_pdf
        sup = self.support
        if isinstance(base, NumericalInverse):
            opts = dict(support=sup, u_resolution=base.u_resolution, order=base.order,
                        device=base.device, backend=base.backend)
            if base._pdf_fn is not None:
                return _wrap_zero_mass(from_pdf, base._pdf_fn, opts, self)
            return _wrap_zero_mass(from_cdf, base._mass.cdf, opts, self)
        if isinstance(base, DistributionSampler) and not len(base.batch_shape):
            ends = torch.tensor([self.low, self.high], dtype=F64, device=base.device)
            Fa, Fb = base._cdf(ends).tolist()
            if Fb - Fa >= _RESCALE_MIN_MASS:
                return None
            dist = base.dist

            def pdf(x):
                with torch.no_grad():
                    lp = dist.log_prob(x.to(base.dtype).to(base.device)).to(F64).cpu()
                return torch.exp(lp)
            return _wrap_zero_mass(from_pdf, pdf, dict(support=sup, device=base.device), self)
        return None

    def _ppf(self, u):
        if self.inverse is not None:
            return self.inverse._ppf(u)
        x = self.base._ppf((self._Fa + u * self._mass).clamp(0.0, 1.0))
        x = x.clamp(self.support[0], self.support[1])
        x = torch.where(u <= 0, torch.full_like(x, self.support[0]), x)
        return torch.where(u >= 1, torch.full_like(x, self.support[1]), x)

    def sample(self, shape=(), *, generator: torch.Generator | None = None):
        if self.inverse is not None:
            return self.inverse.sample(shape, generator=generator)
        return super().sample(shape, generator=generator)

    def _cdf(self, x):
        if self.inverse is not None:
            return self.inverse._cdf(x)
        xc = x.clamp(self.low, self.high)
        out = ((self.base._cdf(xc) - self._Fa) / self._mass).clamp(0.0, 1.0)
        return torch.where(torch.isnan(x), x, out)

    def u_error(self, n: int = 100_000):
        if self.inverse is not None:
            return self.inverse.u_error(n)
        return super().u_error(n)

    def __repr__(self):
        return f"Truncated({self.base!r}, low={self.low}, high={self.high})"


def _wrap_zero_mass(build, fn, opts, t):
    try:
        return build(fn, **opts)
    except ValueError as e:
        if "zero mass" in str(e) or "zero on every" in str(e):
            raise ValueError(f"[{t.low}, {t.high}] has zero mass under the base sampler (in float64); "
                             "widen the bounds") from None
        raise


class Mixture(Sampler):
    """Finite mixture ``sum_k w_k F_k`` of scalar samplers (see the module doc).

    components: a sequence of rnnforge samplers with empty batch_shape and a CDF.
    weights: non-negative, finite, not all zero (normalised here).
    """

    def __init__(self, components: Sequence[Sampler], weights):
        comps = list(components)
        if not comps:
            raise ValueError("Mixture needs at least one component")
        for c in comps:
            if not isinstance(c, Sampler):
                raise ValueError("Mixture components must be rnnforge samplers")
            if len(c.batch_shape):
                raise ValueError("Mixture components must have an empty batch_shape")
        w = as_f64(weights, name="weights").reshape(-1)
        if w.numel() != len(comps):
            raise ValueError(f"{len(comps)} components but {w.numel()} weights")
        check_finite(w, "weights")
        if bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ValueError("weights must be >= 0 and not all zero")
        self.components = comps
        self.weights = w / w.sum()
        self.device = comps[0].device
        self.batch_shape = torch.Size()
        self._cw = torch.cumsum(self.weights, 0).to(self.device)
        self._cw[-1] = 1.0
        los = [c.support[0] for c in comps]
        his = [c.support[1] for c in comps]
        self.support = (float(min(los)), float(max(his)))

    def _cdf(self, x):
        out = torch.zeros_like(x)
        for wk, c in zip(self.weights.tolist(), self.components):
            if wk > 0:
                out = out + wk * c._cdf(x)
        return torch.where(torch.isnan(x), x, out.clamp(0.0, 1.0))

    def _ppf(self, u):
        shape = u.shape
        u = u.reshape(-1)
        qs = torch.stack([c._ppf(u) for wk, c in zip(self.weights.tolist(), self.components) if wk > 0])
        lo, hi = qs.min(0).values, qs.max(0).values
        x = self._solve(u, lo, hi)
        x = torch.where(u <= 0, torch.full_like(x, self.support[0]), x)
        x = torch.where(u >= 1, torch.full_like(x, self.support[1]), x)
        return x.reshape(shape)

    def _solve(self, u, lo, hi, max_iter: int = 200):
        """Illinois false position on [lo, hi] where F(lo) <= u <= F(hi)."""
        out = lo.clone()
        act = torch.nonzero((hi > lo) & (u > 0) & (u < 1)).reshape(-1)
        a, b, ua = lo[act], hi[act], u[act]
        fa, fb = self._cdf(a) - ua, self._cdf(b) - ua
        side = torch.zeros_like(a)
        for _ in range(max_iter):
            if act.numel() == 0:
                break
            denom = fb - fa
            x = torch.where(denom > 0, (a * fb - b * fa) / torch.where(denom > 0, denom, 1.0), 0.5 * (a + b))
            x = torch.where((x > a) & (x < b), x, 0.5 * (a + b))
            fx = self._cdf(x) - ua
            out[act] = x
            done = (fx.abs() <= 1e-13) | ((b - a) <= 4e-16 * x.abs() + 1e-300)
            left = fx < 0                                   # root in [x, b]
            # Illinois: halve the stale end's residual when the same end is kept twice
            fb = torch.where(left & (side == 1), fb / 2, fb)
            fa = torch.where(~left & (side == -1), fa / 2, fa)
            a, fa = torch.where(left, x, a), torch.where(left, fx, fa)
            b, fb = torch.where(left, b, x), torch.where(left, fb, fx)
            side = torch.where(left, torch.ones_like(side), -torch.ones_like(side))
            keep = ~done
            act, a, b, fa, fb, ua, side = act[keep], a[keep], b[keep], fa[keep], fb[keep], ua[keep], side[keep]
        return out

    def sample(self, shape=(), *, generator: torch.Generator | None = None, method: str = "composition"):
        if method not in ("composition", "inversion"):
            raise ValueError(f"method must be 'composition' or 'inversion', got {method!r}")
        shape = as_shape(shape)
        u = torch.rand(shape, dtype=F64, device=self.device, generator=generator)
        if method == "inversion":
            return self._ppf(u)
        flat = u.reshape(-1)
        k = torch.searchsorted(self._cw, flat, right=True).clamp_(max=len(self.components) - 1)
        start = torch.cat([self._cw.new_zeros(1), self._cw[:-1]])
        w = self.weights.to(self.device)
        inner = ((flat - start[k]) / w[k]).clamp(0.0, 1.0)
        out = torch.empty_like(flat)
        for j, c in enumerate(self.components):
            sel = k == j
            if bool(sel.any()):
                out[sel] = c._ppf(inner[sel])
        return out.reshape(shape)

    def __repr__(self):
        return f"Mixture({len(self.components)} components, weights={self.weights.tolist()})"
