"""Ex1: PIT values, uniformity tests (against scipy.stats), randomized PIT, PIT plot."""
import math

import numpy as np
import pytest
import scipy.stats as st
import torch

from rnnforge.sampling import ks_pvalue, pit, pit_histogram, randomized_pit, uniformity

F64 = torch.float64


def test_pit_of_normal_data_matches_scipy_cdf(gen):
    x = torch.randn(1000, dtype=F64, generator=gen) * 2 + 1
    d = torch.distributions.Normal(torch.tensor(1.0, dtype=F64), torch.tensor(2.0, dtype=F64))
    u = pit(x, d)                       # object with .cdf
    np.testing.assert_allclose(u.numpy(), st.norm.cdf(x.numpy(), 1, 2), rtol=1e-13, atol=1e-15)
    u2 = pit(x, d.cdf)                  # plain callable
    assert torch.equal(u, u2)
    assert u.dtype == F64 and u.shape == x.shape


def test_pit_rejects_a_density_passed_as_cdf():
    with pytest.raises(ValueError, match="cdf returned values outside"):
        pit(torch.tensor([0.0, 0.1]), lambda x: 5.0 * torch.ones_like(x))


@pytest.mark.parametrize("n", [10, 50, 300, 5000, 100_000])
def test_ks_statistic_and_pvalue_match_scipy_kstest(n, gen):
    for power in (1.0, 1.15):       # uniform, and a mild departure (small p-values)
        u = torch.rand(n, dtype=F64, generator=gen) ** power
        r = uniformity(u)
        ref = st.kstest(u.numpy(), "uniform")
        assert r.ks_statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert r.ks_pvalue == pytest.approx(ref.pvalue, rel=1e-3, abs=1e-300)


# every branch of the computation: n <= 140 (Durbin matrix, one-sided tail), n > 140
# (Durbin matrix, Pelz-Good, one-sided tail), the closed forms near d = 1/(2n) and d = 1
@pytest.mark.parametrize("n", [10, 37, 140, 141, 1000, 10_000, 100_000])
@pytest.mark.parametrize("p", [0.999, 0.9, 0.5, 0.172, 0.05, 1e-3, 1e-8])
def test_ks_pvalue_against_scipy_kstwo_across_n(n, p):
    d = st.kstwo.isf(p, n)
    assert ks_pvalue(d, n) == pytest.approx(st.kstwo.sf(d, n), rel=1e-6)


@pytest.mark.parametrize("n", [10, 300])
def test_ks_pvalue_closed_forms_at_the_ends(n):
    # n d <= 1: P(D_n >= d) = 1 - n!/n^n (2 n d - 1)^n (Ruben-Gambino); d near 1: 2 (1 - d)^n
    d = 0.8 / n
    exact = 1.0 - math.exp(math.lgamma(n + 1) - n * math.log(n) + n * math.log(2 * n * d - 1))
    assert ks_pvalue(d, n) == pytest.approx(exact, rel=1e-12)
    assert ks_pvalue(0.4 / n, n) == 1.0
    d = 1.0 - 0.5 / n
    assert ks_pvalue(d, n) == pytest.approx(2 * (1 - d) ** n, rel=1e-12)
    assert ks_pvalue(1.0, n) == 0.0


def test_ks_pelz_good_branch_agrees_with_the_exact_matrix():
    # where scipy's scheme uses the Pelz-Good expansion (n > 140, n d^1.5 > 1.4) the
    # exact Durbin matrix is still cheap for moderate n: the two agree
    from rnnforge.sampling.pit import _durbin_cdf, _pelz_good_cdf
    for n, rel in ((141, 5e-5), (2000, 5e-7), (20_000, 1e-8)):
        for z in (0.6, 0.9, 1.2, 1.45):   # d sqrt(n); n d^2 < 2.2
            d = z / math.sqrt(n)
            assert n * d ** 1.5 > 1.4
            exact = 1.0 - _durbin_cdf(n, d)
            assert 1.0 - _pelz_good_cdf(n, d) == pytest.approx(exact, rel=rel)


def test_ks_pvalue_at_the_issue_point():
    # n = 1e4 where p = 0.172: the limit law with Stephens' correction was 6.4e-4 off
    d = st.kstwo.isf(0.172, 10_000)
    assert ks_pvalue(d, 10_000) == pytest.approx(0.172, rel=1e-9)


def test_chi_square_and_moments_match_scipy_and_formulas(gen):
    u = torch.rand(4000, dtype=F64, generator=gen)
    r = uniformity(u, bins=25)
    counts = np.histogram(u.numpy(), bins=25, range=(0, 1))[0]
    ref = st.chisquare(counts)
    assert r.chi2_statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert r.chi2_pvalue == pytest.approx(ref.pvalue, rel=1e-9)
    un = u.numpy()
    assert r.mean_z == pytest.approx((un.mean() - 0.5) / math.sqrt(1 / (12 * 4000)), rel=1e-10)
    assert r.var_z == pytest.approx((un.var(ddof=1) - 1 / 12) / math.sqrt(1 / (180 * 4000)), rel=1e-10)


def test_calibrated_forecast_passes_and_miscalibrated_fails(gen):
    x = torch.randn(20000, dtype=F64, generator=gen)
    good = uniformity(pit(x, lambda t: torch.special.ndtr(t)))
    bad = uniformity(pit(x, lambda t: torch.special.ndtr(t / 1.3)))     # overdispersed forecast
    assert good.passes(1e-3)
    assert not bad.passes(1e-3) and bad.var_z < -5


def test_randomized_pit_makes_discrete_data_uniform(gen):
    lam = 3.0
    x = torch.poisson(torch.full((20000,), lam, dtype=F64), generator=gen)
    cdf = lambda k: torch.as_tensor(st.poisson.cdf(k.numpy(), lam))  # noqa: E731
    assert uniformity(randomized_pit(x, cdf, generator=gen)).passes(1e-3)
    assert not uniformity(pit(x, cdf)).passes(1e-3)                # plain PIT is not uniform
    # explicit left limit gives the same values for the same generator state
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = randomized_pit(x[:100], cdf, generator=g1)
    b = randomized_pit(x[:100], cdf, cdf_left=lambda k: cdf(k - 1), generator=g2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad, msg", [([0.1, 1.5], "u must lie in"), ([0.1, -0.01], "u must lie in"),
                                      ([0.1, float("nan")], "u contains NaN")])
def test_uniformity_rejects_bad_u(bad, msg):
    with pytest.raises(ValueError, match=msg):
        uniformity(torch.tensor(bad))


def test_uniformity_needs_two_values():
    with pytest.raises(ValueError, match="at least 2 values"):
        uniformity(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="bins must be >= 2"):
        uniformity(torch.rand(10), bins=1)


def test_pit_histogram_png(tmp_path, gen):
    path = tmp_path / "pit.png"
    fig = pit_histogram(torch.rand(500, generator=gen), path, bins=10)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert len(ax.patches) >= 10                     # 10 bars (+ band)
    heights = sorted(p.get_height() for p in ax.patches[:10])
    assert sum(heights) == 500
    with pytest.raises(ValueError, match="bins must be an integer >= 2"):
        pit_histogram(torch.rand(5), bins=1)
