"""Hypothesis property tests over the samplers: ppf is monotone and
CDF(ppf(u)) = u within each sampler's resolution."""
import functools

import pytest
import torch
import torch.distributions as D
from hypothesis import given, settings
from hypothesis import strategies as hs

from rnnforge.sampling import Mixture, PiecewiseLinearQuantile, Truncated, from_distribution, from_samples

F64 = torch.float64
T = lambda v: torch.tensor(v, dtype=F64)  # noqa: E731


@functools.lru_cache(maxsize=None)
def sampler(name):
    if name == "gamma":
        return from_distribution(D.Gamma(T(1.5), T(2.0))), 1e-12
    if name == "beta":
        return from_distribution(D.Beta(T(2.0), T(5.0))), 1e-12
    if name == "student_t":
        return from_distribution(D.StudentT(T(3.0))), 1e-12
    if name == "empirical":
        data = torch.randn(300, dtype=F64, generator=torch.Generator().manual_seed(0))
        return from_samples(data), 1e-12
    if name == "spline":
        return PiecewiseLinearQuantile(T(-2.0), T([0.5, 4.0, 1.0, 2.0]), T([0.1, 0.4, 0.3, 0.2])), 1e-14
    if name == "mixture":
        n = from_distribution(D.Normal(T(-3.0), T(1.0)))
        g = from_distribution(D.Gamma(T(2.0), T(1.0)))
        return Mixture([n, g], [0.4, 0.6]), 1e-12
    if name == "truncated":
        return Truncated(from_distribution(D.Normal(T(0.0), T(1.0))), -0.5, 3.0), 1e-12
    raise KeyError(name)


NAMES = ["gamma", "beta", "student_t", "empirical", "spline", "mixture", "truncated"]


@settings(max_examples=40, deadline=None)
@given(hs.lists(hs.floats(0.0, 1.0), min_size=1, max_size=40), hs.sampled_from(NAMES))
def test_ppf_monotone_and_cdf_inverts_it(us, name):
    s, tol = sampler(name)
    u = torch.tensor(sorted(us), dtype=F64)
    x = s.ppf(u)
    assert x.shape == u.shape
    assert bool((x[1:] >= x[:-1]).all()), (name, u, x)
    inner = (u > 0) & (u < 1)
    if inner.any():
        err = (s.cdf(x[inner]) - u[inner]).abs().max().item()
        assert err <= tol, (name, err)


@pytest.mark.parametrize("name", NAMES)
def test_u_error_of_each(name):
    s, tol = sampler(name)
    assert s.u_error(20_000).max_error <= tol
