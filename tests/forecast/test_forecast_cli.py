"""`rnnforge forecast train | predict | evaluate` end to end on a tiny CSV, and the baselines."""

import csv
import json

import numpy as np
import pytest

from rnnforge.cli import main
from rnnforge.forecast.series import Series, parse_csv
from rnnforge.errors import UserError
from rnnforge.forecast import baselines as B
from rnnforge.forecast import checkpoint as C
from rnnforge.forecast import trainer as T
from rnnforge.forecast.backtest import _safe


def test_train_predict_evaluate(two_series_csv, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--data", str(two_series_csv), "--context", "24", "--horizon", "6"]
    tiny = ["--hidden", "8", "--layers", "1", "--steps", "20", "--batch-size", "8", "--val-windows", "2",
            "--ensemble", "2", "--transform", "none"]
    assert main(["forecast", "train", *common, *tiny, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rnnforge forecast train: resolved config" in printed and "kept step" in printed
    assert (out / "forecaster.safetensors").exists()

    # predict needs nothing but the checkpoint: data, context and horizon come from it
    assert main(["forecast", "predict", "--out", str(out), "--samples", "50"]) == 0
    with open(out / "quantiles.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 6 and rows[0]["series"] == "a" and rows[0]["timestamp"] == "2012-01-01"
    assert list(rows[0]) == ["series", "step", "timestamp", "mean", "q0.05", "q0.1", "q0.25", "q0.5",
                             "q0.75", "q0.9", "q0.95"]
    for r in rows:
        q = [float(r[k]) for k in ("q0.05", "q0.1", "q0.25", "q0.5", "q0.75", "q0.9", "q0.95")]
        assert q == sorted(q)
    assert (out / "fan-a.png").stat().st_size > 1000 and (out / "fan-b.png").exists()
    # --checkpoint takes the run folder as well as the file in it: the same forecasts
    again = tmp_path / "again"
    assert main(["forecast", "predict", "--checkpoint", str(out), "--out", str(again), "--samples", "50"]) == 0
    assert (again / "quantiles.csv").read_text() == (out / "quantiles.csv").read_text()
    capsys.readouterr()
    # data of another frequency than the checkpoint's is refused: its lags would mean other periods
    quarterly = tmp_path / "quarterly.csv"
    quarterly.write_text("date,a\n" + "".join(f"{2000 + k // 4}-Q{k % 4 + 1},{k}\n" for k in range(40)))
    assert main(["forecast", "predict", "--checkpoint", str(out), "--data", str(quarterly),
                 "--out", str(tmp_path / "q")]) == 2
    assert "series 'a' is quarterly but the checkpoint was trained on monthly data" in capsys.readouterr().err
    assert not (tmp_path / "q" / "quantiles.csv").exists()
    # without timestamps the season must agree: the monthly model's phase inputs need season 12
    bare = tmp_path / "bare.csv"
    bare.write_text("a\n" + "".join(f"{10 + np.sin(k / 2):.3f}\n" for k in range(60)))
    assert main(["forecast", "predict", "--checkpoint", str(out), "--data", str(bare),
                 "--out", str(tmp_path / "q")]) == 2
    assert "series 'a' has season 1 (no timestamps) but the checkpoint was trained on season 12 (monthly data); " \
           "give the data its timestamp column, or --season 12" in capsys.readouterr().err
    assert main(["forecast", "predict", "--checkpoint", str(out), "--data", str(bare), "--season", "12",
                 "--samples", "20", "--out", str(tmp_path / "q")]) == 0
    capsys.readouterr()
    assert main(["forecast", "predict", "--checkpoint", str(tmp_path), "--out", str(again)]) == 2
    assert f"{tmp_path} is a folder without a forecaster.safetensors" in capsys.readouterr().err

    ev = tmp_path / "eval"
    assert main(["forecast", "evaluate", *common, *tiny, "--windows", "3", "--samples", "50",
                 "--baselines", "seasonal-naive", "--out", str(ev)]) == 0
    report = (ev / "report.md").read_text()
    assert "| rnn/quantile x2" in report and "| seasonal-naive" in report and "CRPS per series" in report
    scores = json.loads((ev / "scores.json").read_text())
    assert set(scores) == {"rnn/quantile x2", "seasonal-naive"}  # cell auto: a short series, the sigmoid RNN
    assert scores["seasonal-naive"]["n"] == 2 * 3 * 6 - 1  # one target of b is missing
    for name in scores:
        assert (ev / f"pit-{_safe(name)}.png").exists()

    # a checkpoint trained on the evaluation windows is refused
    assert main(["forecast", "evaluate", "--checkpoint", str(out / "forecaster.safetensors"),
                 "--windows", "2", "--baselines", "none", "--out", str(ev)]) == 2
    assert "in-sample" in capsys.readouterr().err


def test_seasonal_naive_by_hand():
    v = np.array([1.0, 2, 3, 4, 1.5, 2.5, np.nan, 4.5])
    s = Series("x", v, phase_step=1 / 4)
    f = B.seasonal_naive(s, 8, 6)
    np.testing.assert_array_equal(f.mean, [1.5, 2.5, 3, 4.5, 1.5, 2.5])  # the missing 3rd: one more season back
    errors = np.array([0.5, 0.5, 0.5])  # the one-season-back errors that are observed
    sd = np.sqrt(np.mean(errors ** 2))
    np.testing.assert_allclose(f.std, sd * np.sqrt([1, 1, 1, 1, 2, 2]))


def test_baseline_names():
    with pytest.raises(UserError, match="unknown baseline 'prophet'"):
        B.resolve(["prophet"])
    notes = []
    got = B.resolve(["seasonal-naive", "gluonts-deepar"], log=notes.append)
    assert "seasonal-naive" in got
    if not B._gluonts():
        assert "gluonts-deepar" not in got and "needs gluonts" in notes[0]
    else:
        assert isinstance(got["gluonts-deepar"], B.GluonTSDeepAR) and not notes


def test_statsmodels_baselines_give_gaussian_forecasts():
    pytest.importorskip("statsmodels")
    t = np.arange(60)
    v = 5 + 0.05 * t + np.sin(2 * np.pi * t / 4) + np.random.default_rng(0).normal(0, 0.2, 60)
    v[20] = np.nan
    s = Series("x", v, phase_step=1 / 4)
    for fn in (B.ets, B.arima):
        f = fn(s, 54, 6)
        assert f.mean.shape == (6,) and np.isfinite(f.mean).all() and (f.std > 0).all()
        assert np.abs(f.mean - v[54:]).mean() < 1.0


def test_transform_option_end_to_end(two_series_csv, tmp_path, capsys):
    """--transform is saved in the checkpoint and applied by predict: on an exact line
    y = 3t + 7 the differences are all 3 (centred by the mean scaler: 0, with a scale of 0,
    floored), so whatever the model draws the integrated forecast is the line itself,
    3(n + k) + 7 for step k."""
    n = 60
    line = tmp_path / "line.csv"
    line.write_text("y\n" + "\n".join(str(3 * t + 7) for t in range(n)) + "\n")
    out = tmp_path / "diff"
    tiny = ["--hidden", "4", "--layers", "1", "--steps", "10", "--batch-size", "4", "--val-windows", "0",
            "--context", "12", "--horizon", "5", "--scaler", "mean"]
    assert main(["forecast", "train", "--data", str(line), *tiny, "--transform", "diff", "--out", str(out)]) == 0
    assert "transform = 'diff'" in capsys.readouterr().out
    _, meta = C.load(out / "forecaster.safetensors")
    assert meta["model"]["features"]["transform"] == "diff"
    assert main(["forecast", "predict", "--out", str(out), "--samples", "40"]) == 0
    with open(out / "quantiles.csv") as f:
        rows = list(csv.DictReader(f))
    for k, r in enumerate(rows, start=1):
        for key in ("mean", "q0.05", "q0.5", "q0.95"):
            assert float(r[key]) == pytest.approx(3 * (n - 1 + k) + 7, rel=1e-5), (k, key)

    # evaluate trains and names the transform; an unknown one is refused by the parser
    ev = tmp_path / "eval"
    assert main(["forecast", "evaluate", "--data", str(two_series_csv), "--context", "24", "--horizon", "6",
                 "--hidden", "8", "--layers", "1", "--steps", "20", "--batch-size", "8", "--val-windows", "2",
                 "--transform", "detrend", "--windows", "2", "--samples", "50", "--baselines", "none",
                 "--out", str(ev)]) == 0
    scores = json.loads((ev / "scores.json").read_text())
    assert list(scores) == ["rnn/quantile/detrend"] and np.isfinite(scores["rnn/quantile/detrend"]["crps"])
    with pytest.raises(SystemExit) as e:
        main(["forecast", "train", "--transform", "log"])
    assert e.value.code == 2 and "invalid choice: 'log'" in capsys.readouterr().err

    # drift: the line is its own reference (residuals 0, scale floored), so every quantile is the
    # line continued; its fit settings are saved, the default window being the context here
    out = tmp_path / "drift"
    assert main(["forecast", "train", "--data", str(line), *tiny, "--transform", "drift", "--out", str(out)]) == 0
    _, meta = C.load(out / "forecaster.safetensors")
    feats = meta["model"]["features"]
    assert (feats["transform"], feats["trend_window"], feats["trend_harmonics"], feats["level_window"]) == \
        ("drift", 12, 0, 1)
    assert main(["forecast", "predict", "--out", str(out), "--samples", "40"]) == 0
    with open(out / "quantiles.csv") as f:
        rows = list(csv.DictReader(f))
    for k, r in enumerate(rows, start=1):
        for key in ("q0.05", "q0.5", "q0.95"):
            assert float(r[key]) == pytest.approx(3 * (n - 1 + k) + 7, rel=1e-5), (k, key)
    capsys.readouterr()
    assert main(["forecast", "train", "--data", str(line), *tiny, "--transform", "detrend",
                 "--trend-window", "30", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().endswith("--trend-window is used by transform drift and deseason only, "
                                                    "not 'detrend'")
    assert main(["forecast", "train", "--data", str(line), *tiny, "--transform", "drift",
                 "--trend-window", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--trend-window must be >= 2 steps, got 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written for a refused run


def test_refit_replays_the_early_stopped_schedule_on_all_the_data(two_series_csv, tmp_path, capsys):
    """--refit: each member is trained again from its seed, on the training data with the
    validation windows put back, for the steps early stopping kept, on the original schedule."""
    import torch

    from rnnforge.forecast.series import load
    from rnnforge.forecast.model import Forecaster, ModelConfig

    out = tmp_path / "refit"
    flags = ["--data", str(two_series_csv), "--context", "24", "--horizon", "6", "--hidden", "8",
             "--layers", "1", "--steps", "60", "--batch-size", "8", "--val-windows", "2", "--head", "gaussian",
             "--lags", "1,2", "--transform", "none", "--out", str(out)]
    assert main(["forecast", "train", *flags, "--refit"]) == 0
    assert "refitted on all the training data" in capsys.readouterr().out
    model, meta = C.load(out / "forecaster.safetensors")
    member = meta["training"]["members"][0]
    assert meta["training"]["refit"] and member["refit_steps"] == member["best_step"] <= 60

    cfg = ModelConfig(**meta["model"])
    torch.manual_seed(0)
    again = Forecaster(cfg)
    res = T.fit(again, load(str(two_series_csv)), context=24, horizon=6, steps=60, minutes=None,
                batch_size=8, seed=0, val_windows=0, log=None, stop_after=member["best_step"])
    assert res.steps == member["best_step"]
    for name, t in again.state_dict().items():
        assert torch.equal(t, model.state_dict()[name]), name
    # stopping a 60-step schedule after 20 steps is not a 20-step schedule (whose learning rate
    # decays sooner), and is the first 20 steps of the 60
    runs = {}
    for name, steps, stop in (("stopped", 60, 20), ("short", 20, None), ("full", 60, None)):
        torch.manual_seed(0)
        m = Forecaster(cfg)
        r = T.fit(m, load(str(two_series_csv)), context=24, horizon=6, steps=steps, minutes=None,
                  batch_size=8, seed=0, val_windows=0, log=None, stop_after=stop, log_every=20)
        runs[name] = (r, m.readout.delta.detach().clone())
    assert runs["stopped"][0].steps == 20 and runs["full"][0].steps == 60
    assert not torch.equal(runs["stopped"][1], runs["short"][1])
    assert runs["stopped"][0].losses == runs["full"][0].losses[:1]  # same first 20 steps

    assert main(["forecast", "train", *flags, "--val-windows", "0", "--refit"]) == 2
    assert "--refit retrains for the step count early stopping chose; it needs val_windows > 0" \
        in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
def test_gluonts_deepar_baseline_forecasts_from_each_origin(tmp_path, monkeypatch):
    """The peer baseline end to end where gluonts[torch] is installed (the test extra installs it):
    trained once on the values before the first origin, then sample paths of the asked horizon
    from each origin, scored beside the model's."""
    pytest.importorskip("gluonts.torch")
    t = np.arange(120)
    v = 10 + np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 0.1, t.size)
    path = tmp_path / "m.csv"
    stamps = np.arange("2000-01", "2010-01", dtype="datetime64[M]")
    path.write_text("month,y\n" + "\n".join(f"{m},{x:.4f}" for m, x in zip(stamps, v)) + "\n")
    fc = B.GluonTSDeepAR(epochs=1, samples=40, seed=0)
    s = parse_csv(path.read_text(), source=str(path))[0]
    monkeypatch.chdir(tmp_path / "cwd" if (tmp_path / "cwd").mkdir() is None else tmp_path)
    fc.fit([s.head(96)], context=24, horizon=6)
    assert not any((tmp_path / "cwd").iterdir())  # Lightning's checkpoints were not left in the working folder
    f = fc(s, 96, 6)
    assert f.samples.shape == (40, 6) and np.isfinite(f.samples).all()
    assert abs(float(np.median(f.samples)) - 10) < 3  # the series' level, not garbage
    out = tmp_path / "ev"
    assert main(["forecast", "evaluate", "--data", str(path), "--context", "24", "--horizon", "6", "--windows", "2",
                 "--hidden", "4", "--layers", "1", "--steps", "10", "--transform", "none", "--samples", "40",
                 "--baselines", "gluonts-deepar", "--gluonts-epochs", "1", "--out", str(out)]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert "gluonts-deepar" in scores and scores["gluonts-deepar"]["n"] == 12


@pytest.mark.parametrize("stamps, expected", [
    (np.arange("2020-01-01T00", "2020-01-04T00", dtype="datetime64[h]").astype("datetime64[m]"), "h"),  # lags 24, 48
    (np.arange("2020-01-01", "2020-03-01", dtype="datetime64[D]"), "D"),
    (np.arange("2000-01", "2010-01", 3, dtype="datetime64[M]"), "Q"),
    (np.arange("2020-01-06", "2021-01-06", 7, dtype="datetime64[D]"), "W-MON"),  # weeks from a Monday
    (np.arange("2020-01-01T00:00", "2020-01-02T00:00", 15, dtype="datetime64[m]"), "15min"),  # pandas' aliases
    (np.arange("2020-01-01T00:00", "2020-01-09T00:00", 180, dtype="datetime64[m]"), "3h"),
])
def test_gluonts_deepar_is_told_the_series_frequency(stamps, expected):
    text = "t,y\n" + "\n".join(f"{t},{k % 5}" for k, t in enumerate(stamps)) + "\n"
    s = parse_csv(text)[0]
    assert B.GluonTSDeepAR._freq(s) == expected
