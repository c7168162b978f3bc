"""Time series for forecasting: the shipped public-domain series and CSV files.

Two series ship inside the package as small CSV files (source and licence in
``SERIES.md`` beside this file), so ``rnnforge forecast`` runs offline:

    sunspots   monthly mean sunspot numbers, 1749-01 .. 2009-06 (3126 values)
    co2        weekly Mauna Loa CO2 (ppm), 1958-03-29 .. 2001-12-29 (2284 values,
               59 missing)

A user CSV holds one series per column, with a header row. A column named
``date``, ``time``, ``timestamp``, ``ds``, ``datetime``, ``month``, ``week`` or
``period`` (or the first column, when every cell of it parses as an ISO date)
is the timestamp column; every other column is a series. Empty cells and
``NA``/``NaN``/``null``/``?`` are missing values; any other non-numeric cell is
an error that names the file, line and column.

Each series carries a seasonal phase in [0, 1) per step (``phase0`` plus
``phase_step`` per step): from the calendar when timestamps are regular monthly,
weekly or daily, else from ``--season``. The season length in steps is
``round(1 / phase_step)`` (1: no season).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import UserError

#: shipped series: name -> (file, human description)
SHIPPED = {
    "sunspots": ("sunspots.csv", "monthly mean sunspot numbers 1749-2009 (SIDC/NOAA, public domain)"),
    "co2": ("co2.csv", "weekly Mauna Loa CO2 in ppm 1958-2001 (Scripps/CDIAC, public domain)"),
}
MISSING = {"", "na", "nan", "n/a", "null", "none", "?", "-"}
TIME_COLUMNS = {"date", "time", "timestamp", "ds", "datetime", "month", "week", "period"}


@dataclass
class Series:
    """One series: ``values`` float64 (T,) with NaN for missing values."""

    name: str
    values: np.ndarray
    timestamps: np.ndarray | None = None  # datetime64[D] (T,) or None
    freq: str | None = None  # 'M', 'W', 'D' or None
    phase0: float = 0.0  # seasonal phase of values[0], in [0, 1)
    phase_step: float = 1.0  # phase advance per step; 1.0 means no season

    def __len__(self) -> int:
        return len(self.values)

    @property
    def season(self) -> int:
        """Season length in steps (1 when the series has no season)."""
        return max(1, int(round(1.0 / self.phase_step)))

    def phase(self, start: int, stop: int) -> np.ndarray:
        """Seasonal phase of steps ``start .. stop-1`` (may run past the end), in [0, 1)."""
        t = np.arange(start, stop, dtype=np.float64)
        return np.mod(self.phase0 + t * self.phase_step, 1.0)

    def future_timestamps(self, n: int) -> np.ndarray | None:
        """Timestamps of the ``n`` steps after the last value, when the frequency is known."""
        if self.timestamps is None or self.freq is None:
            return None
        last = self.timestamps[-1]
        if self.freq == "M":
            months = last.astype("datetime64[M]") + np.arange(1, n + 1)
            return months.astype("datetime64[D]")
        days = {"W": 7, "D": 1}[self.freq]
        return last + np.arange(1, n + 1) * np.timedelta64(days, "D")

    def head(self, stop: int) -> "Series":
        """The first ``stop`` steps (the training part before an evaluation cut)."""
        ts = None if self.timestamps is None else self.timestamps[:stop]
        return Series(self.name, self.values[:stop].copy(), ts, self.freq, self.phase0, self.phase_step)


# -- loading ----------------------------------------------------------------------
def load(spec: str, *, season: int | None = None) -> list[Series]:
    """A shipped series by name (``sunspots``, ``co2``) or the series of a CSV file.

    ``season`` (steps per season) overrides the season inferred from timestamps.
    """
    if season is not None and (not isinstance(season, int) or season < 1):
        raise UserError(f"--season must be a whole number of steps >= 1, got {season!r}")
    if spec in SHIPPED:
        text = resources.files(__package__ + ".datasets").joinpath(SHIPPED[spec][0]).read_text("utf-8")
        series = parse_csv(text, source=spec)
    else:
        path = Path(spec)
        if not path.exists():
            raise UserError(f"--data {spec!r} is neither a shipped series ({', '.join(SHIPPED)}) "
                            f"nor an existing CSV file")
        if path.is_dir():
            raise UserError(f"--data {spec} is a folder; pass a CSV file")
        try:
            text = path.read_text("utf-8-sig")
        except UnicodeDecodeError as e:
            raise UserError(f"{path} is not UTF-8 text (byte offset {e.start}); save the CSV as UTF-8") from None
        series = parse_csv(text, source=str(path))
    if season is not None:
        for s in series:
            s.phase_step = 1.0 / season
            s.phase0 = 0.0 if s.freq is None else s.phase0
    return series


def parse_csv(text: str, *, source: str = "<csv>") -> list[Series]:
    """Parse CSV text (header row; optional timestamp column) into series."""
    rows = list(csv.reader(io.StringIO(text)))
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()  # trailing blank lines
    if len(rows) < 2:
        raise UserError(f"{source}: a CSV needs a header row and at least one row of values")
    header = [h.strip() for h in rows[0]]
    width = len(header)
    # an empty line inside the file is a row of missing values (a one-column file writes them so)
    body = [r if r else [""] * width for r in rows[1:]]
    for i, r in enumerate(body, start=2):
        if len(r) != width:
            raise UserError(f"{source}: line {i} has {len(r)} fields but the header has {width}")
    columns = [[r[j].strip() for r in body] for j in range(width)]

    time_col = None
    for j, h in enumerate(header):
        if h.lower() in TIME_COLUMNS:
            time_col = j
            break
    if time_col is None and width > 1 and _all_dates(columns[0]):
        time_col = 0
    timestamps = None
    if time_col is not None:
        timestamps = _parse_dates(columns[time_col], source, header[time_col])

    series = []
    for j, h in enumerate(header):
        if j == time_col:
            continue
        name = h or f"series{j}"
        values = np.empty(len(body), dtype=np.float64)
        for i, cell in enumerate(columns[j]):
            if cell.lower() in MISSING:
                values[i] = np.nan
                continue
            try:
                v = float(cell)
            except ValueError:
                raise UserError(f"{source}: line {i + 2}, column {name!r}: non-numeric value {cell!r}; "
                                f"write a number, or leave the cell empty for a missing value") from None
            values[i] = v if math.isfinite(v) else np.nan
        series.append(_with_calendar(Series(name, values), timestamps))
    if not series:
        raise UserError(f"{source}: no value columns (only a timestamp column {header[time_col]!r})")
    return series


def _all_dates(cells: list[str]) -> bool:
    try:
        for c in cells:
            if len(c) < 7 or not c[:4].isdigit():
                return False
            np.datetime64(c, "D")
    except ValueError:
        return False
    return True


def _parse_dates(cells: list[str], source: str, column: str) -> np.ndarray:
    out = np.empty(len(cells), dtype="datetime64[D]")
    for i, c in enumerate(cells):
        try:
            out[i] = np.datetime64(c, "D")
        except ValueError:
            raise UserError(f"{source}: line {i + 2}, column {column!r}: {c!r} is not an ISO date "
                            f"(YYYY-MM-DD or YYYY-MM)") from None
    if len(out) > 1 and np.any(np.diff(out) <= np.timedelta64(0, "D")):
        raise UserError(f"{source}: column {column!r}: timestamps must increase strictly, row by row")
    return out


def _with_calendar(s: Series, timestamps: np.ndarray | None) -> Series:
    """Attach timestamps and, for regular monthly/weekly/daily steps, the calendar phase."""
    s.timestamps = timestamps
    if timestamps is None or len(timestamps) < 3:
        return s
    step = float(np.median(np.diff(timestamps).astype(np.int64)))
    first = timestamps[0]
    if 28 <= step <= 31:
        s.freq = "M"
        s.phase_step = 1.0 / 12
        s.phase0 = (int(first.astype("datetime64[M]").astype(np.int64)) % 12) / 12
    elif step == 7:
        s.freq = "W"
        s.phase_step = 7 / 365.25
        s.phase0 = _day_of_year(first) / 365.25
    elif step == 1:
        s.freq = "D"
        s.phase_step = 1.0 / 7
        s.phase0 = ((int(first.astype(np.int64)) + 3) % 7) / 7  # Monday = 0 (1970-01-01 was a Thursday)
    return s


def _day_of_year(d: np.datetime64) -> float:
    return float((d - d.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64))


# -- checks shared by train, predict and evaluate --------------------------------------
def check_horizon(horizon) -> int:
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon <= 0:
        raise UserError(f"--horizon must be a whole number of steps > 0, got {horizon!r}")
    return horizon


def check_series(s: Series, *, context: int, horizon: int, extra: int = 0) -> None:
    """Raise a one-line UserError when ``s`` cannot be forecast with this context/horizon.

    ``extra`` is what the caller needs beyond ``context + horizon`` (held-out
    evaluation windows, say).
    """
    check_horizon(horizon)
    if not isinstance(context, int) or context < 1:
        raise UserError(f"--context must be a whole number of steps >= 1, got {context!r}")
    n = len(s.values)
    need = context + horizon + extra
    if n < need:
        what = f"--context {context} + --horizon {horizon}" + (f" + {extra} held-out steps" if extra else "")
        raise UserError(f"series {s.name!r} has {n} values, too short for {what} ({need} needed); "
                        f"lower --context/--horizon or use a longer series")
    observed = s.values[np.isfinite(s.values)]
    if observed.size == 0:
        raise UserError(f"series {s.name!r} has no observed values (every value is missing)")
    if observed.size < 2 or float(np.ptp(observed)) == 0.0:
        raise UserError(f"series {s.name!r} is constant (every observed value is {observed[0]:g}); "
                        f"a forecast distribution needs a series that varies")


def check_context_window(s: Series, origin: int, context: int) -> None:
    """The ``context`` values before ``origin`` must hold at least one observation."""
    window = s.values[max(0, origin - context):origin]
    if not np.isfinite(window).any():
        raise UserError(f"series {s.name!r}: the {context} values before step {origin} (the context "
                        f"window of a forecast) are all missing (NaN); fill them or move the origin")


# -- rebuilding the shipped CSVs (needs statsmodels; run by hand, not at import) ---------
def _rebuild_shipped(folder: str | Path | None = None) -> None:  # pragma: no cover
    """Write sunspots.csv and co2.csv from the copies that statsmodels ships.

    ``statsmodels.datasets.sunspots`` loads the yearly series; its source folder
    also holds the monthly NOAA table (``src/sunspots_monthly.dat``) used here.
    """
    import statsmodels.datasets.co2 as co2
    import statsmodels.datasets.sunspots as sun

    folder = Path(folder or Path(__file__).parent / "datasets")
    lines = (Path(sun.__file__).parent / "src" / "sunspots_monthly.dat").read_text().splitlines()
    out = ["date,sunspots"]
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and len(parts[0]) == 4:
            for m, v in enumerate(parts[1:], start=1):
                out.append(f"{parts[0]}-{m:02d}-01,{float(v):.1f}")
    (folder / "sunspots.csv").write_text("\n".join(out) + "\n")
    df = co2.load_pandas().data
    out = ["date,co2"]
    for ts, v in zip(df.index, df["co2"]):
        out.append(f"{ts.date().isoformat()},{'' if np.isnan(v) else f'{v:.1f}'}")
    (folder / "co2.csv").write_text("\n".join(out) + "\n")
