"""from_samples (empirical quantile), Mixture and Truncated."""
import math

import numpy as np
import pytest
import scipy.stats as st
import torch
import torch.distributions as D

from rnnforge.sampling import Mixture, Truncated, from_distribution, from_pdf, from_samples

F64 = torch.float64
T = lambda v: torch.tensor(v, dtype=F64)  # noqa: E731


def test_empirical_interpolates_the_plotting_positions(gen):
    data = torch.randn(500, dtype=F64, generator=gen)
    e = from_samples(data)
    xs = np.sort(data.numpy())
    p = (np.arange(500) + 0.5) / 500
    np.testing.assert_allclose(e.ppf(torch.tensor(p)).numpy(), xs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e.cdf(torch.tensor(xs)).numpy(), p, atol=1e-12)
    # between points: numpy's piecewise-linear interpolation
    u = torch.rand(1000, dtype=F64, generator=gen) * (1 - 1 / 500) + 0.5 / 500
    np.testing.assert_allclose(e.ppf(u).numpy(), np.interp(u.numpy(), p, xs), atol=1e-12)
    assert e.u_error().max_error < 1e-12


def test_empirical_exponential_tails(gen):
    data = torch.distributions.Exponential(T(1.0)).sample((20_000,)).to(F64)
    e = from_samples(data)
    assert e.support == (-math.inf, math.inf)
    assert 0.6 < e.beta_hi < 1.5                         # the upper tail of Exp(1) has scale 1
    n = 20_000
    u = T([0.1 / n, 0.4 / n])
    lo = e.ppf(u)
    xmin = float(data.min())
    np.testing.assert_allclose(lo.numpy(), xmin + e.beta_lo * np.log(u.numpy() / (0.5 / n)), rtol=1e-12)
    assert e.ppf(T([0.0, 1.0])).tolist() == [-math.inf, math.inf]
    hi = e.ppf(T([1 - 0.1 / n]))
    assert hi.item() > float(data.max())


def test_empirical_clamp_tails_and_ks(gen):
    data = torch.randn(2000, dtype=F64, generator=gen)
    e = from_samples(data, tails="clamp")
    assert e.support == (float(data.min()), float(data.max()))
    assert e.ppf(T([0.0, 1.0])).tolist() == [float(data.min()), float(data.max())]
    xs = np.sort(data.numpy())
    p = (np.arange(2000) + 0.5) / 2000
    ref_cdf = lambda x: np.interp(x, xs, p, left=0.0, right=1.0)  # noqa: E731  (atoms of 1/(2n) at the ends)
    x = e.sample(1_000_000, generator=gen).numpy()
    inner = (x > xs[0]) & (x < xs[-1])
    assert abs((~inner).mean() - 1 / 2000) < 5 * math.sqrt(1 / 2000 / 1e6)
    assert st.kstest(x[inner], lambda t: (ref_cdf(t) - p[0]) / (p[-1] - p[0])).pvalue > 1e-3


def test_empirical_errors_and_edges():
    with pytest.raises(ValueError, match="empty"):
        from_samples(torch.tensor([]))
    with pytest.raises(ValueError, match="NaN or inf"):
        from_samples(T([1.0, math.nan]))
    with pytest.raises(ValueError, match="tails must be"):
        from_samples(T([1.0, 2.0]), tails="pareto")
    one = from_samples(T([3.0]))
    assert one.ppf(T([0.0, 0.5, 1.0])).tolist() == [3.0, 3.0, 3.0]
    e = from_samples(T([1.0, 2.0, 3.0]))
    assert e.ppf(0.5).shape == () and e.ppf(torch.empty(0)).shape == (0,)


def _normal_gamma_mixture():
    N = from_distribution(D.Normal(T(-1.0), T(0.5)))
    G = from_distribution(D.Gamma(T(1.5), T(1.0)))
    ref = lambda x: 0.3 * st.norm.cdf(x, -1, 0.5) + 0.7 * st.gamma.cdf(x, 1.5)  # noqa: E731
    return Mixture([N, G], [3.0, 7.0]), ref


