"""Metrics against closed forms and an oracle forecaster on a synthetic AR(1).

The AR(1) ``y_t = phi y_{t-1} + sigma e_t`` has a known predictive distribution
at every horizon h from an origin with last value y_o:
``N(phi^h y_o, sigma^2 (1 - phi^(2h)) / (1 - phi^2))``; a forecaster that
reports it (the oracle) is calibrated, so its PIT values are U[0, 1] (Ex1).
"""

import math

import numpy as np
import pytest
import torch

from rnnforge.forecast import heads as H
from rnnforge.forecast.metrics import (GaussianForecast, SampleForecast, crps_gaussian, crps_samples,
                                       pinball, score)
from rnnforge.forecast.metrics import ks_uniform

scipy_stats = pytest.importorskip("scipy.stats")
scipy_integrate = pytest.importorskip("scipy.integrate")

CRPS_N01_AT_0 = 0.23369497725510913  # (sqrt(2) - 1) / sqrt(pi)


def crps_numeric(cdf, y: float, lo: float = -np.inf, hi: float = np.inf, kinks=()) -> float:
    """CRPS = int (F(x) - 1{x >= y})^2 dx by adaptive quadrature, split at y (and at ``kinks``
    of a piecewise F, which must lie inside a finite [lo, hi])."""
    kw = dict(epsabs=1e-13, epsrel=1e-12, limit=200)
    left_pts = [k for k in kinks if lo < k < y] or None
    right_pts = [k for k in kinks if y < k < hi] or None
    left = scipy_integrate.quad(lambda x: cdf(x) ** 2, lo, y, points=left_pts, **kw)[0]
    right = scipy_integrate.quad(lambda x: (1 - cdf(x)) ** 2, y, hi, points=right_pts, **kw)[0]
    return left + right


def test_crps_standard_normal_at_zero():
    assert crps_gaussian(0.0, 1.0, 0.0) == pytest.approx(CRPS_N01_AT_0, rel=1e-14, abs=0)
    assert CRPS_N01_AT_0 == pytest.approx((math.sqrt(2) - 1) / math.sqrt(math.pi), rel=1e-15)
    raw = torch.tensor([[0.0, math.log(math.expm1(1.0 - H.MIN_SCALE))]], dtype=torch.float64)
    head = H.GaussianHead()
    assert head.crps(raw, torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(CRPS_N01_AT_0, rel=1e-12)


@pytest.mark.parametrize("mu,sigma,y", [(0.0, 1.0, 0.0), (1.5, 0.3, 1.0), (-2.0, 4.0, 7.5), (0.0, 1.0, -6.0)])
def test_gaussian_crps_closed_form_vs_integral(mu, sigma, y):
    cf = crps_gaussian(mu, sigma, y)
    num = crps_numeric(lambda x: scipy_stats.norm.cdf(x, mu, sigma), y)
    assert cf == pytest.approx(num, rel=1e-9, abs=1e-12)


def test_gaussian_crps_closed_form_vs_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 2.0, size=(200_000, 1))
    for y in (0.5, -1.0, 4.0):
        est = crps_samples(x, np.array([y]))[0]
        assert est == pytest.approx(crps_gaussian(0.5, 2.0, y), abs=0.01)


def test_sample_crps_equals_energy_form_by_brute_force():
    rng = np.random.default_rng(1)
    x = rng.standard_t(3, size=(57, 4))
    y = rng.normal(size=4)
    brute = np.abs(x - y).mean(0) - 0.5 * np.abs(x[:, None, :] - x[None, :, :]).mean((0, 1))
    np.testing.assert_allclose(crps_samples(x, y), brute, rtol=1e-12, atol=1e-13)
    # the empirical distribution's CRPS by integration of (F_n - 1{x >= y})^2 agrees too
    col = np.sort(x[:, 0])
    ecdf = lambda t: np.searchsorted(col, t, side="right") / len(col)
    pts = np.sort(np.append(col, y[0]))
    integral = sum((ecdf(a) - (a >= y[0])) ** 2 * (b - a) for a, b in zip(pts[:-1], pts[1:]))
    assert crps_samples(x[:, :1], y[:1])[0] == pytest.approx(integral, rel=1e-12)


@pytest.mark.parametrize("nu", [2.5, 4.0, 30.0])
@pytest.mark.parametrize("y", [-3.0, 0.2, 6.0])
def test_student_t_crps_closed_form_vs_integral(nu, y):
    mu, sigma = 0.3, 1.7
    cf = H.student_t_crps(*(torch.tensor(v, dtype=torch.float64) for v in (mu, sigma, nu, y))).item()
    num = crps_numeric(lambda x: scipy_stats.t.cdf(x, nu, mu, sigma), y)
    assert cf == pytest.approx(num, rel=1e-8, abs=1e-11)


def test_student_t_cdf_and_ppf_match_scipy():
    nu = torch.tensor([2.05, 3.0, 7.5, 40.0, 500.0], dtype=torch.float64)[:, None]
    t = torch.linspace(-40, 40, 81, dtype=torch.float64)[None]
    np.testing.assert_allclose(H.t_cdf(t, nu).numpy(), scipy_stats.t.cdf(t.numpy(), nu.numpy()),
                               rtol=1e-10, atol=1e-14)
    u = torch.tensor([1e-10, 1e-4, 0.025, 0.3, 0.5, 0.8, 0.975, 1 - 1e-8], dtype=torch.float64)[None]
    q = H.t_ppf(u, nu)
    np.testing.assert_allclose(q.numpy(), scipy_stats.t.ppf(u.numpy(), nu.numpy()), rtol=1e-8, atol=1e-9)
    # ends of the support, and the inverse relation on a fine grid
    assert H.t_ppf(torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
                   ).tolist() == [-math.inf, math.inf]
    g = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    assert (H.t_cdf(H.t_ppf(g, torch.tensor(2.5, dtype=torch.float64)), torch.tensor(2.5)) - g).abs().max() < 1e-12


