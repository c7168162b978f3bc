"""--transform none | diff | detrend | drift: exact round trips, hand-worked values, and paths whose
integrated quantiles match the closed form of a random walk (and of a line plus noise)."""

import math

import numpy as np
import pytest
import torch

from rnnforge.forecast.series import Series
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
    x, st = transform(vals, start=0, context=30, kind="detrend", phase=phase, harmonics=1)
    assert abs(st.a[0] - 2.0) < 1e-10 and abs(st.b[0] - 0.5) < 1e-12
    np.testing.assert_allclose(x, season[None], atol=1e-10)  # only the line is removed
    np.testing.assert_allclose(untransform(x[:, 30:], st), vals[:, 30:], rtol=1e-14)


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_round_trip_is_exact(kind):
    """Transform a window, untransform its horizon part: the levels come back (NaNs in the context)."""
    rng = np.random.default_rng(0)
    vals = 300 + np.cumsum(rng.normal(0.1, 1, (3, 70)), axis=1)
    vals[0, 5] = vals[1, 20:23] = np.nan  # missing context values
    phase = np.mod(np.arange(70) / 12, 1.0)[None].repeat(3, 0)
    K, C = 10, 50
    extra = dict(trend_window=55, level_window=3) if kind in ("drift", "deseason") else {}
    x, st = transform(vals, start=K, context=C, kind=kind, phase=phase, harmonics=2, **extra)
    back = untransform(x[:, K + C:], st)
    np.testing.assert_allclose(back, vals[:, K + C:], rtol=1e-13)
    # paths (B, N, H) broadcast the same way
    back3 = untransform(np.repeat(x[:, None, K + C:], 4, axis=1), st)
    np.testing.assert_allclose(back3, np.repeat(vals[:, None, K + C:], 4, axis=1), rtol=1e-13)


def test_unknown_transform():
    with pytest.raises(ValueError, match=r"^transform 'log' is not a transform; choose one of none, diff, detrend, drift, deseason$"):
        Forecaster(ModelConfig(features=dict(lags=[1], transform="log")))
    with pytest.raises(UserError, match="^transform 'log' is not a transform"):
        transform(np.zeros((1, 3)), start=0, context=2, kind="log")
    assert FeatureSpec(lags=[1]).transform == "none"  # the default, and old checkpoints' meaning


def test_drift_by_hand():
    """Line over the last W = 4 values before the origin, re-anchored to the mean of the last A = 2.

    Values 1, 2, 3, 6 at t = 0..3: least-squares slope = sum (t - 1.5)(y - 3) / sum (t - 1.5)^2
    = (3 + 0.5 + 0 + 4.5) / 5 = 1.6; level (3 + 6) / 2 = 4.5 at t = 2.5; so the reference is
    4.5 + 1.6 (t - 2.5): 6.9 and 8.5 at the horizon's t = 4, 5."""
    vals = np.array([[100.0, 1, 2, 3, 6]])  # column 0 lies before the fit's span
    x, st = transform(vals, start=3, context=2, kind="drift", phase=np.zeros((1, 7)),
                      trend_window=4, level_window=2)
    ref = 4.5 + 1.6 * (np.arange(-1.0, 6) - 2.5)  # columns 0..6, t = column - 1
    np.testing.assert_allclose(x, vals - ref[None, :5], atol=1e-12)
    np.testing.assert_allclose(st.ref, [[6.9, 8.5]], atol=1e-12)
    np.testing.assert_allclose(untransform(np.array([[0.1, -0.1]]), st), [[7.0, 8.4]], atol=1e-12)
    # a missing value among the last A: the level is the observed one's, at its own time
    vals[0, 3] = np.nan  # values 1, 2, _, 6: slope of the three observed ones = 36/21
    _, st = transform(vals, start=3, context=2, kind="drift", phase=np.zeros((1, 7)),
                      trend_window=4, level_window=2)
    b = np.polyfit([0.0, 1, 3], [1.0, 2, 6], 1)[0]
    assert abs(b - 36 / 21) < 1e-12
    np.testing.assert_allclose(st.ref, [[6 + b, 6 + 2 * b]], atol=1e-12)


