"""The CSV reader: header rows, delimiters, missing and bad values, frequencies, gaps in
regular timestamps; each bad file is one line and exit code 2 through the command line."""

import re

import numpy as np
import pytest

from rnnforge.errors import OptionError, UserError
from rnnforge.forecast.series import FREQS, parse_csv

PREFIX = "rnnforge forecast: error: "


def write(tmp_path, text, name="data.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


# -- frequencies and gaps ---------------------------------------------------------------------
def test_monthly_gap_is_filled_with_missing_values():
    notes = []
    a, b = parse_csv("date,a,b\n2020-01-01,1,10\n2020-02-01,2,\n2020-05-01,3,30\n2020-06-01,4,40\n",
                     log=notes.append)
    assert a.freq == "M" and a.season == 12
    assert [str(t) for t in a.timestamps] == ["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01",
                                              "2020-05-01", "2020-06-01"]
    np.testing.assert_array_equal(a.values, [1, 2, np.nan, np.nan, 3, 4])
    np.testing.assert_array_equal(b.values, [10, np.nan, np.nan, np.nan, 30, 40])  # its own empty cell stays
    # the phase follows the calendar through the gap: June is 5/12
    assert a.phase(5, 6)[0] == pytest.approx(5 / 12)
    assert notes == ["warning: <csv>: 2 monthly steps between the first and last timestamp have no row "
                     "(the first: 2020-03-01); read as missing values"]


def test_rows_newest_first_read_in_time_order():
    """Many exports list the newest row first: the rows are read in time order, each column's
    values moving with its timestamp, gaps still found."""
    ordered = parse_csv("date,a,b\n2020-01-01,1,10\n2020-02-01,2,\n2020-04-01,4,40\n2020-05-01,5,50\n")
    for text in ("date,a,b\n2020-05-01,5,50\n2020-04-01,4,40\n2020-02-01,2,\n2020-01-01,1,10\n",
                 "date,a,b\n2020-04-01,4,40\n2020-01-01,1,10\n2020-05-01,5,50\n2020-02-01,2,\n"):
        for got, want in zip(parse_csv(text), ordered):
            assert (got.name, got.freq) == (want.name, want.freq)
            np.testing.assert_array_equal(got.timestamps, want.timestamps)
            np.testing.assert_array_equal(got.values, want.values)
    np.testing.assert_array_equal(ordered[1].values, [10, np.nan, np.nan, 40, 50])


def test_no_warning_without_gaps():
    notes = []
    parse_csv("date,y\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n", log=notes.append)
    assert notes == []


@pytest.mark.parametrize("stamps, freq, future", [
    (["2019Q3", "2019Q4", "2020Q1", "2020Q2"], "Q", ["2020-07-01", "2020-10-01"]),
    (["2019-Q3", "2019-Q4", "2020-Q1", "2020-Q2"], "Q", ["2020-07-01", "2020-10-01"]),
    (["2019-09-30", "2019-12-31", "2020-03-31", "2020-06-30"], "Q", ["2020-09-30", "2020-12-31"]),
    (["2019-01", "2019-02", "2019-03", "2019-04"], "M", ["2019-05-01", "2019-06-01"]),
    (["2019-01-31", "2019-02-28", "2019-03-31", "2019-04-30"], "M", ["2019-05-31", "2019-06-30"]),
    (["2019-01-07", "2019-01-14", "2019-01-21", "2019-01-28"], "W", ["2019-02-04", "2019-02-11"]),
    (["2024-01-04", "2024-01-05", "2024-01-08", "2024-01-09"], "B", ["2024-01-10", "2024-01-11"]),
    (["2024-01-05", "2024-01-06", "2024-01-07", "2024-01-08"], "D", ["2024-01-09", "2024-01-10"]),
])
def test_frequency_inferred(stamps, freq, future):
    text = "date,y\n" + "".join(f"{d},{i % 3}\n" for i, d in enumerate(stamps))
    (s,) = parse_csv(text)
    assert s.freq == freq and s.season == FREQS[freq][0]
    assert [str(t) for t in s.future_timestamps(2)] == future


def test_quarterly_season_and_phase():
    (s,) = parse_csv("quarter,y\n2019Q3,1\n2019Q4,2\n2020Q1,3\n2020Q2,4\n2020Q4,5\n")
    assert s.freq == "Q" and s.season == 4
    assert s.phase(0, 6).tolist() == pytest.approx([0.5, 0.75, 0.0, 0.25, 0.5, 0.75])  # Q3 Q4 Q1 Q2 Q3 Q4
    np.testing.assert_array_equal(s.values, [1, 2, 3, 4, np.nan, 5])  # 2020Q3 absent


def test_annual_years_in_a_year_column():
    (s,) = parse_csv("year,y\n1990,1\n1991,2\n1993,3\n1994,4\n")
    assert s.freq == "Y" and s.season == 1
    np.testing.assert_array_equal(s.values, [1, 2, np.nan, 3, 4])
    assert [str(t) for t in s.future_timestamps(1)] == ["1995-01-01"]


def test_header_less_file_read_with_no_header():
    with pytest.raises(OptionError, match=r"^header reads such a file: the first row of <csv> \('1.5,2'\)"):
        parse_csv("1.5,2\n3,4\n")
    a, b = parse_csv("1.5,2\n3,4\n,6\n", header=False)
    assert (a.name, b.name) == ("series1", "series2")
    np.testing.assert_array_equal(a.values, [1.5, 3, np.nan])
    np.testing.assert_array_equal(b.values, [2, 4, 6])
    (s,) = parse_csv("2020-01-01,1\n2020-02-01,2\n2020-03-01,3\n", header=False)  # dates still found
    assert s.name == "series2" and s.freq == "M"


@pytest.mark.parametrize("cell, hint", [
    ("1,000", "write it without the thousands separator (1000), or with a decimal point (1.000) if the comma is one"),
    ("-12,345,678", "write it without the thousands separator (-12345678)"),
    ("0,25", "write it with a decimal point (0.25)"),
    ("12,5", "write it with a decimal point (12.5)"),
])
def test_comma_in_a_number_says_both_readings(cell, hint):
    with pytest.raises(UserError, match=f"non-numeric value '{cell}'; " + re.escape(hint) + "$"):
        parse_csv(f'a\n1\n"{cell}"\n3\n')


@pytest.mark.parametrize("text, delimiter", [("a;b\n1,5;2\n3;4\n", None), ("a\tb\n1\t2\n3\t4\n", None),
                                             ("a|b\n1|2\n3|4\n", "|"), ("a\tb\n1\t2\n3\t4\n", "\\t")])
def test_delimiters(text, delimiter):
    if "1,5" in text:  # a semicolon file may hold decimal commas in a cell: not a number
        with pytest.raises(UserError, match=r"line 2, column 'a': non-numeric value '1,5'; write it with a "
                                            r"decimal point \(1\.5\)$"):
            parse_csv(text, delimiter=delimiter)
        text = text.replace("1,5", "1")
    a, b = parse_csv(text, delimiter=delimiter)
    assert (a.name, b.name) == ("a", "b") and b.values.tolist() == [2, 4]


@pytest.mark.parametrize("cell", ["", "NA", "na", "N/A", "NaN", "nan", "null"])
def test_missing_value_spellings(cell):
    (s,) = parse_csv(f"y\n1\n{cell}\n3\n")
    np.testing.assert_array_equal(np.isnan(s.values), [False, True, False])


# -- bad files through the command line: exit 2, one line, the row and column named -----------
BAD = [
    ("", "{p} is empty; a CSV needs a header row and rows of values"),
    ("a,b\n", "{p} has a header row but no rows of values"),
    ("date\n2020-01-01\n2020-02-01\n", "{p}: no value columns (only a timestamp column 'date')"),
    ("a,b,a\n1,2,3\n", "{p}: column name 'a' appears twice in the header (columns 1 and 3); "
                       "give each column its own name"),
    ("1.5,2\n3,4\n", "--no-header reads such a file: the first row of {p} ('1.5,2') holds values, "
                     "not column names (or add a header row)"),
    ("x,y\n1,2\n3,inf\n", "{p}: line 3, column 'y': 'inf' is not a finite number; leave the cell empty "
                          "(or NA) for a missing value"),
    ("x,y\n1,-inf\n3,4\n", "{p}: line 2, column 'y': '-inf' is not a finite number; leave the cell empty "
                           "(or NA) for a missing value"),
    ("x,y\n1,2\n3,4\n5,abc\n", "{p}: line 4, column 'y': non-numeric value 'abc'; write a number, or leave "
                               "the cell empty for a missing value"),
    ("x,y\n1,2\n1e39,4\n", "{p}: line 3, column 'x': 1e39 is beyond float32's range (+-3.4e+38), in which "
                           "the model computes; rescale the column"),
    ("x,y\n1,2\n3\n", "{p}: line 3 has 1 fields but the header has 2 (delimiter comma)"),
    ("date,y\n2020-01-01,1\n2020-01-08,2\n2020-01-16,3\n",
     "{p}: column 'date': the timestamps (2020-01-01, 2020-01-08, 2020-01-16, ...) are not on a regular grid "
     "(steps of 7 days, gaps allowed); give one row per step, or drop the timestamp column"),
    ("date,y\n2020-01-15,1\n2020-02-15,2\n2020-04-14,3\n",
     "{p}: column 'date': the timestamps (2020-01-15, 2020-02-15, 2020-04-14, ...) are not on a regular grid "
     "(steps of 31 days, gaps allowed); give one row per step, or drop the timestamp column"),
    ("date,y\n2020-03-01,1\n2020-01-01,2\n2020-02-01,3\n2020-01-01,4\n",
     "{p}: line 5, column 'date': '2020-01-01' is there twice (the first on line 3); give one row per "
     "timestamp"),
    ("date,y\n2020-01-01,1\n2020-13-01,2\n", "{p}: line 3, column 'date': '2020-13-01' is not a date "
                                             "(YYYY-MM-DD, YYYY-MM-DD HH:MM, YYYY-MM, YYYY-Qn, YYYY)"),
    ("date,y\n2020-01-01,1\n2021-01-01,2\n2021-01-02,3\n",
     "{p}: column 'date': the timestamps are too sparse for a daily series: 365 of the 368 steps from "
     "2020-01-01 to 2021-01-02 have no row"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_csv_is_one_line(text, message, tmp_path, refused):
    p = write(tmp_path, text)
    line = refused(["forecast", "train", "--data", p, "--steps", "1", "--out", tmp_path / "run"])
    assert line == PREFIX + message.format(p=p)
    assert not (tmp_path / "run").exists()


def test_no_header_flag_reads_the_file(tmp_path, capsys):
    from rnnforge.cli import main
    from rnnforge.forecast import load_checkpoint

    p = write(tmp_path, "".join(f"{np.sin(i / 2):.4f};{np.cos(i / 3):.4f}\n" for i in range(40)))
    out = tmp_path / "run"
    assert main(["forecast", "train", "--data", str(p), "--no-header", "--context", "8", "--horizon", "2",
                 "--hidden", "4", "--layers", "1", "--steps", "2", "--batch-size", "2", "--val-windows", "0",
                 "--out", str(out)]) == 0
    _, meta = load_checkpoint(out / "forecaster.safetensors")
    assert meta["header"] is False and meta["train_end"] == {"series1": 40, "series2": 40}
    # predict reads the data as training did: no header, semicolons sniffed
    assert main(["forecast", "predict", "--out", str(out), "--samples", "4"]) == 0
    assert "2 series (series1, series2) of 40 steps" in capsys.readouterr().out


def test_gap_warning_reaches_the_command_line(tmp_path, capsys):
    from rnnforge.cli import main

    months = np.arange("2000-01", "2006-01", dtype="datetime64[M]")
    rows = [f"{m}-01,{np.sin(i / 2):.3f}" for i, m in enumerate(months) if i not in (10, 11, 30)]
    p = write(tmp_path, "date,y\n" + "\n".join(rows) + "\n")
    assert main(["forecast", "train", "--data", str(p), "--context", "12", "--horizon", "3", "--hidden", "4",
                 "--layers", "1", "--steps", "1", "--batch-size", "2", "--val-windows", "0",
                 "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"warning: {p}: 3 monthly steps between the first and last timestamp have no row (the first: " \
           f"2000-11-01); read as missing values" in out
    assert "of 72 steps, frequency M, season 12" in out
