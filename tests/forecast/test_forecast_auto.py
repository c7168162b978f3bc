"""Validation forecasts from every step (origin count arithmetic) and transform="auto": one model per
candidate transform, the one with the lowest CRPS on the validation windows kept."""

import numpy as np
import pytest
from scipy import stats

from rnnforge.forecast import ForecastConfig, train
from rnnforge.forecast import api
from rnnforge.forecast.metrics import crps_gaussian
from rnnforge.forecast.series import Series


def test_validation_origins_count():
    # 5 windows of 8 after 100 values: origins 100 .. 132 (the last horizon ends at 140)
    o = api.validation_origins(140, 8, 5)
    assert (o[0], o[-1], len(o)) == (100, 132, (5 - 1) * 8 + 1)
    assert len(api.validation_origins(140, 8, 5, stride=2)) == (5 - 1) * 8 // 2 + 1
    assert api.validation_origins(140, 8, 1) == [132]  # one window: one forecast


def test_validation_crps_is_the_mean_crps_of_the_forecasts():
    # Gaussian paths at the normal quantiles: their CRPS tends to the closed form (sample size 4000)
    n = 4000
    z = stats.norm.ppf((np.arange(n) + 0.5) / n)
    paths = np.broadcast_to(2.0 * z[None, :, None], (3, n, 2)).copy()
    y = np.array([[0.0, 1.0], [np.nan, -3.0], [2.0, 0.5]])
    v = api.ValidationForecasts(paths, y, np.array([0, 1, 2]), np.ones(3, bool))
    ok = np.isfinite(y)
    want = crps_gaussian(np.zeros(ok.sum()), np.full(ok.sum(), 2.0), y[ok]).mean()
    assert v.crps() == pytest.approx(want, rel=2e-3)


def _trend(n=220, seed=0):
    rng = np.random.default_rng(seed)
    return Series("trend", 5.0 + 0.5 * np.arange(n) + rng.normal(0, 0.3, n))


def test_auto_keeps_the_transform_with_the_lowest_validation_crps():
    notes = []
    cfg = ForecastConfig(transform="auto", hidden=8, layers=1, steps=30, batch_size=16, val_windows=3,
                         recalibrate="off")
    model, meta = train([_trend()], cfg, horizon=6, context=30, log=notes.append)
    sel = meta["training"]["transform_selection"]
    assert set(sel) == set(api.AUTO_TRANSFORMS)
    assert model.spec.transform == meta["training"]["transform"] == min(sel, key=sel.get)
    # the recorded score is the kept model's CRPS on the validation windows, recomputed here
    train_part = [_trend().head(220)]
    again = api.validation_forecasts(model, train_part, context=30, horizon=6, windows=3, seed=0)
    assert again.crps() == pytest.approx(sel[model.spec.transform], rel=1e-9)
    assert any(n.startswith(f"transform: {model.spec.transform} (the lowest CRPS") for n in notes)
    # a line plus small noise: the levels model, held to the range of its training windows, is
    # beaten by a transform that carries the trend
    assert model.spec.transform != "none"


def test_auto_without_validation_windows_models_the_levels():
    notes = []
    cfg = ForecastConfig(transform="auto", hidden=8, layers=1, steps=5, batch_size=16, val_windows=0)
    model, meta = train([_trend()], cfg, horizon=6, context=30, log=notes.append)
    assert model.spec.transform == "none" and meta["training"]["transform_selection"] is None
    assert "transform: none (auto chooses on the validation windows; there are none)" in notes


def test_auto_is_a_transform_option():
    from rnnforge.errors import OptionError

    ForecastConfig(transform="auto", trend_window=40).validate()  # drift, a candidate, reads it
    with pytest.raises(OptionError, match="'nope' is not one of auto, none, diff, detrend, drift, deseason"):
        ForecastConfig(transform="nope").validate()
    assert ForecastConfig().transform == "auto"
    with pytest.raises(OptionError, match="'auto' is chosen by training on the validation windows; name one of none"):
        ForecastConfig().model_config(12, 48)
