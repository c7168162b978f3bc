"""The long-format reader (item_id, timestamp, target) and the global model's per-series scaling."""

import json

import numpy as np
import pytest

from rnnforge.errors import UserError
from rnnforge.forecast import ForecastConfig, evaluate, load_checkpoint, parse_csv, plan, predict
from rnnforge.forecast.api import warn_short
from rnnforge.forecast.scaling import SeriesScaling
from rnnforge.forecast.series import Series


def long_csv(items, months=24, header="item_id,timestamp,target", skip=(), levels=(100, 200, 300)):
    rows = [header]
    for i, item in enumerate(items):
        for m in range(months):
            if (item, m) in skip:
                continue
            rows.append(f"{item},{2000 + m // 12}-{m % 12 + 1:02d}-01,{levels[i] * (1 + 0.01 * np.sin(m)):.3f}")
    return "\n".join(rows) + "\n"


def test_long_format_reads_one_series_per_item():
    notes = []
    a, b = parse_csv(long_csv(["a", "b"], skip={("b", 5)}), source="f.csv", log=notes.append)
    assert (a.name, b.name, a.freq, a.season, len(a), len(b)) == ("a", "b", "M", 12, 24, 24)
    assert a.values[3] == pytest.approx(100 + np.sin(3), abs=1e-3) and np.isnan(b.values[5])
    assert notes == ["warning: f.csv: 1 step of the items' grids have no row; read as missing values"]
    # the columns in any order, with the other common names
    (s,) = parse_csv("y,ds,unique_id\n1,2020Q1,x\n2,2020Q2,x\n3,2020Q3,x\n")
    assert (s.name, s.freq, list(s.values)) == ("x", "Q", [1.0, 2.0, 3.0])


@pytest.mark.parametrize("text,message", [
    ("item_id,timestamp,target\na,2020-01-01,1\nb,2020-01-01,1\na,2020-02-01,2\na,2020-01-01,3\n",
     "f.csv: line 5: item_id 'a' has a second row at '2020-01-01' (the first on line 2); keep one row per item "
     "and timestamp"),
    ("item_id,timestamp,target\na,2020-01-01,1\na,2020-02-01,x\na,2020-03-01,3\n",
     "f.csv: line 3, column 'target': non-numeric value 'x'"),
    ("item_id,timestamp,target\nb,2020-01-01,1\na,2020-01-01,1\nb,2020-02-01,1\na,2020-01-15,2\n"
     "a,2020-02-01,3\nb,2020-03-01,1\n",
     "f.csv: column 'timestamp': the timestamps"),
    ("item_id,timestamp,target\na,2020-01-01,1\na,soon,2\na,2020-03-01,3\n",
     "f.csv: line 3, column 'timestamp': 'soon' is not a date"),
    ("item_id,timestamp,target\na,2020-01-01,1\n,2020-02-01,2\n",
     "f.csv: line 3: the 'item_id' cell is empty; every row needs its series"),
    ("item_id,timestamp,target\na,2020-01-01,1\na,2020-02-01,2\n",
     "f.csv: item_id 'a' has 2 rows; a series needs at least 3"),
    ("item_id,timestamp,target\na,2020-01-01,1\na,2020-02-01,2\na,2020-03-01,2\n"
     "b,2020-01-01,1\nb,2020-01-02,2\nb,2020-01-03,2\n",
     "f.csv: item_id 'b' is daily but 'a' is monthly; a file holds series of one frequency"),
])
def test_long_format_errors_are_clear(text, message):
    with pytest.raises(UserError) as e:
        parse_csv(text, source="f.csv")
    assert str(e.value).startswith(message), str(e.value)


def test_long_format_rows_in_any_order():
    """Rows shuffled (items interleaved, each item's steps out of time order, as a concatenation
    of per-date exports leaves them) read as the sorted file does: items in order of first
    appearance, each in time order, a missing step still a missing value."""
    text = long_csv(["a", "b", "c"], skip={("b", 5)})
    header, *rows = text.splitlines()
    rng = np.random.default_rng(0)
    shuffled = "\n".join([header] + [rows[i] for i in rng.permutation(len(rows))]) + "\n"
    first = [r.split(",")[0] for r in shuffled.splitlines()[1:]]
    expected = {s.name: s for s in parse_csv(text, source="f.csv")}
    got = parse_csv(shuffled, source="f.csv")
    assert [s.name for s in got] == list(dict.fromkeys(first))
    for s in got:
        e = expected[s.name]
        np.testing.assert_array_equal(s.values, e.values)
        np.testing.assert_array_equal(s.timestamps, e.timestamps)
        assert (s.freq, s.season) == (e.freq, e.season)
    assert np.isnan(expected["b"].values[5])


