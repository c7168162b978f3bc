"""Season inference per frequency, data-scaled default windows, early stopping with patience."""

import json

import numpy as np
import pytest

from rnnforge.cli import main
from rnnforge.forecast import ForecastConfig, parse_csv, plan
from rnnforge.forecast.api import default_horizon
from rnnforge.forecast.features import default_lags
from rnnforge.forecast.series import Series
from rnnforge.forecast import trainer as T


def csv_of(stamps, column="date"):
    return f"{column},y\n" + "\n".join(f"{t},{np.sin(i) + 0.01 * i:.4f}" for i, t in enumerate(stamps)) + "\n"


@pytest.mark.parametrize("stamps,column,freq,season,phase0", [
    ([f"2020-01-01 {h:02d}:00" for h in range(5, 24)] + [f"2020-01-02T{h:02d}:00" for h in range(0, 12)],
     "timestamp", "H", 24, 5 / 24),
    # the hour alone, as numpy writes datetime64[h] (the hour was once dropped, leaving equal days)
    ([str(t) for t in np.arange("2020-01-01T05", "2020-01-02T12", dtype="datetime64[h]")], "timestamp", "H", 24,
     5 / 24),
    # sub-daily grids: the time of day is the season (96 quarter hours, 8 three-hour steps), and
    # under 5 minutes the minute of the hour (a day of 1440 minutes would be a season of 1440 steps)
    ([str(t) for t in np.arange("2020-01-01T06:00", "2020-01-01T16:00", 15, dtype="datetime64[m]")], "timestamp",
     "15min", 96, 24 / 96),
    ([str(t) for t in np.arange("2020-01-01T03:00", "2020-01-05T00:00", 180, dtype="datetime64[m]")], "timestamp",
     "3h", 8, 1 / 8),
    ([str(t) for t in np.arange("2020-01-01T06:10", "2020-01-01T08:00", dtype="datetime64[m]")], "timestamp",
     "1min", 60, 10 / 60),
    # one row a day at one time of day is a daily series
    ([f"{np.datetime64('2021-03-03') + k}T09:30" for k in range(30)], "date", "D", 7, 2 / 7),
    ([str(np.datetime64("2021-03-03") + k) for k in range(30)], "date", "D", 7, 2 / 7),  # a Wednesday
    ([f"{np.datetime64('2021-03-03') + k}T00:00:00Z" for k in range(30)], "date", "D", 7, 2 / 7),  # UTC marked
    ([str(d) for d in np.busday_offset("2021-03-05", np.arange(30), roll="forward")], "date", "B", 5, 4 / 5),
    ([f"{y}-Q{q}" for y in range(2000, 2008) for q in range(1, 5)][1:], "quarter", "Q", 4, 1 / 4),
    ([f"{y}-{m:02d}-01" for y in range(2000, 2005) for m in (1, 4, 7, 10)], "date", "Q", 4, 0.0),
    ([f"{1871 + k}" for k in range(40)], "year", "Y", 1, 0.0),
    ([f"{1871 + k}.0" for k in range(40)], "date", "Y", 1, 0.0),  # a float column written by pandas
    ([f"{1871 + k}-01-01" for k in range(40)], "date", "Y", 1, 0.0),
])
def test_season_inferred_per_frequency(stamps, column, freq, season, phase0):
    (s,) = parse_csv(csv_of(stamps, column))
    assert (s.freq, s.season) == (freq, season)
    assert s.phase0 == pytest.approx(phase0)
    assert s.future_timestamps(1) is not None


def test_hourly_gaps_and_irregular_times():
    notes = []
    stamps = [f"2020-01-01 {h:02d}:00" for h in range(24) if h != 7]
    (s,) = parse_csv(csv_of(stamps), log=notes.append)
    assert len(s) == 24 and np.isnan(s.values[7]) and "1 hourly step" in notes[0]
    assert str(s.future_timestamps(2)[1]) == "2020-01-02T01:00"
    from rnnforge.errors import UserError
    (s,) = parse_csv(csv_of(["2020-01-01 00:00", "2020-01-01 01:30", "2020-01-01 03:00"]))  # 90 minutes
    assert (s.freq, s.season) == ("90min", 16)
    with pytest.raises(UserError, match=r"not on a regular grid \(a step of whole minutes that divides a day, "
                                        r"gaps allowed\)"):
        parse_csv(csv_of(["2020-01-01 00:00", "2020-01-01 00:07", "2020-01-01 00:14"]))  # 7 minutes: not a divisor
    with pytest.raises(UserError, match="not on a regular grid"):
        parse_csv(csv_of(["2020-01-01 00:00", "2020-01-01 00:15", "2020-01-01 00:40"]))  # 25 is no multiple of 15