def test_drift_and_deseason_remove_a_line_and_season_exactly_and_read_nothing_after_the_origin():
    """On a line plus three seasonal harmonics, the reference *is* the series (residuals 0, the
    horizon continued exactly); and the fit never reads values from the origin on."""
    t = np.arange(300.0)
    phase = np.mod(t / 52, 1.0)
    ang = 2 * np.pi * phase[:, None] * np.arange(1, 4)
    y = 310 + 0.03 * t + np.sin(ang) @ [3.0, -0.5, 0.2] + np.cos(ang) @ [-1.0, 0.7, 0.1]
    vals, ph = y[None, :260], phase[None]  # origin at column 260, horizon 40
    x, st = transform(vals, start=200, context=60, kind="drift", phase=ph, harmonics=3,
                      trend_window=156, level_window=13)
    np.testing.assert_allclose(x, 0.0, atol=1e-9)
    np.testing.assert_allclose(untransform(np.zeros((1, 40)), st), y[None, 260:], rtol=1e-12)
    # the same window with its horizon values present (as in training) and changed
    noisy = np.concatenate([vals, 1e6 * np.ones((1, 40))], axis=1)
    x2, st2 = transform(noisy, start=200, context=60, kind="drift", phase=ph, harmonics=3,
                        trend_window=156, level_window=13)
    np.testing.assert_array_equal(x2[:, :260], x)
    np.testing.assert_array_equal(st2.ref, st.ref)
    # deseason: the same fit, only the season taken out, so the line is what is left
    xs, sts = transform(vals, start=200, context=60, kind="deseason", phase=ph, harmonics=3,
                        trend_window=156, level_window=13)
    np.testing.assert_allclose(xs, (310 + 0.03 * t)[None, :260], rtol=1e-12)
    np.testing.assert_allclose(untransform((310 + 0.03 * t)[None, 260:], sts), y[None, 260:], rtol=1e-12)


def test_drift_needs_a_trend_window():
    with pytest.raises(UserError, match=r"^trend_window must be >= 2 steps for transform drift, got 0$"):
        FeatureSpec(lags=[1], transform="drift")


def constant_head_model(transform_kind, sigma, **features):
    """A forecaster whose prediction is N(0, sigma^2) in scaled units whatever its inputs:
    readout weights zero, bias (mu, softplus^-1(sigma - 1e-3))."""
    torch.manual_seed(0)
    m = Forecaster(ModelConfig(cell="gru", hidden=4, layers=1, dropout=0.0, head="gaussian",
                               features=dict(lags=[1, 2], harmonics=0, transform=transform_kind,
                                             **features)))
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


def test_drift_paths_are_the_reference_plus_constant_noise():
    """Residuals N(loc, (scale*sigma)^2) around the drift reference: the line fitted over the last
    W values before the origin (np.polyfit, which reads back past the context), re-anchored to the
    mean of the last A values."""
    rng = np.random.default_rng(2)
    t = np.arange(300.0)
    s = Series("line", 50 + 0.2 * t + rng.normal(0, 1, 300))
    sigma, C, H, N, W, A = 0.5, 40, 8, 20000, 150, 5
    model = constant_head_model("drift", sigma, trend_window=W, level_window=A)
    assert model.spec.history(C) == W - C  # the window reaches back past its lags
    paths = model.sample_paths([s], [len(s)], context=C, horizon=H, num_samples=N,
                               generator=torch.Generator().manual_seed(0))[0]
    tw = np.arange(300.0 - W, 300)
    b = np.polyfit(tw, s.values[-W:], 1)[0]
    level, t_level = s.values[-A:].mean(), tw[-A:].mean()
    ref = lambda tt: level + b * (tt - t_level)  # noqa: E731
    resid = s.values[-C:] - ref(tw[-C:])
    loc, scale = resid.mean(), np.abs(resid - resid.mean()).mean()
    for k in (1, H):
        for q, zq in Z.items():
            expect = ref(299.0 + k) + loc + scale * sigma * zq
            assert abs(np.quantile(paths[:, k - 1], q) - expect) < 0.05 * scale * sigma, (k, q)


def test_diff_needs_two_consecutive_observed_values():
    v = np.arange(40.0)
    v[20:40:2] = np.nan  # in the last 20 values no two neighbours are both observed
    model = constant_head_model("diff", 1.0)
    with pytest.raises(UserError, match="no two consecutive values of the 20 before step 40"):
        model.sample_paths([Series("gappy", v)], [40], context=20, horizon=3, num_samples=5)


def test_scalers_by_hand():
    from rnnforge.forecast.features import scale_stats

    ctx = np.array([[1.0, -3.0, np.nan, 6.0], [2.0, 2.0, 2.0, 2.0]])
    loc, scale = scale_stats(ctx, "mean-abs", floor=0.5)  # not centred: mean |x|, floored
    np.testing.assert_allclose(loc, [0, 0])
    np.testing.assert_allclose(scale, [(1 + 3 + 6) / 3, 2.0])
    loc, scale = scale_stats(ctx, "mean", floor=0.5)  # centred: mean, mean absolute deviation
    np.testing.assert_allclose(loc, [4 / 3, 2.0])
    np.testing.assert_allclose(scale, [(1 / 3 + 13 / 3 + 14 / 3) / 3, 0.5])  # a flat context: the floor
