"""--transform none | diff | detrend: exact round trips, hand-worked values, and paths whose
integrated quantiles match the closed form of a random walk (and of a line plus noise)."""

import math

import numpy as np
import pytest
import torch

from rnnforge.data.series import Series
from rnnforge.errors import UserError
from rnnforge.forecast.features import TRANSFORMS, FeatureSpec, fit_trend, transform, untransform
from rnnforge.forecast.model import Forecaster, ModelConfig

Z = {0.1: -1.2815515655446004, 0.5: 0.0, 0.9: 1.2815515655446004}  # standard normal quantiles


def test_diff_by_hand():
    vals = np.array([[1.0, 3, 6, 10, 15]])
    x, st = transform(vals, start=0, context=3, kind="diff")
    np.testing.assert_array_equal(x, [[np.nan, 2, 3, 4, 5]])
    assert st.anchor[0] == 6  # the last context value
    np.testing.assert_array_equal(untransform(x[:, 3:], st), [[10, 15]])


def test_diff_anchor_when_the_last_context_values_are_missing():
    # differences 1, 1 observed, then two missing steps: anchor = 3 + 2 x (mean difference 1) = 5
    vals = np.array([[1.0, 2, 3, np.nan, np.nan, 9]])
    x, st = transform(vals, start=0, context=5, kind="diff")
    assert st.anchor[0] == 5.0
    np.testing.assert_array_equal(untransform(np.array([[0.5, 0.5]]), st), [[5.5, 6.0]])


def test_detrend_by_hand_and_against_polyfit():
    t = np.arange(40.0)
    line = 2.0 + 0.5 * t
    season = np.sin(2 * np.pi * t / 12)  # 30 context steps: two and a half seasons
    vals = (line + season)[None]
    # the line alone: the least-squares line of np.polyfit, which the partial season tilts
    a, b = fit_trend(vals[:, :30])
    b_ref, a_ref = np.polyfit(t[:30], vals[0, :30], 1)
    assert abs(a[0] - a_ref) < 1e-10 and abs(b[0] - b_ref) < 1e-12 and abs(b[0] - 0.5) > 5e-4
    # fitted jointly with the season's harmonic, the line is exact
    phase = np.mod(t / 12, 1.0)[None]
    x, st = transform(vals, start=0, context=30, kind="detrend", context_phase=phase[:, :30], harmonics=1)
    assert abs(st.a[0] - 2.0) < 1e-10 and abs(st.b[0] - 0.5) < 1e-12
    np.testing.assert_allclose(x, season[None], atol=1e-10)  # only the line is removed
    np.testing.assert_allclose(untransform(x[:, 30:], st), vals[:, 30:], rtol=1e-14)


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_round_trip_is_exact(kind):
    """Transform a window, untransform its horizon part: the levels come back (NaNs in the context)."""
    rng = np.random.default_rng(0)
    vals = 300 + np.cumsum(rng.normal(0.1, 1, (3, 70)), axis=1)
    vals[0, 5] = vals[1, 20:23] = np.nan  # missing context values
    phase = np.mod(np.arange(60) / 12, 1.0)[None].repeat(3, 0)
    K, C = 10, 50
    x, st = transform(vals, start=K, context=C, kind=kind, context_phase=phase[:, :C], harmonics=2)
    back = untransform(x[:, K + C:], st)
    np.testing.assert_allclose(back, vals[:, K + C:], rtol=1e-13)
    # paths (B, N, H) broadcast the same way
    back3 = untransform(np.repeat(x[:, None, K + C:], 4, axis=1), st)
    np.testing.assert_allclose(back3, np.repeat(vals[:, None, K + C:], 4, axis=1), rtol=1e-13)


def test_unknown_transform():
    with pytest.raises(ValueError, match=r"^unknown --transform 'log'; choose one of none, diff, detrend$"):
        Forecaster(ModelConfig(features=dict(lags=[1], transform="log")))
    with pytest.raises(UserError, match="unknown --transform 'log'"):
        transform(np.zeros((1, 3)), start=0, context=2, kind="log")
    assert FeatureSpec(lags=[1]).transform == "none"  # the default, and old checkpoints' meaning