def test_sub_daily_grids_fill_gaps_and_continue_on_their_step():
    notes = []
    stamps = [str(t) for t in np.arange("2020-01-01T23:00", "2020-01-02T01:00", 15, dtype="datetime64[m]")]
    del stamps[3]
    (s,) = parse_csv(csv_of(stamps, "timestamp"), log=notes.append)
    assert len(s) == 8 and np.isnan(s.values[3]) and "1 15-minute step" in notes[0]
    assert [str(t) for t in s.future_timestamps(2)] == ["2020-01-02T01:00", "2020-01-02T01:15"]
    # the phase runs on across midnight: 23:00 is quarter hour 92 of 96
    assert s.phase(0, 5) == pytest.approx(np.array([92, 93, 94, 95, 0]) / 96)


def test_default_windows_scale_with_the_series():
    annual = [Series("y", np.arange(100.0), freq="Y")]
    p = plan(annual, windows=None)
    assert (p.horizon, p.windows, p.context, p.val_windows) == (6, 6, 21, 4)
    quarterly = [Series("y", np.arange(200.0), freq="Q", phase_step=0.25)]
    p = plan(quarterly, windows=None)
    assert (p.horizon, p.windows) == (8, 8) and p.context == (200 - 64) // 3 and p.val_windows == 5
    # long monthly series keep the defaults the shipped series were recorded with
    monthly = [Series("y", np.arange(3126.0), freq="M", phase_step=1 / 12)]
    p = plan(monthly, windows=None)
    assert (p.horizon, p.windows, p.context, p.val_windows) == (24, 5, 120, 4)
    assert default_horizon([Series("y", np.arange(50.0), freq="Y")]) == 5  # a tenth of the series
    assert "lags 1,2,3,4,11,12,13,24" in p.resolved(ForecastConfig())


def test_automatic_lags_are_those_the_fitted_span_can_show():
    assert default_lags(24) == [1, 2, 3, 4, 23, 24, 25, 48] and default_lags(12) == [1, 2, 3, 4, 11, 12, 13, 24]
    # at most half the span back: seen by at least half the values fitted on
    assert default_lags(24, span=24) == [1, 2, 3, 4]
    assert default_lags(12, span=24) == [1, 2, 3, 4, 11, 12]
    assert default_lags(12, span=30) == [1, 2, 3, 4, 11, 12, 13]
    assert default_lags(12, span=48) == default_lags(12)
    assert default_lags(7, span=4) == [1, 2]
    assert default_lags(1, span=1) == [1]  # lag 1 always
    # a 40-value hourly series: 16 outcomes held out, no validation windows, 24 values fitted on
    hourly = plan([Series("h", np.arange(40.0), freq="H", phase_step=1 / 24)], windows=None)
    assert hourly.fit_span() == 24
    assert "lags 1,2,3,4 (not 23,24,25,48: too far back for the 24 values fitted on)" \
        in hourly.resolved(ForecastConfig())
    # named lags are kept as named
    assert "lags 1,24,48, context" in hourly.resolved(ForecastConfig(lags=[1, 24, 48]))


def test_short_hourly_series_trains_on_the_lags_it_can_show(tmp_path):
    from rnnforge.forecast import train

    t = np.arange(40)
    s = Series("h", 5 + np.sin(2 * np.pi * t / 24) + 0.1 * np.cos(t), freq="H", phase_step=1 / 24)
    logs = []
    model, _ = train([s], ForecastConfig(hidden=4, layers=1, steps=5, transform="none"), holdout_windows=4,
                     log=logs.append)
    assert model.spec.lags == [1, 2, 3, 4]
    # named lags beyond the span: kept, with a warning that their weights never train
    model, _ = train([s], ForecastConfig(hidden=4, layers=1, steps=5, transform="none", lags=[1, 2, 24, 48]),
                     holdout_windows=4, log=logs.append)
    assert model.spec.lags == [1, 2, 24, 48]
    assert "warning: the 24 values fitted on are too few for lags 24,48: their weights never train; " \
           "leave them out of --lags" in logs


