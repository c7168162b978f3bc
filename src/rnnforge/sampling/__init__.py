"""rnnforge.sampling: generation by inverse transform (the notes' Ex2) and
calibration by the probability integral transform (Ex1).

Every sampler maps u ~ U[0, 1] through a quantile function, ``x = ppf(u)``, in
float64, batched, on any torch device, seeded by a ``torch.Generator``; each has
``ppf(u)``, ``cdf(x)`` where known, ``sample(shape, generator=...)`` and
``u_error(n)`` = ``max |u - CDF(ppf(u))|`` (scipy.stats.sampling's metric).
"""
from ._base import Sampler, UError
from .distributions import (DistributionSampler, beta_cdf, beta_ppf, betainc, chi2_cdf, chi2_ppf,
                            from_distribution, gamma_cdf, gamma_ppf, student_t_cdf, student_t_ppf)
from .inversion import NumericalInverse, from_cdf, from_pdf
from .pit import UniformityResult, ks_pvalue, pit, randomized_pit, uniformity

__all__ = [
    "Sampler", "UError",
    "pit", "randomized_pit", "uniformity", "UniformityResult", "ks_pvalue",
    "from_distribution", "DistributionSampler", "betainc", "gamma_cdf", "gamma_ppf", "beta_cdf",
    "beta_ppf", "student_t_cdf", "student_t_ppf", "chi2_cdf", "chi2_ppf",
    "from_pdf", "from_cdf", "NumericalInverse",
]
