"""The learned monotone quantile function (SQF-RNN's piecewise-linear spline)."""
import math

import numpy as np
import pytest
import scipy.stats as st
import torch
import torch.nn.functional as Fnn

from rnnforge.sampling import PiecewiseLinearQuantile, fit_quantile, from_distribution, pinball_loss

F64 = torch.float64
T = lambda v: torch.tensor(v, dtype=F64)  # noqa: E731


def example():
    return PiecewiseLinearQuantile(T(-1.0), T([1.0, 3.0, 0.5]), T([0.2, 0.5, 0.3]))


def test_values_at_knots_and_between_by_hand():
    q = example()
    # knots 0, 0.2, 0.7, 1; g = -1, -0.8, 0.7, 0.85
    u = T([0.0, 0.1, 0.2, 0.5, 0.7, 0.9, 1.0])
    want = [-1.0, -0.9, -0.8, -0.8 + 3 * 0.3, 0.7, 0.7 + 0.5 * 0.2, 0.85]
    np.testing.assert_allclose(q.ppf(u).numpy(), want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(q.cdf(q.ppf(u)).numpy(), u.numpy(), atol=1e-15)
    assert q.cdf(T([-5.0, 5.0])).tolist() == [0.0, 1.0]
    assert q.u_error().max_error < 1e-15


def _crps_numeric(q, x):
    z = torch.linspace(-12, 12, 2_400_001, dtype=F64)
    F = q.cdf(z)
    return torch.trapezoid((F - (z >= x).to(F64)) ** 2, z).item()


@pytest.mark.parametrize("x", [-3.0, -1.0, -0.85, 0.1, 0.7, 0.8, 2.0])
def test_crps_closed_form_against_the_integral_of_squared_cdf_difference(x):
    q = example()
    assert q.crps(T(x)).item() == pytest.approx(_crps_numeric(q, x), abs=2e-5)


def test_crps_equals_mean_pinball_over_levels():
    q = example()
    x = T([-2.0, -0.5, 0.3, 0.9])
    levels = (torch.arange(200_000, dtype=F64) + 0.5) / 200_000
    np.testing.assert_allclose(pinball_loss(q, x, levels).numpy(), q.crps(x).numpy(), rtol=1e-6)


def test_batched_parameters_shapes_and_from_unconstrained(gen):
    B, L = 3, 4
    raw_g = torch.randn(B, dtype=F64, generator=gen)
    raw_s = torch.randn(B, L, dtype=F64, generator=gen)
    raw_w = torch.randn(B, L, dtype=F64, generator=gen)
    q = PiecewiseLinearQuantile.from_unconstrained(raw_g, raw_s, raw_w)
    np.testing.assert_allclose(q.slopes.numpy(), Fnn.softplus(raw_s).numpy() + 1e-6)
    np.testing.assert_allclose(q.widths.sum(-1).numpy(), 1.0)
    assert q.batch_shape == (B,)
    u = torch.rand(5, B, dtype=F64, generator=gen)
    x = q.ppf(u)
    assert x.shape == (5, B)
    for b in range(B):                      # each row is its own spline
        qb = PiecewiseLinearQuantile(q.gamma[b], q.slopes[b], q.widths[b])
        np.testing.assert_allclose(qb.ppf(u[:, b]).numpy(), x[:, b].numpy(), atol=1e-15)
    assert q.sample((7,), generator=gen).shape == (7, B)
    assert q.crps(x).shape == (5, B)


def test_gradients_flow_to_unconstrained_outputs(gen):
    raw_g = torch.zeros((), dtype=F64, requires_grad=True)
    raw_s = torch.zeros(5, dtype=F64, requires_grad=True)
    raw_w = torch.zeros(5, dtype=F64, requires_grad=True)
    q = PiecewiseLinearQuantile.from_unconstrained(raw_g, raw_s, raw_w)
    q.crps(torch.randn(64, dtype=F64, generator=gen)).mean().backward()
    for t in (raw_g, raw_s, raw_w):
        assert t.grad is not None and bool(torch.isfinite(t.grad).all()) and t.grad.abs().sum() > 0


def test_fit_quantile_makes_heldout_pit_uniform(gen):
    data = from_distribution(torch.distributions.Gamma(T(2.0), T(1.0))).sample(6000, generator=gen)
    fit = fit_quantile(data, pieces=16, steps=300, generator=gen)
    assert len(fit.losses) == 300 and all(math.isfinite(v) for v in fit.losses)
    assert fit.heldout.n == 1200 and fit.heldout.ks_pvalue > 1e-3
    lv = T([0.1, 0.25, 0.5, 0.75, 0.9])
    np.testing.assert_allclose(fit.quantile.ppf(lv).numpy(), st.gamma.ppf(lv.numpy(), 2.0), atol=0.15)
    # draws from the fitted g follow its own CDF (closed form in numpy)
    q = fit.quantile
    x = q.sample(1_000_000, generator=gen).numpy()
    ref = lambda t: np.interp(t, q.values.numpy(), q.knots.numpy())  # noqa: E731
    assert st.kstest(x, ref).pvalue > 1e-3


def test_fit_quantile_pinball_option_runs(gen):
    data = torch.randn(2000, dtype=F64, generator=gen)
    fit = fit_quantile(data, pieces=8, steps=100, loss="pinball", generator=gen)
    assert np.mean(fit.losses[-20:]) < np.mean(fit.losses[:20]) + 0.05
    with pytest.raises(ValueError, match="loss must be"):
        fit_quantile(data, loss="mse")


@pytest.mark.parametrize("args, msg", [
    ((T(0.0), T([1.0, -1.0])), "slopes must be > 0"),
    ((T(0.0), T([1.0, 1.0]), T([0.3, 0.3])), "widths must be > 0 and sum to 1"),
    ((T(math.nan), T([1.0, 1.0])), "gamma contains NaN or inf"),
    ((T(0.0), T([1.0, math.inf])), "slopes contains NaN or inf"),
    ((T([0.0, 1.0]), T([1.0, 1.0])), "gamma shape"),
])
def test_parameter_errors(args, msg):
    with pytest.raises(ValueError, match=msg):
        PiecewiseLinearQuantile(*args)


def test_u_checks():
    q = example()
    with pytest.raises(ValueError, match=r"u must lie in \[0, 1\]"):
        q.ppf(T([1.5]))
    assert q.ppf(0.5).shape == ()
