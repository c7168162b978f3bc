"""The fitted aggregate posterior: Gaussian copula over empirical marginals (Ex2), checked by the PIT (Ex1)."""

import math

import pytest
import torch

from rnnforge.errors import UserError
from rnnforge.sampling import uniformity
from rnnforge.vae.posterior import AggregatePosterior

F64 = torch.float64


def skewed_codes(n, generator):
    """Dependent, non-normal codes: an exponential, a mixture, and a dimension tied to the first."""
    e = torch.randn(n, 3, dtype=F64, generator=generator)
    a = torch.exp(e[:, 0])
    b = torch.where(e[:, 1] > 0, e[:, 1] + 3.0, e[:, 1] - 1.0)
    c = 0.8 * e[:, 0] + 0.6 * e[:, 2]
    return torch.stack([a, b, c], 1)


def test_copula_samples_have_the_fitted_marginals_and_the_codes_rank_correlation():
    g = torch.Generator().manual_seed(0)
    post = AggregatePosterior.fit(skewed_codes(5000, g), generator=g)
    draws = post.sample(100_000, generator=g)
    u = post.cdf(draws)  # each column U(0, 1) exactly when the marginal is the fitted one
    for j in range(3):
        r = uniformity(u[:, j])
        assert r.ks_pvalue > 1e-3 / 3, (j, r)
    # the normal scores of the draws carry the copula's correlation R = L L^T
    w = torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12))
    r_draws = torch.corrcoef(w.T)
    r_fit = post.chol @ post.chol.T
    assert torch.allclose(r_draws, r_fit, atol=0.02)
    assert r_fit[0, 2] > 0.7  # the tie between dimensions 0 and 2 is kept


def test_held_out_codes_are_uniform_under_the_fit_and_not_under_a_standard_normal():
    g = torch.Generator().manual_seed(1)
    post = AggregatePosterior.fit(skewed_codes(20_000, g), generator=g)
    held = skewed_codes(2000, g)
    for j in range(3):
        assert uniformity(post.cdf(held)[:, j]).ks_pvalue > 0.01 / 3
    prior = torch.special.ndtr(held)
    assert min(uniformity(prior[:, j]).ks_pvalue for j in range(2)) < 1e-6


def test_the_fit_survives_a_round_trip_through_tensors():
    g = torch.Generator().manual_seed(2)
    post = AggregatePosterior.fit(skewed_codes(300, g), generator=g)
    again = AggregatePosterior.from_tensors(post.tensors(), 3, "here")
    a = post.sample(50, generator=torch.Generator().manual_seed(9))
    b = again.sample(50, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert not math.isnan(float(a.sum()))


def test_the_rows_left_out_of_the_fit_are_not_in_it_and_their_pit_is_under_it():
    from rnnforge.vae.posterior import left_out_pit

    codes = torch.stack([torch.arange(50, dtype=F64), torch.arange(50, dtype=F64).flip(0) * 0.5], 1)
    u, post = left_out_pit(codes, 10, generator=torch.Generator().manual_seed(3))
    kept = set(post.data[:, 0].tolist())
    assert len(kept) == 40 and kept <= set(range(50))
    left = torch.tensor(sorted(set(range(50)) - kept), dtype=torch.long)
    want = post.cdf(codes[left])
    assert u.shape == (10, 2)
    assert torch.equal(u.sort(0).values, want.sort(0).values)
    with pytest.raises(UserError, match="leaving 48 of 50 codes out of the fit leaves too few"):
        left_out_pit(codes, 48)


def test_the_left_out_pit_of_independent_codes_is_uniform():
    """Over repetitions, the per-dimension KS p-values of rows left out of the fit are U(0, 1). The fit
    is of 100 times as many rows, so its own sampling error (which makes the one-sample KS test of
    n left-out rows against a fit of m rows reject more often, by a factor 1 + n/m on the statistic's
    variance) is negligible."""
    from scipy import stats

    from rnnforge.vae.posterior import left_out_pit

    g = torch.Generator().manual_seed(4)
    pvalues = []
    for _ in range(40):
        u, _ = left_out_pit(skewed_codes(20_000, g), 200, generator=g)
        pvalues += [uniformity(u[:, j]).ks_pvalue for j in range(3)]
    assert stats.kstest(pvalues, "uniform").pvalue > 1e-3
