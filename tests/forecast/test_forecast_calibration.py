"""Recalibration by the PIT (Kuleshov et al. 2018) and split-conformal intervals, against closed forms."""

import json

import numpy as np
import pytest
from scipy import stats

from rnnforge.forecast import ForecastConfig, load_checkpoint, predict, save_checkpoint, train
from rnnforge.forecast import calibration as C
from rnnforge.forecast.series import Series

Z90 = stats.norm.ppf(0.9)  # 1.2816: the 80% interval of N(0, 1) is +-Z90


def narrow(rng, windows, paths=400, horizon=4, scale=0.5):
    """Forecasts N(0, scale^2) as sample paths of targets that are N(0, 1)."""
    return rng.normal(0, scale, (windows, paths, horizon)), rng.normal(0, 1, (windows, horizon))


def coverage_and_pit(paths, y):
    level = (paths < y[:, None, :]).mean(axis=1)
    return ((level >= 0.1) & (level <= 0.9)).mean(), stats.kstest(level.ravel(), "uniform").pvalue


def test_too_narrow_model_becomes_calibrated():
    rng = np.random.default_rng(0)
    paths, y = narrow(rng, 500)
    rc = C.choose(paths, y, windows=np.arange(500) % 10)
    assert rc.mode in ("scale", "scale-steps", "pooled", "per-step")  # scale is the exact form of this fault
    # R(u) = P(Phi(Y / 0.5) <= u) = Phi(0.5 Phi^{-1}(u)) for Y ~ N(0, 1): the closed form
    u = np.linspace(0.05, 0.95, 19)
    R = rc.map_of_step(0)
    assert np.abs(R(u) - stats.norm.cdf(0.5 * stats.norm.ppf(u))).max() < 0.03
    # before: the 80% interval covers P(|Y| < 0.5 Z90) = 2 Phi(0.64) - 1 = 0.478
    assert rc.report["before"]["cov80"] == pytest.approx(2 * stats.norm.cdf(0.5 * Z90) - 1, abs=0.04)
    assert rc.report["before"]["pit_ks_p"] < 1e-10
    assert rc.report["after"]["cov80"] == pytest.approx(0.8, abs=0.03)
    # fresh forecasts: their recalibrated 80% intervals hold 80% of N(0, 1) (closed form: the mass
    # Phi(q90) - Phi(q10) between their 10% and 90% quantiles), where the raw ones hold 0.478
    paths, y = narrow(rng, 125)
    new = rc.apply(paths)
    q10, q90 = np.quantile(new, [0.1, 0.9], axis=1)
    assert (stats.norm.cdf(q90) - stats.norm.cdf(q10)).mean() == pytest.approx(0.8, abs=0.02)
    r10, r90 = np.quantile(paths, [0.1, 0.9], axis=1)
    assert (stats.norm.cdf(r90) - stats.norm.cdf(r10)).mean() == pytest.approx(0.478, abs=0.02)
    assert [q10.mean(), q90.mean()] == pytest.approx([-Z90, Z90], abs=0.06)
    # and the PIT of fresh data in them is uniform (500 values), where the raw PIT is far from it
    cov, p = coverage_and_pit(new, y)
    assert cov == pytest.approx(0.8, abs=0.05) and p > 0.01
    before, p_before = coverage_and_pit(paths, y)
    assert before < 0.55 and p_before < 1e-10


def test_calibrated_model_is_left_alone():
    rng = np.random.default_rng(1)
    paths, y = narrow(rng, 200, scale=1.0)
    rc = C.choose(paths, y, windows=np.arange(200) % 10)
    assert rc.mode == "off" and not rc.active
    assert rc.apply(paths) is paths
    # the map a calibrated model's PIT gives is the identity within the 99% DKW band
    w = C.pit_scores(paths, y)
    R = C.PitMap.fit(w)
    u = np.linspace(0.01, 0.99, 99)
    assert np.abs(R(u) - u).max() < np.sqrt(np.log(2 / 0.01) / (2 * w.size))
    assert C.PitMap.identity()(u) == pytest.approx(u)


def test_map_is_monotone_and_its_inverse_inverts_it():
    rng = np.random.default_rng(2)
    R = C.PitMap.fit(rng.standard_t(3, 300) * 2 + 0.5)
    u = np.concatenate([[1e-12], np.linspace(0.001, 0.999, 999), [1 - 1e-12]])
    r = R(u)
    assert (np.diff(r) > 0).all() and (r > 0).all() and (r < 1).all()
    assert R.inverse(r) == pytest.approx(u, rel=1e-6, abs=1e-9)
    # the paths keep their order at every step
    paths = rng.normal(size=(3, 50, 4))
    rc = C.Recalibration("pooled", [R])
    new = rc.apply(paths)
    assert (np.argsort(new, axis=1) == np.argsort(paths, axis=1)).all()


