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


@pytest.mark.parametrize("n", [50, 300, 5000])
def test_ks_statistic_and_pvalue_match_scipy(n, gen):
    for power in (1.0, 1.15):       # uniform, and a mild departure (small p-values)
        u = torch.rand(n, dtype=F64, generator=gen) ** power
        r = uniformity(u)
        ref = st.kstest(u.numpy(), "uniform")
        assert r.ks_statistic == pytest.approx(ref.statistic, rel=1e-12)
        exact = st.kstwo.sf(r.ks_statistic, n)
        if exact < 0.1:
            assert r.ks_pvalue == pytest.approx(exact, rel=2e-3)
        else:
            assert abs(r.ks_pvalue - exact) < 0.02


@pytest.mark.parametrize("n, d", [(20, 0.2), (100, 0.05), (1000, 0.06), (10**6, 0.0015)])
def test_ks_pvalue_against_scipy_kstwo(n, d):
    exact = st.kstwo.sf(d, n)
    got = ks_pvalue(d, n)
    if exact < 0.1:
        assert got == pytest.approx(exact, rel=2e-3)
    else:
        assert abs(got - exact) < 0.02


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
