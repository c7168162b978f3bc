"""The Gaussian mixture head against scipy, quadrature, the Gaussian head and gradcheck."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from rnnforge.errors import UserError
from rnnforge.forecast import heads as H

# a regime-switch-like mixture: 97% near 0, 3% six scales away, and a third, wide component
W, MU, SIGMA = np.array([0.9, 0.03, 0.07]), np.array([0.0, 3.0, -1.0]), np.array([0.5, 0.5, 2.0])


def raw_of(w, mu, sigma) -> torch.Tensor:
    """The head's raw outputs for given weights, means and scales (softplus inverted)."""
    s = np.asarray(sigma) - H.MIN_SCALE
    return torch.tensor(np.concatenate([np.log(w), mu, s + np.log(-np.expm1(-s))]), dtype=torch.float64)


def scipy_cdf(x):
    return float(np.sum(W * stats.norm.cdf(x, MU, SIGMA)))


HEAD = H.make_head("mixture", components=3)
RAW = raw_of(W, MU, SIGMA)


def test_params_round_trip_and_config():
    logw, mu, sigma = HEAD.params(RAW)
    np.testing.assert_allclose(logw.exp().numpy(), W, rtol=1e-12)
    np.testing.assert_allclose(mu.numpy(), MU)
    np.testing.assert_allclose(sigma.numpy(), SIGMA, rtol=1e-12)
    assert HEAD.num_params == 9 and HEAD.config() == {"components": 3}
    assert H.make_head("mixture").components == 3


@pytest.mark.parametrize("y", [-4.0, 0.0, 0.7, 3.0, 9.0])
def test_nll_cdf_and_crps_match_scipy_and_quadrature(y):
    z = torch.tensor(y, dtype=torch.float64)
    assert HEAD.loss(RAW, z).item() == pytest.approx(-math.log(np.sum(W * stats.norm.pdf(y, MU, SIGMA))), rel=1e-12)
    assert HEAD.cdf(RAW, z).item() == pytest.approx(scipy_cdf(y), rel=1e-12, abs=1e-15)
    kw = dict(epsabs=1e-13, epsrel=1e-12, limit=400, points=list(MU))
    left = integrate.quad(lambda x: scipy_cdf(x) ** 2, -40.0, y, **{**kw, "points": [m for m in MU if m < y] or None})
    right = integrate.quad(lambda x: (1 - scipy_cdf(x)) ** 2, y, 40.0, **{**kw, "points": [m for m in MU if m > y] or None})
    assert HEAD.crps(RAW, z).item() == pytest.approx(left[0] + right[0], rel=1e-9, abs=1e-12)


def test_one_component_is_the_gaussian_head():
    one, gauss = H.make_head("mixture", components=1), H.make_head("gaussian")
    g = torch.tensor([[0.3, -0.4], [-2.0, 1.5]], dtype=torch.float64)  # (mu, raw scale)
    raw = torch.stack([torch.full((2,), 0.7, dtype=torch.float64), g[:, 0], g[:, 1]], dim=-1)  # any logit
    z = torch.tensor([1.1, -2.5], dtype=torch.float64)
    u = torch.tensor([1e-9, 0.8], dtype=torch.float64)
    for method, arg in (("loss", z), ("cdf", z), ("crps", z), ("ppf", u)):
        np.testing.assert_allclose(getattr(one, method)(raw, arg).numpy(), getattr(gauss, method)(g, arg).numpy(),
                                   rtol=1e-10, atol=1e-12, err_msg=method)


def test_ppf_inverts_the_cdf_into_the_far_tails():
    u = torch.tensor([1e-12, 1e-6, 0.03, 0.5, 0.9, 0.97, 0.985, 1 - 1e-9], dtype=torch.float64)
    z = HEAD.ppf(RAW.expand(len(u), -1), u)
    for ui, zi in zip(u.tolist(), z.tolist()):
        assert scipy_cdf(zi) == pytest.approx(ui, rel=1e-9, abs=1e-15)
    assert (z[1:] > z[:-1]).all()
    # u at the ends of (0, 1) as float32 sampling may hand it: finite values
    ends = HEAD.ppf(RAW.float().expand(2, -1), torch.tensor([0.0, 1.0]))
    assert ends.dtype == torch.float32 and torch.isfinite(ends).all() and ends[0] < ends[1]