def test_pinball_and_coverage_by_hand():
    assert pinball(np.array(2.0), 3.0, 0.9) == pytest.approx(0.9)
    assert pinball(np.array(2.0), 1.0, 0.9) == pytest.approx(0.1)
    f = SampleForecast(np.arange(1, 101, dtype=float)[:, None] * np.ones((1, 2)))
    sc = score([f], [np.array([50.5, 99.9])])
    assert sc.coverage[0.8] == pytest.approx(0.5)  # 50.5 inside [10.9, 90.1], 99.9 outside
    assert sc.n == 2


def ar1(n, phi, sigma, rng):
    y = np.zeros(n)
    for t in range(1, n):
        y[t] = phi * y[t - 1] + sigma * rng.normal()
    return y


def oracle(y_o, h, phi, sigma):
    k = np.arange(1, h + 1)
    return phi ** k * y_o, sigma * np.sqrt((1 - phi ** (2 * k)) / (1 - phi ** 2))


def test_oracle_one_step_pit_is_uniform():
    rng = np.random.default_rng(2)
    phi, sigma = 0.8, 0.5
    y = ar1(3001, phi, sigma, rng)
    u = scipy_stats.norm.cdf(y[1:], phi * y[:-1], sigma)  # Ex1: F(Y) ~ U[0, 1]
    stat, p = ks_uniform(u)
    assert p > 0.01, (stat, p)
    assert p == pytest.approx(scipy_stats.kstest(u, "uniform").pvalue, rel=0.05)
    # a forecaster with half the true spread is caught at once
    assert ks_uniform(scipy_stats.norm.cdf(y[1:], phi * y[:-1], sigma / 2))[1] < 1e-6


@pytest.mark.parametrize("kind", ["gaussian", "samples"])
def test_oracle_multistep_forecaster_is_calibrated(kind):
    rng = np.random.default_rng(3)
    phi, sigma, h = 0.9, 1.0, 12
    forecasts, actuals = [], []
    for _ in range(150):  # independent origins: a fresh stretch of AR(1) each time
        y = ar1(60 + h, phi, sigma, rng)
        mean, sd = oracle(y[59], h, phi, sigma)
        if kind == "gaussian":
            forecasts.append(GaussianForecast(mean, sd))
        else:
            forecasts.append(SampleForecast(mean + sd * rng.normal(size=(400, h))))
        actuals.append(y[60:])
    sc = score(forecasts, actuals)
    assert sc.n == 150 * h
    # PIT values at different steps of one path are dependent; the test is still not tiny
    assert sc.pit_ks_p > 0.01, sc
    for c in (0.5, 0.8, 0.95):
        assert abs(sc.coverage[c] - c) < 0.04, (c, sc.coverage)
    # the oracle's mean CRPS equals the mean of the closed forms at the same targets
    closed = np.mean([crps_gaussian(f.mean, sd_, a).mean() for f, a, sd_ in
                      zip(forecasts, actuals, [oracle(0, h, phi, sigma)[1]] * len(forecasts))])
    assert sc.crps == pytest.approx(closed, rel=0.02 if kind == "samples" else 1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spline_quantile_crps_closed_form_vs_integral(seed):
    """The SQF head's CRPS is 2 int_0^1 pinball_a(z - q(a)) da, computed in closed form."""
    torch.manual_seed(seed)
    head = H.SplineQuantileHead(pieces=5)
    raw = torch.randn(4, head.num_params, dtype=torch.float64)
    z = torch.randn(4, dtype=torch.float64) * 2
    cf = head.crps(raw, z)
    for i in range(4):
        def pin(a):
            d = z[i].item() - head.ppf(raw[i:i + 1], torch.tensor([a], dtype=torch.float64)).item()
            return 2 * d * (a - (d < 0))
        d = H.spline_knots(raw[i], 5).knots
        kinks = [*d[1:-1].tolist(), head.cdf(raw[i:i + 1], z[i:i + 1]).item()]
        num = scipy_integrate.quad(pin, 0, 1, points=kinks, epsabs=1e-13, limit=200)[0]
        assert cf[i].item() == pytest.approx(num, rel=1e-10, abs=1e-12)
    # the same CRPS by the integral of (F - 1{x >= y})^2 over x, F the spline's CDF
    F = lambda x: head.cdf(raw[:1], torch.tensor([x], dtype=torch.float64)).item()
    lo = head.ppf(raw[:1], torch.zeros(1, dtype=torch.float64)).item()
    hi = head.ppf(raw[:1], torch.ones(1, dtype=torch.float64)).item()
    y = z[0].item()
    knots = H.spline_knots(raw[0], 5).values.tolist()  # q at every knot level
    num = crps_numeric(F, y, lo=min(lo, y) - 1, hi=max(hi, y) + 1, kinks=knots)
    assert cf[0].item() == pytest.approx(num, rel=1e-7)


def test_spline_quantile_is_monotone_and_matches_its_samples():
    torch.manual_seed(3)
    head = H.SplineQuantileHead(pieces=8)
    raw = torch.randn(1, head.num_params, dtype=torch.float64)
    grid = torch.linspace(0, 1, 1001, dtype=torch.float64)
    q = head.ppf(raw.expand(1001, -1), grid)
    assert (q.diff() > 0).all()
    u = torch.rand(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = head.ppf(raw.expand(len(u), -1), u).numpy()  # Ex2: samples by inverse transform
    y = np.array([0.3])
    assert crps_samples(x[:, None], y)[0] == pytest.approx(head.crps(raw, torch.tensor(y)).item(), rel=5e-3)
