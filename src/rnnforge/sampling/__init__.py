"""rnnforge.sampling: generation by inverse transform (the notes' Ex2) and
calibration by the probability integral transform (Ex1).

Every sampler maps u ~ U[0, 1] through a quantile function, ``x = ppf(u)``, in
float64, batched, on any torch device, seeded by a ``torch.Generator``; each has
``ppf(u)``, ``cdf(x)`` where known, ``sample(shape, generator=...)`` and
``u_error(n)`` = ``max |u - CDF(ppf(u))|`` (scipy.stats.sampling's metric).

Samplers: :func:`from_distribution` (torch.distributions, with numerical
quantiles for Gamma/Chi2/Beta/StudentT), :func:`from_pdf` and :func:`from_cdf`
(PINV-style numerical inversion), :func:`from_samples` (empirical),
:class:`Categorical` and :func:`sample_categorical` (and :class:`CategoricalStepper`
for a loop that draws every step), :class:`Mixture`,
:class:`Truncated`, and the learned :class:`PiecewiseLinearQuantile`.
Calibration: :func:`pit`, :func:`randomized_pit`, :func:`uniformity`,
:func:`pit_histogram`.
"""
from ._base import Sampler, UError
from .categorical import Categorical, CategoricalStepper, sample_categorical
from .distributions import (DistributionSampler, beta_cdf, beta_ppf, betainc, chi2_cdf, chi2_ppf,
                            from_distribution, gamma_cdf, gamma_ppf, student_t_cdf, student_t_ppf)
from .empirical import Empirical, from_samples
from .inversion import NumericalInverse, from_cdf, from_pdf
from .mixture import Mixture, Truncated
from .pit import UniformityResult, ks_pvalue, pit, randomized_pit, uniformity
from .plots import pit_histogram
from .quantile import (PiecewiseLinearQuantile, PiecewiseLinearQuantileNet, QuantileFit, fit_quantile,
                       pinball_loss)

__all__ = [
    "Sampler", "UError",
    "pit", "randomized_pit", "uniformity", "UniformityResult", "ks_pvalue", "pit_histogram",
    "from_distribution", "DistributionSampler", "betainc", "gamma_cdf", "gamma_ppf", "beta_cdf",
    "beta_ppf", "student_t_cdf", "student_t_ppf", "chi2_cdf", "chi2_ppf",
    "from_pdf", "from_cdf", "NumericalInverse",
    "from_samples", "Empirical",
    "Categorical", "sample_categorical", "CategoricalStepper",
    "Mixture", "Truncated",
    "PiecewiseLinearQuantile", "PiecewiseLinearQuantileNet", "fit_quantile", "QuantileFit", "pinball_loss",
]