def test_mixture_quantile_and_sampling(gen):
    m, ref = _normal_gamma_mixture()
    u = torch.linspace(0.001, 0.999, 999, dtype=F64)
    x = m.ppf(u)
    assert bool((x[1:] > x[:-1]).all())
    assert np.abs(ref(x.numpy()) - u.numpy()).max() < 1e-12
    assert m.u_error(5000).max_error < 1e-12
    assert m.ppf(T([0.0, 1.0])).tolist() == [-math.inf, math.inf]
    assert st.kstest(m.sample(1_000_000, generator=gen).numpy(), ref).pvalue > 1e-3
    assert st.kstest(m.sample(50_000, generator=gen, method="inversion").numpy(), ref).pvalue > 1e-3


def test_mixture_of_pinv_components_with_separated_modes(gen):
    a = from_pdf(lambda x: torch.exp(-0.5 * (x + 50) ** 2))
    b = from_pdf(lambda x: torch.exp(-0.5 * (x - 50) ** 2))
    m = Mixture([a, b], [0.25, 0.75])
    ref = lambda x: 0.25 * st.norm.cdf(x, -50) + 0.75 * st.norm.cdf(x, 50)  # noqa: E731
    assert np.abs(ref(m.ppf(torch.linspace(0.01, 0.99, 99, dtype=F64)).numpy())
                  - np.linspace(0.01, 0.99, 99)).max() < 1e-10
    assert st.kstest(m.sample(1_000_000, generator=gen).numpy(), ref).pvalue > 1e-3


def test_mixture_errors():
    N = from_distribution(D.Normal(T(0.0), T(1.0)))
    with pytest.raises(ValueError, match="weights must be >= 0"):
        Mixture([N, N], [1.0, -1.0])
    with pytest.raises(ValueError, match="weights must be >= 0 and not all zero"):
        Mixture([N, N], [0.0, 0.0])
    with pytest.raises(ValueError, match="2 components but 3 weights"):
        Mixture([N, N], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        Mixture([N, N], [1.0, math.inf])
    with pytest.raises(ValueError, match="method must be"):
        Mixture([N], [1.0]).sample(3, method="rejection")


def test_truncated_normal_matches_scipy(gen):
    N = from_distribution(D.Normal(T(0.0), T(1.0)))
    t = Truncated(N, -1.0, 2.0)
    ref = st.truncnorm(-1, 2)
    u = torch.linspace(0, 1, 101, dtype=F64)
    np.testing.assert_allclose(t.ppf(u).numpy(), ref.ppf(u.numpy()), atol=1e-9)
    assert t.ppf(T([0.0, 1.0])).tolist() == [-1.0, 2.0]
    np.testing.assert_allclose(t.cdf(T([-3.0, 0.0, 5.0])).numpy(), [0, ref.cdf(0.0), 1], atol=1e-14)
    assert st.kstest(t.sample(1_000_000, generator=gen).numpy(), ref.cdf).pvalue > 1e-3


def test_truncated_pinv_half_line(gen):
    s = from_pdf(lambda x: torch.exp(-0.5 * x * x))
    t = Truncated(s, 0.5, math.inf)
    ref = st.truncnorm(0.5, np.inf)
    # u-error of a truncation is the base's divided by the kept mass (0.31 here)
    assert t.u_error().max_error <= 1e-10 / (1 - st.norm.cdf(0.5))
    assert st.kstest(t.sample(1_000_000, generator=gen).numpy(), ref.cdf).pvalue > 1e-3


def test_truncated_errors():
    N = from_distribution(D.Normal(T(0.0), T(1.0)))
    with pytest.raises(ValueError, match="low < high"):
        Truncated(N, 1.0, 1.0)
    with pytest.raises(ValueError, match="zero mass"):
        Truncated(N, 40.0, 50.0)
    with pytest.raises(ValueError, match="low < high"):
        Truncated(N, math.nan, 1.0)