def test_per_step_bands_and_dict_round_trip():
    assert C.bands_of(6, 4) == [0, 0, 0, 0, 0, 0]  # 24 PIT values: one band
    assert C.bands_of(12, 20) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # 240 values: 6 bands of 2 steps
    rng = np.random.default_rng(3)
    rc = C.Recalibration("per-step", [C.PitMap.fit(rng.normal(size=50)), C.PitMap.fit(2 * rng.normal(size=50))],
                         [0, 0, 1])
    back = C.Recalibration.from_dict(json.loads(json.dumps(rc.to_dict())))
    paths = rng.normal(size=(2, 30, 3))
    assert np.array_equal(back.apply(paths), rc.apply(paths))
    with pytest.raises(ValueError, match="increasing"):
        C.PitMap.from_dict({"x": [0.0, -1.0], "y": [0.0, 1.0]})


def test_conformal_margin_by_hand():
    # ceil((9 + 1) 0.8) = 8th smallest of 9 scores (-0.1 0 0.1 0.2 0.3 0.4 0.5 0.7 0.9)
    s = np.array([0.5, -0.1, 0.3, 0.2, 0.9, 0.0, 0.4, 0.7, 0.1])
    assert C.conformal_margin(s) == 0.7
    assert C.conformal_margin(s[:3]) == np.inf  # ceil(4 * 0.8) = 4 > 3 scores
    paths = np.arange(11.0)[None, :, None]  # 10% and 90% quantiles 1 and 9, width 8
    assert C.conformal_scores(paths, np.array([[13.0]]))[0, 0] == 0.5  # 4 past the top, in widths
    lo, hi = C.conformal_interval(paths, 0.25)
    assert (lo[0, 0], hi[0, 0]) == pytest.approx((-1.0, 11.0))


def test_recalibration_is_stored_in_and_restored_from_the_checkpoint(tmp_path):
    rng = np.random.default_rng(4)
    t = np.arange(160)
    s = Series("y", 10 + 2 * np.sin(2 * np.pi * t / 8) + rng.normal(0, 1, t.size), phase_step=1 / 8)
    cfg = ForecastConfig(hidden=8, layers=1, steps=10, batch_size=16, val_windows=4, transform="none")
    notes = []
    model, meta = train([s], cfg, horizon=4, context=16, log=notes.append)
    assert any(n.startswith("recalibration: ") for n in notes)
    rc = C.Recalibration.from_dict(meta["recalibration"])
    assert rc.report["windows"] == 4 and rc.report["values"] == (4 * 4 - 4 + 1) * 4  # an origin every step
    path = tmp_path / "f.safetensors"
    save_checkpoint(path, model, meta)
    _, back = load_checkpoint(path)
    assert back["recalibration"] == json.loads(json.dumps(meta["recalibration"]))
    # predict draws the recalibrated forecast: the raw paths mapped by the stored map
    forced = dict(meta, recalibration=C.Recalibration("pooled", [C.PitMap.fit(3 * rng.normal(size=200))]).to_dict())
    a = predict((model, forced), data=[s], out=tmp_path / "a", samples=64, seed=5, log=notes.append)
    b = predict((model, dict(meta, recalibration=None)), data=[s], out=tmp_path / "b", samples=64, seed=5,
                log=notes.append)
    assert np.allclose(a, C.Recalibration.from_dict(forced["recalibration"]).apply(b))
    assert a.std() > 1.5 * b.std()


def test_scale_map_closed_form():
    # N(0, 1) forecasts of N(0, 2^2) targets: PIT normal scores are N(0, 4), so s = 2 and r(w) = w / 2
    rng = np.random.default_rng(5)
    m = C.PitMap.fit_scale(rng.normal(0, 2, 20000))
    w = np.array([-6.0, -1.0, 0.0, 0.5, 8.0])
    assert m.scores(w) == pytest.approx(w / 2, rel=0.03)
    assert m.inverse_scores(m.scores(w)) == pytest.approx(w)
    # s is the 80% quantile of |w| over Z90, by hand: |w| = 0.5, 1, ..., 5 (ten values)
    s = np.quantile(np.arange(1, 11) / 2, 0.8) / Z90
    assert C.PitMap.fit_scale(np.arange(1, 11) / 2 * (-1) ** np.arange(10)).y[1] == pytest.approx(1 / s)
    back = C.Recalibration.from_dict(json.loads(json.dumps(C.Recalibration("scale", [m]).to_dict())))
    assert back.mode == "scale" and back.maps[0].scores(w) == pytest.approx(m.scores(w))