def test_long_format_error_from_the_command_line(tmp_path, refused):
    p = tmp_path / "long.csv"
    p.write_text("item_id,timestamp,target\na,2020-01-01,1\nb,2020-01-01,1\na,2020-01-01,2\n")
    err = refused(["forecast", "train", "--data", p, "--out", tmp_path / "o"])
    assert err == (f"rnnforge forecast: error: {p}: line 4: item_id 'a' has a second row at '2020-01-01' "
                   f"(the first on line 2); keep one row per item and timestamp")


def test_series_scaling_round_trip():
    rng = np.random.default_rng(0)
    series = [Series(f"s{k}", 10 ** k * (5 + rng.normal(size=50))) for k in range(4)]
    series[2].values[7] = np.nan
    sc = SeriesScaling.fit(series)
    scaled = sc.scale(series)
    for s, z in zip(series, scaled):
        v = z.values[np.isfinite(z.values)]
        assert v.mean() == pytest.approx(0, abs=1e-12) and np.abs(v).mean() == pytest.approx(1)
    back = SeriesScaling.from_dict(json.loads(json.dumps(sc.to_dict())))
    paths = np.stack([z.values for z in scaled])[:, None, :]  # (S, 1, T): the scaled values as one path
    assert np.allclose(back.unscale(paths, series)[:, 0], np.stack([s.values for s in series]), equal_nan=True)
    with pytest.raises(UserError, match="series 'new' was not among the series the model was trained on"):
        sc.scale([Series("new", np.ones(3))])


def test_global_model_over_long_format_scales_each_series(tmp_path):
    p = tmp_path / "long.csv"
    p.write_text(long_csv(["small", "big", "huge"], months=48, levels=(100, 200, 30000)))
    cfg = ForecastConfig(hidden=8, layers=1, steps=20, batch_size=16, series_scaling=True, recalibrate="off",
                         transform="none")
    scores = evaluate(str(p), cfg, out=tmp_path / "ev", windows=2, horizon=6, context=12, samples=50,
                      baselines=["seasonal-naive"], log=lambda m: None, save_to=tmp_path / "ev" / "f.safetensors")
    per = (tmp_path / "ev" / "per_series.csv").read_text().splitlines()
    assert per[0] == "series,rnn/quantile,seasonal-naive" and [r.split(",")[0] for r in per[1:]] == \
        ["small", "big", "huge"]
    assert scores["rnn/quantile"].n == 3 * 2 * 6
    model, meta = load_checkpoint(tmp_path / "ev" / "f.safetensors")
    assert set(meta["series_scaling"]) == {"small", "big", "huge"}
    assert meta["series_scaling"]["huge"][0] == pytest.approx(30000, rel=0.01)
    paths = predict((model, meta), out=tmp_path / "pr", samples=40, log=lambda m: None)
    # forecasts come back in each series' own units
    med = np.median(paths, axis=(1, 2))
    assert 50 < med[0] < 150 and 150 < med[1] < 250 and 20000 < med[2] < 40000


def test_the_shortest_series_sizes_the_windows_and_says_so():
    a, b = Series("a", np.arange(120.0), freq="M", phase_step=1 / 12), Series("c", np.arange(15.0), freq="M",
                                                                                phase_step=1 / 12)
    p = plan([a, a, b], windows=None)
    assert p.horizon == 1  # a tenth of the shortest
    assert "(the defaults follow the shortest series, 'c': every series must hold the windows)" in p.describe()
    said = []
    warn_short([a, a, b], said.append)
    assert said == ["warning: series 'c' has 15 steps against a median of 120, and the horizon, context and "
                    "windows of every series are sized to it; leave it out, or set --horizon, --context and "
                    "--windows"]
    said.clear()
    warn_short([a, a, b], said.append, windows_flag="--holdout-windows")  # train's name for them
    assert said[0].endswith("set --horizon, --context and --holdout-windows")
    said.clear()
    warn_short([a, Series("d", np.arange(70.0))], said.append)  # over half the median: no warning
    assert said == []
