"""Ex2 from data: the interpolated empirical quantile function.

With sorted data x_(0) <= ... <= x_(n-1) and plotting positions p_i = (i + 1/2)/n
(Hazen), the CDF is the broken line through the points (x_(i), p_i) and the
quantile function its inverse, evaluated by direct indexing (no search):
``t = n u - 1/2``, ``i = floor(t)``, ``x = x_(i) + (t - i)(x_(i+1) - x_(i))``.

The tails beyond the extreme points each hold mass 1/(2n):

* ``tails="exponential"`` (default): an exponential tail
  ``F(x) = p_0 exp((x - x_(0)) / beta_lo)`` below the minimum (and the mirror
  image above the maximum), so samples can fall outside the data range, as a new
  sample from the population would. The scale is the maximum-likelihood scale of
  the k = min(20, n - 1) spacings next to the extreme under an exponential tail,
  ``beta = (1/k) sum_{j=1..k} j (x_(j) - x_(j-1))`` (for the lower tail);
* ``tails="clamp"``: point masses 1/(2n) at the minimum and the maximum (the
  support is the data range).

Ties give flat pieces of the quantile function (atoms of the CDF).
"""
from __future__ import annotations

import math

import torch

from ._base import F64, Sampler, as_f64

__all__ = ["from_samples", "Empirical"]


class Empirical(Sampler):
    """Interpolated empirical distribution (see the module doc); build with
    :func:`from_samples`. Attributes: ``data`` (sorted, float64), ``tails``,
    ``beta_lo``, ``beta_hi`` (exponential tail scales, 0 for clamp)."""

    def __init__(self, data, *, tails: str = "exponential", device=None):
        if tails not in ("exponential", "clamp"):
            raise ValueError(f"tails must be 'exponential' or 'clamp', got {tails!r}")
        x = as_f64(data, name="data", device=device).reshape(-1)
        if x.numel() == 0:
            raise ValueError("from_samples needs at least one data point; got an empty array")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("data contain NaN or inf; drop or impute them first")
        self.data = torch.sort(x).values
        self.n = n = x.numel()
        self.device = x.device
        self.batch_shape = torch.Size()
        self.tails = tails
        self.beta_lo = self.beta_hi = 0.0
        if tails == "exponential" and n >= 2:
            k = min(20, n - 1)
            j = torch.arange(1, k + 1, dtype=F64, device=x.device)
            lo_sp = self.data[1:k + 1] - self.data[:k]                     # spacings from the min
            hi_sp = self.data[n - 1 - torch.arange(k, device=x.device)] - self.data[n - 2 - torch.arange(k, device=x.device)]
            self.beta_lo = float((j * lo_sp).mean())
            self.beta_hi = float((j * hi_sp).mean())
        lo = -math.inf if self.beta_lo > 0 else float(self.data[0])
        hi = math.inf if self.beta_hi > 0 else float(self.data[-1])
        self.support = (lo, hi)

    def _ppf(self, u):
        n, xs = self.n, self.data
        p0 = 0.5 / n
        if n == 1:
            out = xs[0].expand(u.shape).clone()
        else:
            t = u * n - 0.5
            i = torch.floor(t).clamp(0, n - 2)
            frac = (t - i).clamp(0.0, 1.0)
            ii = i.to(torch.int64)
            a, b = xs[ii], xs[ii + 1]
            out = torch.addcmul(a, frac, b - a)
        if self.beta_lo > 0:
            low = xs[0] + self.beta_lo * torch.log(u.clamp_min(1e-320) / p0)
            out = torch.where(u < p0, low, out)
        if self.beta_hi > 0:
            high = xs[-1] - self.beta_hi * torch.log((1.0 - u).clamp_min(1e-320) / p0)
            out = torch.where(u > 1.0 - p0, high, out)
        out = torch.where(u <= 0, torch.full_like(out, self.support[0]), out)
        return torch.where(u >= 1, torch.full_like(out, self.support[1]), out)

    def _cdf(self, x):
        n, xs = self.n, self.data
        p0 = 0.5 / n
        j = torch.searchsorted(xs, x.contiguous(), right=True)            # points <= x
        i = (j - 1).clamp(0, max(n - 2, 0))
        if n >= 2:
            a, b = xs[i], xs[i + 1]
            width = (b - a)
            frac = torch.where(width > 0, (x - a) / torch.where(width > 0, width, 1.0), 1.0)
            mid = (i.to(F64) + 0.5 + frac.clamp(0, 1)) / n
        else:
            mid = torch.full_like(x, 0.5)
        below = j == 0
        above = j >= n
        if self.beta_lo > 0:
            lo_v = p0 * torch.exp((x - xs[0]) / self.beta_lo)
        else:
            lo_v = torch.zeros_like(x)
        if self.beta_hi > 0:
            hi_v = 1.0 - p0 * torch.exp(-(x - xs[-1]) / self.beta_hi)
        else:
            hi_v = torch.ones_like(x)
        out = torch.where(below, lo_v, torch.where(above, hi_v, mid))
        return torch.where(torch.isnan(x), x, out.clamp(0.0, 1.0))

    def __repr__(self):
        return f"Empirical(n={self.n}, tails={self.tails!r})"


def from_samples(data, *, tails: str = "exponential", device=None) -> Empirical:
    """Inverse-transform sampler of the interpolated empirical distribution of
    ``data`` (any shape, flattened). ``tails`` is ``"exponential"`` (default) or
    ``"clamp"``; see :mod:`rnnforge.sampling.empirical`. ValueError for empty data
    or NaN/inf values."""
    return Empirical(data, tails=tails, device=device)