def test_draws_put_the_small_mode_where_it_is():
    """Ex2 with the mixture's quantile function: the draws pass a KS test against the mixture,
    and the 3% mode at 3 gets its share (the CRPS-trained quantile head's failure on the regime
    switch, measured in BENCHMARKS.md, is the reason for this head)."""
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = HEAD.ppf(RAW.expand(len(u), -1), u).numpy()
    assert stats.kstest(x, lambda v: np.array([scipy_cdf(t) for t in np.atleast_1d(v)])).pvalue > 0.01
    share = (x > 2.0).mean()
    expected = 1 - scipy_cdf(2.0)
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / len(x))


def test_gradients_by_gradcheck():
    torch.manual_seed(0)
    raw = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, dtype=torch.float64)
    u = torch.tensor([0.02, 0.3, 0.7, 0.995], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda r: HEAD.loss(r, z), (raw,))
    assert torch.autograd.gradcheck(lambda r: HEAD.crps(r, z), (raw,))
    assert torch.autograd.gradcheck(lambda r: HEAD.cdf(r, z), (raw,))
    # the implicit gradient of the bisection's solution (the rollout objective's path)
    assert torch.autograd.gradcheck(lambda r: HEAD.ppf(r, u), (raw,), atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_component_counts_are_refused(bad):
    with pytest.raises(UserError, match="the mixture head needs at least 1 component"):
        H.make_head("mixture", components=bad)


def test_a_forecaster_with_it_round_trips_through_a_checkpoint(tmp_path):
    from rnnforge.forecast import checkpoint as C
    from rnnforge.forecast.model import Forecaster, ModelConfig
    from synthetic import seasonal_ar

    torch.manual_seed(0)
    model = Forecaster(ModelConfig(cell="gru", head="mixture", head_kwargs={"components": 2}, hidden=6, layers=1,
                                   dropout=0.0, features=dict(lags=[1, 2, 12], harmonics=1)))
    C.save(tmp_path / "m.safetensors", model, {"horizon": 4, "context": 12})
    loaded, meta = C.load(tmp_path / "m.safetensors")
    assert loaded.head.components == 2 and meta["model"]["head_kwargs"] == {"components": 2}
    s = seasonal_ar(200)
    kw = dict(context=12, horizon=4, num_samples=30)
    a = model.sample_paths([s], [200], generator=torch.Generator().manual_seed(0), **kw)
    np.testing.assert_array_equal(a, loaded.sample_paths([s], [200], generator=torch.Generator().manual_seed(0), **kw))
    assert np.isfinite(a).all() and a[0, :, 0].std() > 0


def test_the_regime_diagnostic_one_step_crps_matches_the_closed_form():
    """benchmarks/regime_switches.py's expected one-step CRPS of the truth, by quadrature over
    quantiles, against the closed form: under F itself E CRPS(F, Y) = E|X - X'| / 2, for the
    mixture 0.97 N(0, 0.25) + 0.03 N(3, 0.25) sum_kl w_k w_l A(mu_k - mu_l, sqrt(2) 0.5) / 2."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "regime_switches", Path(__file__).resolve().parents[2] / "benchmarks" / "regime_switches.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = mod.one_step_crps(levels=500, outcomes=1000)  # the script's grids are 4x finer
    w = torch.tensor([0.97, 0.03], dtype=torch.float64)
    mu = torch.tensor([0.0, 3.0], dtype=torch.float64)
    pair = H._abs_moment(mu[:, None] - mu[None, :], torch.full((2, 2), math.sqrt(2) * 0.5, dtype=torch.float64))
    assert got["truth"] == pytest.approx(0.5 * float((w[:, None] * w[None, :] * pair).sum()), rel=2e-3)
    # the truth scores best, as a proper score must have it, and by little
    assert got["truth"] < got["truth cut at 2"] < got["best Gaussian"] < 1.01 * got["truth"]
