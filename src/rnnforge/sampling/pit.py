"""The probability integral transform (the notes' Ex1) and tests of uniformity.

Ex1: if X is continuous with CDF F, then Y = F(X) ~ U[0, 1]. So the PIT values
``u = F(x)`` of data under a forecast F are a sample from U[0, 1] exactly when the
forecast is calibrated; :func:`uniformity` measures how far they are from it.
For a discrete X, F(X) is not uniform; the randomized PIT
``u = F(x-) + V (F(x) - F(x-))``, V ~ U[0, 1], is (Brockwell 2007).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._base import F64, as_f64, check_u

__all__ = ["pit", "randomized_pit", "uniformity", "UniformityResult", "ks_pvalue"]


def _call_cdf(cdf, x: torch.Tensor) -> torch.Tensor:
    f = cdf.cdf if hasattr(cdf, "cdf") else cdf
    if not callable(f):
        raise ValueError("cdf must be a callable, a sampler or a torch distribution with .cdf")
    out = f(x)
    return torch.as_tensor(out).to(F64)


def pit(x, cdf) -> torch.Tensor:
    """PIT values ``u = F(x)`` (Ex1) as float64.

    ``cdf`` is a callable taking and returning float64 tensors, or any object with a
    ``.cdf`` method (an rnnforge sampler, a torch distribution). NaN in x gives NaN.
    ValueError if the CDF returns values outside [0, 1].
    """
    x = as_f64(x, name="x")
    u = _call_cdf(cdf, x)
    ok = torch.isnan(u) | ((u >= 0) & (u <= 1))
    if u.numel() and not ok.all():
        raise ValueError("cdf returned values outside [0, 1]; pass a CDF, not a density")
    return u


def randomized_pit(x, cdf, *, cdf_left=None, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """Randomized PIT for a discrete distribution: ``u = F(x-) + V (F(x) - F(x-))``.

    ``cdf_left(x)`` is the left limit ``F(x-) = P(X < x)``; when omitted the support
    is taken to be the integers and ``F(x-) = F(x - 1)``. V ~ U[0, 1) comes from
    ``generator``. Under a correct forecast u ~ U[0, 1] exactly.
    """
    x = as_f64(x, name="x")
    hi = _call_cdf(cdf, x)
    lo = _call_cdf(cdf_left, x) if cdf_left is not None else _call_cdf(cdf, x - 1.0)
    if hi.numel() and (hi < lo).any():
        raise ValueError("cdf(x) < cdf_left(x) somewhere: the CDF must not decrease")
    v = torch.rand(hi.shape, dtype=F64, generator=generator, device=hi.device)
    return lo + v * (hi - lo)


# -- Kolmogorov-Smirnov p-value, written out (no scipy in the library) -----------

def _smirnov_sf(n: int, d: float) -> float:
    """Exact one-sided P(D_n^+ >= d) by the Birnbaum-Tingey (1951) sum, in log space."""
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    jmax = math.floor(n * (1.0 - d))
    j = torch.arange(jmax + 1, dtype=F64)
    a = 1.0 - d - j / n            # >= 0
    b = d + j / n                  # > 0
    logc = math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
    loga = torch.where(a > 0, torch.log(a.clamp_min(1e-300)), torch.full_like(a, -math.inf))
    logt = logc + (n - j) * loga + (j - 1) * torch.log(b)
    logt = torch.where((n - j) == 0, logc + (j - 1) * torch.log(b), logt)  # 0**0 = 1
    m = logt.max()
    return float(min(1.0, d * math.exp(m.item()) * torch.exp(logt - m).sum().item()))


def _kolmogorov_sf(lam: float) -> float:
    """Limiting Kolmogorov survival function Q(lambda) = P(sup|B| >= lambda)."""
    if lam <= 0:
        return 1.0
    if lam < 1.0:  # the theta-function form converges fast here
        s = sum(math.exp(-((2 * k - 1) ** 2) * math.pi ** 2 / (8 * lam * lam)) for k in range(1, 8))
        return max(0.0, min(1.0, 1.0 - math.sqrt(2 * math.pi) / lam * s))
    s = sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return max(0.0, min(1.0, 2.0 * s))


def ks_pvalue(d: float, n: int) -> float:
    """Two-sided one-sample KS p-value P(D_n >= d).

    Where it is below 0.2 it is twice the exact one-sided tail (Birnbaum-Tingey),
    which is the two-sided tail up to a term of order p**2 / 10 (relative error
    below 2e-4 against the exact law); above, the Kolmogorov limit with Stephens'
    (1970) finite-n correction ``lambda = (sqrt(n) + 0.12 + 0.11/sqrt(n)) d``,
    within 0.02 of the exact p-value for n >= 20 and 0.005 for n >= 1000: coarse
    where it cannot change a decision.
    """
    if n < 1:
        raise ValueError("ks_pvalue needs n >= 1")
    p2 = 2.0 * _smirnov_sf(n, d)
    if p2 < 0.2:
        return p2
    rn = math.sqrt(n)
    return _kolmogorov_sf((rn + 0.12 + 0.11 / rn) * d)


@dataclass(frozen=True)
class UniformityResult:
    """How far PIT values are from U[0, 1].

    ks_statistic, ks_pvalue: one-sample Kolmogorov-Smirnov against U[0, 1].
    chi2_statistic, chi2_pvalue, bins: Pearson chi-square on ``bins`` equal bins
    (``bins - 1`` degrees of freedom).
    mean, mean_z: sample mean and its z-score against 1/2 (sd ``sqrt(1/(12 n))``).
    var, var_z: sample variance and its z-score against 1/12 (sd ``sqrt(1/(180 n))``,
    from the uniform's fourth central moment 1/80).
    """

    n: int
    ks_statistic: float
    ks_pvalue: float
    chi2_statistic: float
    chi2_pvalue: float
    bins: int
    mean: float
    mean_z: float
    var: float
    var_z: float

    def passes(self, alpha: float = 1e-3) -> bool:
        """True when neither the KS nor the chi-square test rejects at level ``alpha``."""
        return self.ks_pvalue > alpha and self.chi2_pvalue > alpha


def uniformity(u, *, bins: int | None = None) -> UniformityResult:
    """Test that ``u`` (PIT values, any shape, flattened) is a sample of U[0, 1].

    ``bins`` for the chi-square test defaults to ``min(50, n // 20)`` (at least 2),
    which keeps at least 20 expected counts per bin.
    """
    u = check_u(u).reshape(-1).cpu()
    n = u.numel()
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 values, got {n}")
    if bins is None:
        bins = max(2, min(50, n // 20))
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    s, _ = torch.sort(u)
    i = torch.arange(1, n + 1, dtype=F64)
    d_plus = (i / n - s).max().item()
    d_minus = (s - (i - 1) / n).max().item()
    d = max(d_plus, d_minus)
    counts = torch.bincount((u * bins).long().clamp_(max=bins - 1), minlength=bins).to(F64)
    expected = n / bins
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    chi2_p = torch.special.gammaincc(torch.tensor((bins - 1) / 2.0, dtype=F64),
                                     torch.tensor(chi2 / 2.0, dtype=F64)).item()
    mean = u.mean().item()
    var = u.var(unbiased=True).item()
    return UniformityResult(
        n=n, ks_statistic=d, ks_pvalue=ks_pvalue(d, n),
        chi2_statistic=chi2, chi2_pvalue=chi2_p, bins=bins,
        mean=mean, mean_z=(mean - 0.5) / math.sqrt(1.0 / (12 * n)),
        var=var, var_z=(var - 1.0 / 12.0) / math.sqrt(1.0 / (180 * n)),
    )
