"""Rolling recalibration: the PIT map refitted at every evaluation window's origin on the forecasts
known by then. Checked on a stand-in forecaster whose predictive distribution is known (the
random walk's truth, or that truth made too narrow), for what each window may see (nothing at or
after its origin), the window each origin belongs to, and the closed form of the too-narrow case.
"""

import json

import numpy as np
import pytest

from rnnforge.forecast.api import rolling_start
from rnnforge.forecast.backtest import Rolling, backtest, rolling_origins, rolling_recalibration
from rnnforge.forecast.baselines import seasonal_naive
from rnnforge.forecast.calibration import Recalibration
from rnnforge.forecast.series import Series

from test_forecast_pit_tests import Walker, random_walk

N, HORIZON, WINDOWS, START = 300, 10, 8, 100  # test windows from 220; out-of-sample forecasts from 100


def fit(values, spread=0.5, **kw):
    s = Series("walk", values)
    return rolling_recalibration(Walker(spread), [s], context=30, horizon=HORIZON, windows=WINDOWS,
                                 start={"walk": START}, samples=200, seed=0, **kw)


def test_each_origin_takes_the_recalibration_of_its_window():
    rcs = [Recalibration(report={"k": k}) for k in range(WINDOWS)]
    rolling = Rolling(rcs)
    s = Series("walk", np.zeros(N))
    for k, o in enumerate(rolling_origins(N, HORIZON, WINDOWS)):
        for t in range(o, o + HORIZON):
            assert rolling.at(s, t, HORIZON).report["k"] == k


def test_a_window_sees_nothing_from_its_origin_on():
    """Values from window k's origin on are replaced by a far-off level: the recalibrations of
    windows 0..k are unchanged, and a later window's does change (so the comparison can fail)."""
    y = random_walk(N, seed=5)
    base = fit(y)
    k = 3
    o = rolling_origins(N, HORIZON, WINDOWS)[k]
    z = y.copy()
    z[o:] += 1000.0
    moved = fit(z)
    for j in range(k + 1):
        assert moved.recalibrations[j].to_dict() == base.recalibrations[j].to_dict()
        assert moved.forecasts[j] == base.forecasts[j]
    assert moved.recalibrations[k + 1].to_dict() != base.recalibrations[k + 1].to_dict()


def test_the_forecasts_known_at_each_origin():
    """Window k is chosen on the forecasts from every origin in [START, o_k): o_k - START of them."""
    rolling = fit(random_walk(N, seed=5))
    assert rolling.forecasts == [o - START for o in rolling_origins(N, HORIZON, WINDOWS)]


def test_a_too_narrow_forecaster_is_widened_to_its_nominal_coverage(tmp_path):
    """Half the true spread: the map that calibrates it is r(w) = w / 2 in normal scores (closed form;
    the 80% coverage before is 2 Phi(0.64) - 1 = 0.48). The PIT values of a random walk's
    overlapping forecasts are dependent, so each window's estimate of r is noisy; every one
    must widen the forecast by at least 1.4 at the 80% interval's edge, and the coverage of the
    recalibrated forecasts must come to 0.8."""
    y = random_walk(N, seed=5)
    s = Series("walk", y)
    backtest(Walker(0.5), [s], context=30, horizon=HORIZON, windows=WINDOWS, samples=400, seed=0,
             baselines={"seasonal-naive": seasonal_naive}, out=tmp_path, log=lambda *_: None,
             rolling_start={"walk": START})
    rows = json.loads((tmp_path / "scores.json").read_text())
    rnn = rows["rnn"]
    assert rnn["before_recalibration"]["cov80"] < 0.6
    assert rnn["cov80"] == pytest.approx(0.8, abs=0.07)
    assert rnn["crps"] < rnn["before_recalibration"]["crps"]
    assert rnn["pit1_ks_p"] > 0.01 and rnn["before_recalibration"]["pit1_ks_p"] < 0.01
    modes = rnn["rolling_recalibration"]["modes"]
    assert len(modes) == WINDOWS and "off" not in modes
    w = 1.2816  # the 80% interval's edge in normal scores
    for rc in fit(y).recalibrations:
        assert 0 < float(rc.map_of_step(0).scores(2 * w)) < 2 * w / 1.4
    assert "Rolling recalibration: refitted at the origin of each of the 8 test windows" in \
        (tmp_path / "report.md").read_text()


def test_a_calibrated_forecaster_keeps_its_scores(tmp_path):
    y = random_walk(N, seed=5)
    s = Series("walk", y)
    backtest(Walker(1.0), [s], context=30, horizon=HORIZON, windows=WINDOWS, samples=400, seed=0,
             baselines={}, out=tmp_path, log=lambda *_: None, rolling_start={"walk": START})
    rnn = json.loads((tmp_path / "scores.json").read_text())["rnn"]
    raw = rnn.get("before_recalibration", rnn)
    assert rnn["crps"] == pytest.approx(raw["crps"], rel=0.03)
    assert rnn["cov80"] == pytest.approx(0.8, abs=0.08)


