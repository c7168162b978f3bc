"""Fan charts for the first --fan-charts series only (a chart takes about 0.2 s, so a global
model over thousands of series would spend minutes drawing them), every series in the CSV."""

import csv

import numpy as np
import pytest

from rnnforge.cli import main as cli


def main(argv):
    return cli([str(a) for a in argv])

SERIES = 12
COMMON = ["--context", "12", "--horizon", "3", "--hidden", "4", "--layers", "1", "--steps", "3",
          "--batch-size", "4", "--val-windows", "0", "--transform", "none", "--samples", "20"]


@pytest.fixture(scope="module")
def wide_csv(tmp_path_factory):
    p = tmp_path_factory.mktemp("wide") / "wide.csv"
    t = np.arange(60)
    cols = {f"s{k:02d}": 10 + k + np.sin(t / 3 + k) for k in range(SERIES)}
    p.write_text(",".join(cols) + "\n" + "\n".join(",".join(f"{cols[c][i]:.4f}" for c in cols)
                                                   for i in range(len(t))) + "\n")
    return p


def charts(folder):
    return sorted(p.name for p in folder.glob("fan-*.png"))


def test_evaluate_draws_the_first_ten_by_default_and_says_so(wide_csv, tmp_path):
    out = tmp_path / "ev"
    assert main(["forecast", "evaluate", "--data", wide_csv, *COMMON, "--windows", "2", "--baselines", "none",
                 "--out", out]) == 0
    assert charts(out) == [f"fan-s{k:02d}.png" for k in range(10)]
    assert "drawn for the first 10 of the 12 series: `--fan-charts N` or `all` for more" in \
        (out / "report.md").read_text()


@pytest.mark.parametrize("flag, expected", [("all", SERIES), ("0", 0), ("3", 3)])
def test_predict_draws_as_many_as_asked_and_writes_every_series(wide_csv, tmp_path, flag, expected, capsys):
    run = tmp_path / "run"
    assert main(["forecast", "train", "--data", wide_csv, *[a for a in COMMON if a not in ("--samples", "20")],
                 "--out", run]) == 0
    capsys.readouterr()
    assert main(["forecast", "predict", "--out", run, "--samples", "20", "--fan-charts", flag]) == 0
    assert len(charts(run)) == expected
    with open(run / "quantiles.csv") as f:
        assert {r["series"] for r in csv.DictReader(f)} == {f"s{k:02d}" for k in range(SERIES)}
    said = capsys.readouterr().out
    assert {SERIES: f"quantiles.csv and {SERIES} fan charts", 0: "quantiles.csv (no fan charts)",
            3: f"quantiles.csv and fan charts of the first 3 of {SERIES} series"}[expected] in said


def test_the_chart_axis_holds_the_dates_and_continues_them_past_the_end():
    from rnnforge.forecast.backtest import _x_axis
    from rnnforge.forecast.series import parse_csv

    (q,) = parse_csv("date,a\n" + "".join(f"{2000 + k // 4}-Q{k % 4 + 1},{k}\n" for k in range(12)))
    # steps 10, 11 are 2002-Q3, Q4; 12, 13 (past the end) 2003-Q1, Q2
    assert [str(d) for d in _x_axis(q, 10, 14)] == ["2002-07-01", "2002-10-01", "2003-01-01", "2003-04-01"]
    assert [str(d) for d in _x_axis(q, 13, 15)] == ["2003-04-01", "2003-07-01"]
    (y,) = parse_csv("year,a\n" + "".join(f"{1990 + k},{k}\n" for k in range(5)))
    assert [str(d)[:4] for d in _x_axis(y, 3, 7)] == ["1993", "1994", "1995", "1996"]
    (plain,) = parse_csv("a\n1\n2\n3\n")  # no timestamps: step numbers
    assert list(_x_axis(plain, 1, 5)) == [1, 2, 3, 4]