def constant_head_model(transform_kind, sigma):
    """A forecaster whose prediction is N(0, sigma^2) in scaled units whatever its inputs:
    readout weights zero, bias (mu, softplus^-1(sigma - 1e-3))."""
    torch.manual_seed(0)
    m = Forecaster(ModelConfig(cell="gru", hidden=4, layers=1, dropout=0.0, head="gaussian",
                               features=dict(lags=[1, 2], harmonics=0, transform=transform_kind)))
    with torch.no_grad():
        m.readout.delta.zero_()
        m.readout.b.copy_(torch.tensor([0.0, math.log(math.expm1(sigma - 1e-3))]))
    return m


def test_diff_paths_are_a_random_walk_with_drift():
    """Differences drawn N(drift, (scale*sigma)^2) independently, integrated: the level k steps
    ahead is N(y_last + k drift, k (scale*sigma)^2), and paths are coherent (corr(y_4, y_16) = 1/2)."""
    # differences alternate 1.5, -0.5: over an even context their mean is 0.5 and their mean
    # absolute deviation 1.0, so the mean scaler gives loc = 0.5 (drift), scale = 1.0
    d = np.tile([1.5, -0.5], 50)
    s = Series("walk", np.concatenate([[100.0], 100 + np.cumsum(d)]))
    sigma, C, H, N = 0.8, 20, 16, 20000
    model = constant_head_model("diff", sigma)
    paths = model.sample_paths([s], [len(s)], context=C, horizon=H, num_samples=N,
                               generator=torch.Generator().manual_seed(0))[0]  # (N, H)
    last = s.values[-1]
    for k in (1, 4, 16):
        for q, zq in Z.items():
            expect = last + 0.5 * k + sigma * math.sqrt(k) * zq
            # the sample quantile's standard error is ~0.012 sigma sqrt(k) at q = 0.1, 0.9
            assert abs(np.quantile(paths[:, k - 1], q) - expect) < 0.05 * sigma * math.sqrt(k), (k, q)
    assert abs(np.corrcoef(paths[:, 3], paths[:, 15])[0, 1] - 0.5) < 0.03
    assert abs(np.std(np.diff(paths, axis=1)) - sigma) < 0.02  # each step adds one N(0, sigma^2)


def test_detrend_paths_are_the_line_plus_constant_noise():
    """Residuals drawn N(loc, (scale*sigma)^2) around the context's least-squares line: quantiles
    are the extrapolated line (np.polyfit) plus a constant width, not growing with the horizon."""
    rng = np.random.default_rng(1)
    t = np.arange(200.0)
    s = Series("line", 50 + 0.3 * t + rng.normal(0, 2, 200))
    sigma, C, H, N = 0.5, 60, 10, 20000
    model = constant_head_model("detrend", sigma)
    paths = model.sample_paths([s], [len(s)], context=C, horizon=H, num_samples=N,
                               generator=torch.Generator().manual_seed(0))[0]
    tc = np.arange(C, dtype=float)
    b, a = np.polyfit(tc, s.values[-C:], 1)
    resid = s.values[-C:] - (a + b * tc)
    loc, scale = resid.mean(), np.abs(resid - resid.mean()).mean()  # the mean scaler's definition
    for k in (1, H):
        line = a + b * (C - 1 + k)
        for q, zq in Z.items():
            expect = line + loc + scale * sigma * zq
            assert abs(np.quantile(paths[:, k - 1], q) - expect) < 0.05 * scale * sigma, (k, q)


def test_diff_needs_two_consecutive_observed_values():
    v = np.arange(40.0)
    v[20:40:2] = np.nan  # in the last 20 values no two neighbours are both observed
    model = constant_head_model("diff", 1.0)
    with pytest.raises(UserError, match="no two consecutive values of the 20 before step 40"):
        model.sample_paths([Series("gappy", v)], [40], context=20, horizon=3, num_samples=5)