def test_no_forecast_before_the_first_window_leaves_it_uncalibrated():
    """Starting at the first test origin (the validation windows were trained on): window 0 has
    nothing to fit on and is left as forecast; the later ones are fitted."""
    y = random_walk(N, seed=5)
    s = Series("walk", y)
    first = rolling_origins(N, HORIZON, WINDOWS)[0]
    rolling = rolling_recalibration(Walker(0.5), [s], context=30, horizon=HORIZON, windows=WINDOWS,
                                    start={"walk": first}, samples=200, seed=0)
    assert rolling.forecasts[0] == 0 and not rolling.recalibrations[0].active
    assert rolling.recalibrations[-1].active


@pytest.mark.parametrize("training, expected", [
    ({"recalibrate": "auto", "refit": False, "val_windows": 4}, 160),
    ({"recalibrate": "auto", "refit": True, "val_windows": 4}, 200),
    ({"recalibrate": "auto", "refit": False, "val_windows": 0}, 200),
    ({"recalibrate": "off", "refit": False, "val_windows": 4}, None),
])
def test_the_first_out_of_sample_origin(training, expected):
    meta = {"horizon": 10, "train_end": {"walk": 200}, "training": training}
    got = rolling_start(meta, [Series("walk", np.zeros(N))])
    assert got == (None if expected is None else {"walk": expected})


def test_evaluate_refits_the_recalibration_per_window_unless_told_not_to(two_series_csv, tmp_path, capsys):
    from rnnforge.cli import main

    common = ["--data", str(two_series_csv), "--context", "24", "--horizon", "6", "--hidden", "8", "--layers", "1",
              "--steps", "20", "--batch-size", "8", "--val-windows", "2", "--transform", "none", "--windows", "3",
              "--samples", "50", "--baselines", "none"]
    assert main(["forecast", "evaluate", *common, "--out", str(tmp_path / "on")]) == 0
    rnn = next(iter(json.loads((tmp_path / "on" / "scores.json").read_text()).values()))
    rolling = rnn["rolling_recalibration"]
    assert len(rolling["modes"]) == 3
    # two series from the first validation origin, 2 x 6 steps before the test windows: 12, 18, 24 each
    assert rolling["forecasts"] == [24, 36, 48]
    assert "Rolling recalibration: refitted" in (tmp_path / "on" / "report.md").read_text()

    assert main(["forecast", "evaluate", *common, "--rolling-recalibration", "off", "--out", str(tmp_path / "off")]) == 0
    rnn = next(iter(json.loads((tmp_path / "off" / "scores.json").read_text()).values()))
    assert "rolling_recalibration" not in rnn

    capsys.readouterr()
    assert main(["forecast", "evaluate", *common, "--recalibrate", "off", "--out", str(tmp_path / "never")]) == 0
    assert "rolling recalibration: off (the model was trained with --recalibrate off)" in capsys.readouterr().out
    rnn = next(iter(json.loads((tmp_path / "never" / "scores.json").read_text()).values()))
    assert "rolling_recalibration" not in rnn and "before_recalibration" not in rnn


def test_a_rolling_flag_that_is_not_a_bool_is_refused(tmp_path):
    from rnnforge.errors import OptionError
    from rnnforge.forecast import evaluate

    with pytest.raises(OptionError, match="rolling_recalibration.*True or False"):
        evaluate([Series("walk", random_walk(N, seed=5))], out=tmp_path, rolling_recalibration="yes")
    assert not any(tmp_path.iterdir())


def test_series_of_different_lengths_keep_their_own_windows():
    """Each series' windows end at its own end: window k of a series of n values starts at
    n - (W - k) h, and its recalibration sees that series' forecasts up to there (and the
    other's up to its own window k)."""
    long, short = Series("long", random_walk(N, seed=5)), Series("short", random_walk(N - 37, seed=6))
    start = {"long": START, "short": START - 37}
    rolling = rolling_recalibration(Walker(0.5), [long, short], context=30, horizon=HORIZON, windows=WINDOWS,
                                    start=start, samples=50, seed=0)
    origins = {s.name: rolling_origins(len(s), HORIZON, WINDOWS) for s in (long, short)}
    assert rolling.forecasts == [origins["long"][k] - START + origins["short"][k] - (START - 37)
                                 for k in range(WINDOWS)]
    for s in (long, short):
        for k, o in enumerate(origins[s.name]):
            assert rolling.at(s, o, HORIZON) is rolling.recalibrations[k]
            assert rolling.at(s, o + HORIZON - 1, HORIZON) is rolling.recalibrations[k]