def test_check_interval_follows_the_data():
    assert T.check_interval(40, 64) == 5  # tiny data: checked every few epochs' worth
    assert T.check_interval(400, 64) == 13
    assert T.check_interval(3000, 64) == 50


def test_patience_stops_training_and_the_report_says_where(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = ["year,y"] + [f"{1871 + k},{1000 + 100 * rng.normal():.1f}" for k in range(100)]
    path = tmp_path / "annual.csv"
    path.write_text("\n".join(rows) + "\n")
    # only --data and --horizon (and a small network and budget, to keep the test short)
    assert main(["forecast", "evaluate", "--data", str(path), "--horizon", "6", "--hidden", "8", "--layers", "1",
                 "--steps", "400", "--patience", "3", "--samples", "100", "--baselines", "seasonal-naive",
                 "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    # cell auto: the 64 values before the evaluation windows take the sigmoid RNN
    assert "resolved: cell rnn (64 training values, < 1000), season 1, lags 1,2,3,4, context 21, horizon 6, " \
           "validation windows 4 x 6, evaluation windows 6 x 6 (36 outcomes)" in out
    assert "stopped at step" in out
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    # the kept transform's name (rnn/quantile, .../diff, .../drift or .../mix x3) leads the scores
    name = next(iter(scores))
    assert name.startswith("rnn/quantile")  # cell auto: 64 training values
    model = scores[name]
    assert {"crps", "cov80", "pit_ks_p"} <= set(model) and model["n"] == 36
    # the valid PIT tests: 6 values per step (one per window), a one-step forecast from each of the 36 origins
    assert (model["pit_steps_n"], model["pit1_n"], scores["seasonal-naive"]["pit1_n"]) == (6, 36, 36)
    assert f"1-step {model['pit1_ks_p']:.3g})" in out
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "stopped early at step" in report and "(patience 3 checks of 5 steps)" in report
    assert "Recalibration (`" in report


def test_a_100_value_annual_series_evaluates_with_only_data_and_horizon(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = np.zeros(100)
    for t in range(1, 100):
        x[t] = 0.6 * x[t - 1] + rng.normal()
    path = tmp_path / "annual.csv"
    path.write_text("year,y\n" + "".join(f"{1900 + k},{50 + 5 * v:.3f}\n" for k, v in enumerate(x)))
    assert main(["forecast", "evaluate", "--data", str(path), "--horizon", "6", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "season 1, lags 1,2,3,4, context 21, horizon 6, validation windows 4 x 6, evaluation windows 6 x 6" in out
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert set(scores) - {next(iter(scores))} == {"seasonal-naive", "ets", "arima"}
    for sc in scores.values():
        assert sc["n"] == 36 and np.isfinite(sc["crps"]) and 0 <= sc["cov80"] <= 1
    # and its fan chart drawn
    assert (tmp_path / "ev" / "fan-y.png").stat().st_size > 1000


def test_cell_auto_takes_the_sigmoid_rnn_below_a_thousand_training_values():
    from rnnforge.errors import OptionError
    from rnnforge.forecast.api import AUTO_CELL_VALUES

    assert AUTO_CELL_VALUES == 1000 and ForecastConfig().cell == "auto"
    auto = ForecastConfig()
    # 1030 values, 5 evaluation windows of 6 held out: 1000 before them -> the LSTM; 999 -> the RNN
    long = plan([Series("a", np.arange(1030.0))], horizon=6, windows=5)
    assert long.training_values() == 1000 and long.cell(auto) == "lstm"
    short = plan([Series("a", np.arange(1029.0))], horizon=6, windows=5)
    assert short.training_values() == 999 and short.cell(auto) == "rnn"
    # values are counted over all the series, missing ones not at all
    gappy = np.arange(700.0)
    gappy[::7] = np.nan
    many = plan([Series("a", np.arange(600.0)), Series("b", gappy)], horizon=6, windows=0)
    assert many.training_values() == 600 + 600 and many.cell(auto) == "lstm"
    assert short.cell(ForecastConfig(cell="gru")) == "gru"  # a named cell is kept
    assert "cell rnn (999 training values, < 1000)" in short.resolved(auto)
    assert "cell" not in short.resolved(ForecastConfig(cell="lstm"))
    with pytest.raises(OptionError, match="'auto' is resolved from the training data"):
        ForecastConfig(transform="none").model_config(1, 24)
    with pytest.raises(OptionError, match="'nope' is not one of auto, rnn"):
        ForecastConfig(cell="nope").validate()
