"""Series loaders (shipped and CSV, missing values) and every bad input, as one-line errors."""

import numpy as np
import pytest

from rnnforge.cli import main
from rnnforge.forecast.series import check_context_window, check_horizon, check_series, load, parse_csv
from rnnforge.errors import UserError


def test_shipped_sunspots_monthly():
    (s,) = load("sunspots")
    assert s.name == "sunspots" and len(s) == 3126 and s.freq == "M" and s.season == 12
    assert str(s.timestamps[0]) == "1749-01-01" and str(s.timestamps[-1]) == "2009-06-01"
    assert s.values[0] == 58.0 and s.values[-1] == 2.6 and np.isfinite(s.values).all()
    assert s.phase(0, 13).tolist() == pytest.approx([m / 12 for m in range(12)] + [0.0])
    assert [str(t) for t in s.future_timestamps(2)] == ["2009-07-01", "2009-08-01"]


def test_shipped_co2_weekly_with_missing_values():
    (s,) = load("co2")
    assert len(s) == 2284 and s.freq == "W" and s.season == 52
    assert int(np.isnan(s.values).sum()) == 59
    assert s.values[0] == 316.1 and s.values[-1] == 371.5


def test_csv_many_series_timestamps_and_missing(tmp_path):
    p = tmp_path / "two.csv"
    p.write_text("date,a,b\n2020-01-01,1.5,10\n2020-02-01,,11\n2020-03-01,NA,\n2020-04-01,2,13\n")
    a, b = load(str(p))
    assert (a.name, b.name) == ("a", "b")
    np.testing.assert_array_equal(np.isnan(a.values), [False, True, True, False])
    np.testing.assert_array_equal(np.isnan(b.values), [False, False, True, False])
    assert a.freq == "M" and a.season == 12 and a.phase0 == 0.0


def test_csv_without_timestamps_and_season_flag():
    (s,) = parse_csv("y\n1\n2\n\n3\n\n")  # an empty line is a missing value; trailing ones end the file
    assert s.timestamps is None and s.season == 1
    np.testing.assert_array_equal(s.values, [1, 2, np.nan, 3])
    (s,) = load_text_with_season("y\n1\n2\n3\n4\n", 7)
    assert s.season == 7


def load_text_with_season(text, season):
    import tempfile, os
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write(text)
    try:
        return load(f.name, season=season)
    finally:
        os.unlink(f.name)


def test_missing_values_are_skipped_in_training_windows():
    from rnnforge.forecast.features import FeatureSpec
    from rnnforge.forecast.trainer import WindowSampler

    (s,) = load("co2")
    ws = WindowSampler([s], context=52, horizon=13, spec=FeatureSpec(lags=[1, 104], scaler="robust"),
                       rng=np.random.default_rng(0))
    z, phase = ws.batch(32)
    assert z.shape == (32, 104 + 65) and phase.shape == (32, 65)
    ctx = z[:, 104:104 + 52]
    assert np.isfinite(np.nanmedian(ctx, axis=1)).all()  # scaled by observed values only
    assert np.isnan(z).any()  # missing values stay missing (masked in the loss)


# -- bad input: each a UserError with a clear message, and exit code 2 from the CLI ---------
def test_non_numeric_value(tmp_path, capsys):
    p = tmp_path / "bad.csv"
    p.write_text("date,y\n2020-01-01,1\n2020-01-02,abc\n")
    with pytest.raises(UserError, match=r"line 3, column 'y': non-numeric value 'abc'"):
        load(str(p))
    assert main(["forecast", "train", "--data", str(p), "--steps", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-numeric value 'abc'" in err[0]


def test_series_too_short(tmp_path, capsys):
    s = parse_csv("y\n" + "\n".join(str(i % 5) for i in range(30)))[0]
    with pytest.raises(UserError, match=r"has 30 values, too short for context 24 \+ horizon 12 \(36 needed\)"):
        check_series(s, context=24, horizon=12)
    p = tmp_path / "short.csv"
    p.write_text("y\n" + "\n".join(str(i % 5) for i in range(30)) + "\n")
    assert main(["forecast", "train", "--data", str(p), "--context", "24", "--horizon", "12",
                 "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "too short" in capsys.readouterr().err


def test_constant_series(tmp_path, capsys):
    s = parse_csv("y\n" + "4.2\n" * 50 + ",\n")[0]
    with pytest.raises(UserError, match=r"series 'y' is constant \(every observed value is 4.2\)"):
        check_series(s, context=10, horizon=5)
    p = tmp_path / "flat.csv"
    p.write_text("y\n" + "4.2\n" * 50)
    assert main(["forecast", "train", "--data", str(p), "--context", "10", "--horizon", "5",
                 "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "is constant" in capsys.readouterr().err


def test_all_nan_windows(tmp_path, capsys):
    values = [str(np.sin(i)) for i in range(40)] + ["NA"] * 20
    s = parse_csv("y\n" + "\n".join(values) + "\n")[0]
    with pytest.raises(UserError, match=r"the 10 values before step 60 .* are all missing \(NaN\)"):
        check_context_window(s, 60, 10)
    p = tmp_path / "gap.csv"
    p.write_text("y\n" + "\n".join(values) + "\n")
    assert main(["forecast", "predict", "--data", str(p), "--checkpoint", str(_tiny_checkpoint(tmp_path)),
                 "--context", "10", "--horizon", "3", "--samples", "5", "--out", str(tmp_path)]) == 2
    assert "all missing (NaN)" in capsys.readouterr().err
    # a series whose every training window is NaN cannot be trained on
    from rnnforge.forecast.features import FeatureSpec
    from rnnforge.forecast.trainer import WindowSampler

    holes = parse_csv("y\n" + "\n".join(["1", "", "", "", "2", "", "", "", "3", "", "", ""] * 3) + "\n")[0]
    with pytest.raises(UserError, match="windows are all .*NaN"):
        WindowSampler([holes], context=1, horizon=1, spec=FeatureSpec(lags=[1]), rng=np.random.default_rng())


def test_every_value_missing():
    s = parse_csv("x,y\n1,\n2,NA\n3,nan\n")[1]
    with pytest.raises(UserError, match="no observed values"):
        check_series(s, context=2, horizon=1)


@pytest.mark.parametrize("h", [0, -3])
def test_horizon_not_positive(h, tmp_path, capsys):
    with pytest.raises(UserError, match=rf"^horizon must be >= 1, got {h}$"):
        check_horizon(h)
    assert main(["forecast", "train", "--horizon", str(h), "--steps", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"error: --horizon must be >= 1, got {h}")


def test_unknown_data_and_cli_errors(tmp_path, capsys):
    assert main(["forecast", "train", "--data", "nope", "--out", str(tmp_path)]) == 2
    assert "neither a shipped series" in capsys.readouterr().err
    assert main(["forecast", "predict", "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _tiny_checkpoint(tmp_path):
    """A 1-step model trained on a sine wave (no budget to speak of): enough to test predict's checks."""
    p = tmp_path / "sine.csv"
    p.write_text("y\n" + "\n".join(f"{np.sin(i / 3):.4f}" for i in range(80)) + "\n")
    out = tmp_path / "ckpt"
    assert main(["forecast", "train", "--data", str(p), "--context", "10", "--horizon", "3",
                 "--hidden", "4", "--layers", "1", "--steps", "1", "--batch-size", "2",
                 "--out", str(out)]) == 0
    return out / "forecaster.safetensors"