def test_scale_is_chosen_when_the_bias_changes_sign_between_windows():
    # forecasts N(b, 0.5^2) of N(0, 1) targets, b = +-0.8 by window: a full map fitted on the other
    # windows moves the held-out window's forecasts by their bias, the scale map only widens them
    rng = np.random.default_rng(6)
    W, N, H = 400, 300, 4
    fold = np.arange(W) % 10
    bias = np.where(fold % 2 == 0, 0.8, -0.8)[:, None, None]
    paths = bias + rng.normal(0, 0.5, (W, N, H))
    y = rng.normal(0, 1, (W, H))
    rc = C.choose(paths, y, windows=fold)
    cv = rc.report["cv_crps"]
    assert rc.mode == "scale" and cv["scale"] < min(cv["pooled"], cv["per-step"]) < cv["off"]
    assert rc.report["after"]["cov80"] > rc.report["before"]["cov80"] + 0.2


def test_scale_steps_mends_a_spread_that_grows_too_slowly():
    """Forecasts N(0, 1) at every step of targets N(0, k) at step k (a random walk forecast as if
    its spread did not grow): right one step ahead, too narrow by sqrt(k) at step k. The
    per-step scales s k^b are then s = 1, b = 1/2 (closed form); one scale for every step
    widens step 1 too, which the cross-validation sees."""
    rng = np.random.default_rng(3)
    W, N, H = 300, 300, 12
    sd = np.sqrt(np.arange(1.0, H + 1))
    paths = rng.normal(0, 1, (W, N, H))
    y = rng.normal(0, 1, (W, H)) * sd
    maps = C.fit_scale_steps(C.pit_scores(paths, y))
    w = np.array([-1.5, 1.0])
    for k in (0, 3, 11):  # r(w) = w / s_k
        assert maps[k].scores(w) == pytest.approx(w / sd[k], rel=0.06)
    rc = C.choose(paths, y, windows=np.arange(W) % 10)
    cv = rc.report["cv_crps"]
    assert rc.mode == "scale-steps" and cv["scale-steps"] < min(cv["scale"], cv["pooled"]) < cv["off"]
    assert rc.bands == list(range(H))
    # fresh forecasts: each step's recalibrated 80% interval holds 80% of N(0, k) (closed form)
    paths, y = rng.normal(0, 1, (100, N, H)), rng.normal(0, 1, (100, H)) * sd
    q10, q90 = np.quantile(rc.apply(paths), [0.1, 0.9], axis=1)  # (W, H)
    held = stats.norm.cdf(q90 / sd) - stats.norm.cdf(q10 / sd)
    assert held.mean(axis=0) == pytest.approx(np.full(H, 0.8), abs=0.03)
    # the one-number scale fitted on the same PIT values widens step 1 past its 80%
    one = C.Recalibration("scale", C.fit_maps(C.pit_scores(paths, y), "scale", []))
    o10, o90 = np.quantile(one.apply(paths[:, :, :1]), [0.1, 0.9], axis=1)
    assert (stats.norm.cdf(o90) - stats.norm.cdf(o10)).mean() > 0.9
    # stored and restored
    back = C.Recalibration.from_dict(json.loads(json.dumps(rc.to_dict())))
    assert back.mode == "scale-steps" and back.bands == rc.bands
    assert back.map_of_step(7).scores(w) == pytest.approx(rc.map_of_step(7).scores(w))
    with pytest.raises(ValueError, match="bands"):
        C.Recalibration.from_dict({**rc.to_dict(), "bands": [0, 99]})


def test_scale_steps_of_a_calibrated_model_is_near_the_identity():
    rng = np.random.default_rng(4)
    paths, y = rng.normal(0, 1, (200, 300, 6)), rng.normal(0, 1, (200, 6))
    maps = C.fit_scale_steps(C.pit_scores(paths, y))
    for m in maps:
        assert m.scores(np.array([1.0]))[0] == pytest.approx(1.0, abs=0.08)
    # too few values: the identity
    assert all(m.x.size == 0 for m in C.fit_scale_steps(np.full((3, 4), np.nan)))


def test_one_validation_window_leaves_the_forecasts_unmapped_and_says_why():
    from rnnforge.forecast.api import describe_recalibration
    from rnnforge.forecast.backtest import training_notes

    # too narrow forecasts, but all from one window: no map can be cross-validated
    rng = np.random.default_rng(9)
    paths, y = rng.normal(0, 0.5, (6, 200, 4)), rng.normal(0, 1, (6, 4))
    rc = C.choose(paths, y, windows=np.zeros(6, dtype=int))
    assert rc.mode == "off" and not rc.active and rc.report["windows"] == 1
    said = describe_recalibration(rc)
    assert said.startswith("recalibration: off (1 validation window: choosing a map takes cross-validation "
                           "over at least 2); validation PIT: KS p ")
    assert "after" not in said and f"80% coverage {rc.report['before']['cov80']:.3f}" in said
    notes = "\n".join(training_notes(None, rc, {}, "m"))
    assert "Recalibration off: 1 validation window, and choosing a map takes cross-validation over at least 2." \
        in notes and "after" not in notes
