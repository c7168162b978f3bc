"""Time series for forecasting: the shipped public-domain series and CSV files.

Two series ship inside the package as small CSV files (source and licence in
``datasets/README.md``), so ``rnnforge forecast`` runs offline:

    sunspots   monthly mean sunspot numbers, 1749-01 .. 2009-06 (3126 values)
    co2        weekly Mauna Loa CO2 (ppm), 1958-03-29 .. 2001-12-29 (2284 values,
               59 missing)

A user CSV holds one series per column (wide), or one row per series and step
with the columns ``item_id, timestamp, target`` (long, :func:`parse_long`). It has a header row of unique column
names; a file without one is refused unless it is read with ``header=False``,
which names the columns ``series1 .. seriesN``. The delimiter is sniffed from
the first line (comma, semicolon or tab, comma when none appears) unless given.
A column named ``date``, ``time``, ``timestamp``, ``ds``, ``datetime``,
``month``, ``week``, ``quarter``, ``year`` or ``period`` (or the first column,
when every cell of it is a date) holds the timestamps: ISO dates (``YYYY-MM-DD``,
``YYYY-MM``), dates with a time of day (``YYYY-MM-DD HH:MM[:SS]``, or ``T``
between), quarters (``YYYY-Qn``, ``YYYYQn``) or, in a column so named, years
(``YYYY``, ``YYYY.0``). Every other column is a series. Empty cells and ``NA``,
``N/A``, ``NaN``, ``null`` (any case) are missing values; anything else that is
not a finite number, or whose size is beyond float32 (the model computes in it),
is an error naming the line and column.

Timestamps give the frequency (``Series.freq``): hourly ``H``, daily ``D``, business-day ``B``
(weekdays only), weekly ``W``, monthly ``M``, quarterly ``Q``, annual ``Y``, any
other step of whole minutes that divides a day (``15min``, ``3h``: pandas'
aliases), or any other fixed number of days (``None``: no calendar season). Dates absent
from that grid (a month without a row) are filled in as missing values, with a
warning line saying how many; timestamps on no regular grid are refused.

Each series carries a seasonal phase in [0, 1) per step (``phase0`` plus
``phase_step`` per step): from the calendar for H and the other sub-daily grids (the
time of day; the minute of the hour on grids of under 5 minutes, whose day would
be a season of more than DAY_SEASON_MAX steps), D (the weekday), B, W (the day of
the year), M (the month) and Q (the quarter), else from ``season``. The
season length in steps is ``round(1 / phase_step)`` (1: no season).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import OptionError, UserError, check_int

#: shipped series: name -> (file, human description)
SHIPPED = {
    "sunspots": ("sunspots.csv", "monthly mean sunspot numbers 1749-2009 (SIDC/NOAA, public domain)"),
    "co2": ("co2.csv", "weekly Mauna Loa CO2 in ppm 1958-2001 (Scripps/CDIAC, public domain)"),
}
MISSING = {"", "na", "n/a", "nan", "null"}
TIME_COLUMNS = {"date", "time", "timestamp", "ds", "datetime", "month", "week", "quarter", "year", "period"}
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
#: the largest magnitude a value may have: float32's, in which the model computes
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: frequency -> (season in steps, words for messages)
FREQS = {"H": (24, "hourly"), "D": (7, "daily"), "B": (5, "business-day"), "W": (52, "weekly"), "M": (12, "monthly"),
         "Q": (4, "quarterly"), "Y": (1, "annual")}
#: months per step of the month-based frequencies
MONTHS = {"M": 1, "Q": 3, "Y": 12}
#: the most steps a day may hold as the season of a sub-daily grid (5-minute data: 288); finer
#: grids take the hour as their season, as their lags would otherwise reach days back
DAY_SEASON_MAX = 288
_MINUTES = re.compile(r"^(\d+)(min|h)$")
#: a number written with a decimal comma (as in a semicolon-separated file from a European locale)
_DECIMAL_COMMA = re.compile(r"^[-+]?\d*,\d+$")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+$")
_QUARTER = re.compile(r"^(\d{4})-?Q([1-4])$", re.IGNORECASE)
_YEAR = re.compile(r"^(\d{4})(\.0*)?$")
_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2})(:\d{2}(\.\d*)?)?$")


def minute_freq(step: int) -> str:
    """The frequency of a grid of ``step`` minutes (a divisor of a day): ``H`` for an hour, else
    pandas' alias (``15min``, ``3h``)."""
    return "H" if step == 60 else f"{step // 60}h" if step % 60 == 0 else f"{step}min"


def freq_minutes(freq: str | None) -> int | None:
    """Minutes per step of a sub-daily frequency (``H``, ``15min``, ``3h``), else None."""
    if freq == "H":
        return 60
    m = _MINUTES.match(freq or "")
    return None if m is None else int(m.group(1)) * (60 if m.group(2) == "h" else 1)


def freq_words(freq: str | None) -> str:
    """The frequency in words for messages: ``monthly``, ``15-minute``, ``3-hourly``."""
    if freq in FREQS:
        return FREQS[freq][1]
    m = freq_minutes(freq)
    if m is None:
        return str(freq)
    return f"{m}-minute" if m < 60 else f"{m // 60}-hourly"


@dataclass
class Series:
    """One series: ``values`` float64 (T,) with NaN for missing values."""

    name: str
    values: np.ndarray
    timestamps: np.ndarray | None = None  # datetime64[D] (T,) or None
    freq: str | None = None  # a key of FREQS, a sub-daily grid (minute_freq), or None (no calendar frequency)
    phase0: float = 0.0  # seasonal phase of values[0], in [0, 1)
    phase_step: float = 1.0  # phase advance per step; 1.0 means no season
    step_days: int | None = None  # the step of a day-based grid without a calendar frequency

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
        """Timestamps of the ``n`` steps after the last value, when the grid is known."""
        if self.timestamps is None or (self.freq is None and self.step_days is None):
            return None
        return _grid_after(self.timestamps[-1], self.freq, self.step_days, n)

    def head(self, stop: int) -> "Series":
        """The first ``stop`` steps (the training part before an evaluation cut)."""
        ts = None if self.timestamps is None else self.timestamps[:stop]
        return Series(self.name, self.values[:stop].copy(), ts, self.freq, self.phase0, self.phase_step,
                      self.step_days)


def _grid_after(last: np.datetime64, freq: str | None, step_days: int | None, n: int) -> np.ndarray:
    k = np.arange(1, n + 1)
    if freq in MONTHS:  # on the same day of the month as ``last``, or on month ends
        m0 = last.astype("datetime64[M]")
        months = m0 + k * MONTHS[freq]
        day = np.timedelta64(1, "D")
        if last == (m0 + 1).astype("datetime64[D]") - day:
            return (months + 1).astype("datetime64[D]") - day
        return months.astype("datetime64[D]") + (last - m0.astype("datetime64[D]"))
    if freq == "B":
        return np.busday_offset(last, k, roll="forward")
    minutes = freq_minutes(freq)
    if minutes:
        return last + k * np.timedelta64(minutes, "m")
    days = {"D": 1, "W": 7}.get(freq, step_days)
    return last + k * np.timedelta64(days, "D")


# -- loading ----------------------------------------------------------------------
def load(spec: str, *, season: int | None = None, header: bool = True, delimiter: str | None = None,
         log=print) -> list[Series]:
    """A shipped series by name (``sunspots``, ``co2``) or the series of a CSV file.

    ``season`` (steps per season) overrides the season inferred from timestamps;
    ``header=False`` reads a file without a header row; ``delimiter`` (one
    character) overrides the sniffed one; ``log`` receives warnings (filled gaps).
    """
    if season is not None:
        check_int("season", season, low=1)
    if spec in SHIPPED:
        text = resources.files(__package__ + ".datasets").joinpath(SHIPPED[spec][0]).read_text("utf-8")
        series = parse_csv(text, source=spec, log=log)
    else:
        path = Path(spec)
        if not path.exists():
            raise OptionError("data", f"{spec!r} is neither a shipped series ({', '.join(SHIPPED)}) "
                                      f"nor an existing CSV file")
        if path.is_dir():
            raise OptionError("data", f"{spec} is a folder; pass a CSV file")
        try:
            text = path.read_text("utf-8-sig")
        except UnicodeDecodeError as e:
            raise UserError(f"{path} is not UTF-8 text (byte offset {e.start}); save the CSV as UTF-8") from None
        series = parse_csv(text, source=str(path), header=header, delimiter=delimiter, log=log)
    if season is not None:
        for s in series:
            s.phase_step = 1.0 / season
            s.phase0 = 0.0 if s.freq is None else s.phase0
    return series


def check_delimiter(delimiter: str | None) -> str | None:
    """One character (``\\t`` and ``tab`` mean a tab), or None to sniff it."""
    if delimiter is None:
        return None
    d = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    if len(d) != 1 or d in "\"\r\n" or d.isalnum() or d in ".-+":
        raise OptionError("delimiter", f"must be one character that cannot be part of a number or a "
                                       f"quoted cell (, ; tab |), got {delimiter!r}")
    return d


def _sniff(first_line: str) -> str:
    """The most frequent of comma, semicolon and tab in the header line; comma when none appears."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def parse_csv(text: str, *, source: str = "<csv>", header: bool = True, delimiter: str | None = None,
              log=None) -> list[Series]:
    """Parse CSV text (header row unless ``header=False``; optional timestamp column) into series."""
    delimiter = check_delimiter(delimiter)
    if not text.strip():
        raise UserError(f"{source} is empty; a CSV needs a header row and rows of values")
    lines = text.splitlines()
    delimiter = delimiter or _sniff(lines[0])
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()  # trailing blank lines
    first = [c.strip() for c in rows[0]]
    if header:
        if all(_looks_like_value(c) for c in first) and any(first):
            shown = delimiter.join(first)
            raise OptionError("header", f"reads such a file: the first row of {source} ({shown[:60]!r}) holds "
                                        f"values, not column names (or add a header row)")
        names, body, line0 = first, rows[1:], 2
        if not body:
            raise UserError(f"{source} has a header row but no rows of values")
    else:
        names, body, line0 = [f"series{j + 1}" for j in range(len(first))], rows, 1
    if header and _long_columns(names) is not None:
        return parse_long(names, body, source=source, log=log)
    width = len(names)
    seen: dict[str, int] = {}
    for j, h in enumerate(names):
        if h and h in seen:
            raise UserError(f"{source}: column name {h!r} appears twice in the header (columns "
                            f"{seen[h] + 1} and {j + 1}); give each column its own name")
        seen[h] = j
    # an empty line inside the file is a row of missing values (a one-column file writes them so)
    body = [r if r else [""] * width for r in body]
    for i, r in enumerate(body, start=line0):
        if len(r) != width:
            raise UserError(f"{source}: line {i} has {len(r)} fields but the {'header' if header else 'first line'} "
                            f"has {width} (delimiter {DELIMITERS.get(delimiter, repr(delimiter))})")
    columns = [[r[j].strip() for r in body] for j in range(width)]

    time_col = None
    for j, h in enumerate(names):
        if h.lower() in TIME_COLUMNS:
            time_col = j
            break
    if time_col is None and _all_dates(columns[0]):
        time_col = 0
    if time_col is not None and width == 1:
        raise UserError(f"{source}: no value columns (only a timestamp column {names[0]!r})")

    values = []
    for j, h in enumerate(names):
        if j != time_col:
            values.append((h or f"series{j + 1}", _parse_values(columns[j], source, h or f"series{j + 1}", line0)))
    grid = None
    if time_col is not None:
        stamps = _parse_dates(columns[time_col], source, names[time_col], line0,
                              years=names[time_col].lower() in TIME_COLUMNS)
        if (np.diff(stamps) <= np.timedelta64(0, "D")).any():
            # rows in another order (newest first, as many exports write them): read in time order
            order = np.argsort(stamps, kind="stable")
            same = np.flatnonzero(np.diff(stamps[order]) == np.timedelta64(0, "D"))
            if same.size:
                a, b = sorted(int(order[k]) for k in (same[0], same[0] + 1))
                raise UserError(f"{source}: line {b + line0}, column {names[time_col]!r}: "
                                f"{columns[time_col][b]!r} is there twice (the first on line {a + line0}); "
                                f"give one row per timestamp")
            stamps = stamps[order]
            values = [(name, v[order]) for name, v in values]
        grid = _regular_grid(stamps, source, names[time_col], line0)
        if grid is not None and grid.filled:
            what = freq_words(grid.freq) if grid.freq else f"{grid.step_days}-day"
            log and log(f"warning: {source}: {grid.filled} {what} step{'s' if grid.filled > 1 else ''} "
                        f"between the first and last timestamp {'have' if grid.filled > 1 else 'has'} no row "
                        f"(the first: {grid.first_gap}); read as missing values")
    series = []
    for name, v in values:
        if grid is None:
            series.append(Series(name, v))
            continue
        full = np.full(len(grid.stamps), np.nan)
        full[grid.positions] = v
        s = Series(name, full, grid.stamps, grid.freq, step_days=grid.step_days)
        series.append(_with_calendar(s))
    return series


#: the column names of a long-format CSV (one row per series and step), as GluonTS, pandas and
#: Nixtla users hold their data: the series' id, the timestamp, the value
LONG_ID = ("item_id", "unique_id", "series_id")
LONG_TIME = ("timestamp", "ds", "date", "time", "datetime")
LONG_TARGET = ("target", "y", "value")


def _long_columns(names: list[str]) -> tuple[int, int, int] | None:
    """(id, timestamp, target) column indices when the header is a long-format one, else None."""
    low = [n.strip().lower() for n in names]
    if len(low) != 3:
        return None
    pick = []
    for choices in (LONG_ID, LONG_TIME, LONG_TARGET):
        hits = [j for j, n in enumerate(low) if n in choices]
        if len(hits) != 1:
            return None
        pick.append(hits[0])
    return tuple(pick) if len(set(pick)) == 3 else None


def parse_long(names: list[str], body: list[list[str]], *, source: str, log=None) -> list[Series]:
    """Series of a long-format CSV: columns ``item_id, timestamp, target`` (any order; also
    ``unique_id``/``series_id``, ``ds``/``date``, ``y``/``value``). The rows may come in any
    order (an item's series is its rows in time order; the items in order of first appearance);
    an item with two rows at one timestamp is refused; steps absent from an item's grid are
    missing values (a warning counts them); every item has the same frequency. Each bad cell is
    an error naming its line."""
    i_id, i_time, i_val = _long_columns(names)
    codes, index = np.empty(len(body), dtype=np.int64), {}
    for k, r in enumerate(body):
        if len(r) != 3:
            raise UserError(f"{source}: line {k + 2} has {len(r)} fields but the header has 3")
        item = r[i_id].strip()
        if not item:
            raise UserError(f"{source}: line {k + 2}: the {names[i_id]!r} cell is empty; every row needs its series")
        codes[k] = index.setdefault(item, len(index))
    # every cell parsed in file order, so that an error names its line
    stamps = _parse_dates([r[i_time].strip() for r in body], source, names[i_time], 2, years=True)
    values = _parse_values([r[i_val].strip() for r in body], source, names[i_val], 2)
    order = np.lexsort((stamps, codes))  # by item, then time; stable
    codes, stamps, values = codes[order], stamps[order], values[order]
    same = np.flatnonzero((codes[1:] == codes[:-1]) & (stamps[1:] == stamps[:-1]))
    if same.size:
        a, b = sorted(int(order[j]) for j in (same[0], same[0] + 1))
        raise UserError(f"{source}: line {b + 2}: {names[i_id]} {body[b][i_id].strip()!r} has a second row at "
                        f"{body[b][i_time].strip()!r} (the first on line {a + 2}); keep one row per item and "
                        f"timestamp")
    bounds = np.flatnonzero(np.diff(codes)) + 1
    series, freqs, filled = [], {}, 0
    for item, at, t, v in zip(index, np.split(order, bounds), np.split(stamps, bounds), np.split(values, bounds)):
        if (t == t.astype("datetime64[D]")).all():  # every row at midnight: a day-based grid
            t = t.astype("datetime64[D]")
        grid = _regular_grid(t, source, names[i_time], int(at.min()) + 2)
        if grid is None:  # fewer than 3 rows: no grid to put them on
            raise UserError(f"{source}: {names[i_id]} {item!r} has {len(t)} row{'s' if len(t) != 1 else ''}; "
                            f"a series needs at least 3")
        freqs.setdefault(grid.freq or f"{grid.step_days}-day", item)
        if len(freqs) > 1:
            (f1, first), (f2, _) = list(freqs.items())[:2]
            raise UserError(f"{source}: {names[i_id]} {item!r} is {freq_words(f2)} but {first!r} is "
                            f"{freq_words(f1)}; "
                            f"a file holds series of one frequency")
        full = np.full(len(grid.stamps), np.nan)
        full[grid.positions] = v
        filled += grid.filled
        series.append(_with_calendar(Series(item, full, grid.stamps, grid.freq, step_days=grid.step_days)))
    if filled and log:
        log(f"warning: {source}: {filled} step{'s' if filled > 1 else ''} of the items' grids have no row; "
            f"read as missing values")
    return series


def _looks_like_value(cell: str) -> bool:
    if cell.lower() in MISSING:
        return True
    try:
        float(cell)
        return True
    except ValueError:
        return _parse_date(cell) is not None


def _parse_values(cells: list[str], source: str, name: str, line0: int) -> np.ndarray:
    values = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        if cell.lower() in MISSING:
            values[i] = np.nan
            continue
        try:
            v = float(cell)
        except ValueError:
            comma = _DECIMAL_COMMA.match(cell)
            decimal = f"with a decimal point ({cell.replace(',', '.')})"
            if _THOUSANDS.match(cell):
                hint = (f"write it without the thousands separator ({cell.replace(',', '')})"
                        + (f", or {decimal} if the comma is one" if comma else ""))
            elif comma:
                hint = f"write it {decimal}"
            else:
                hint = "write a number, or leave the cell empty for a missing value"
            raise UserError(f"{source}: line {i + line0}, column {name!r}: non-numeric value {cell!r}; "
                            + hint) from None
        if not math.isfinite(v):
            raise UserError(f"{source}: line {i + line0}, column {name!r}: {cell!r} is not a finite number; "
                            f"leave the cell empty (or NA) for a missing value")
        if abs(v) > FLOAT32_MAX:
            raise UserError(f"{source}: line {i + line0}, column {name!r}: {cell} is beyond float32's range "
                            f"(+-{FLOAT32_MAX:.3g}), in which the model computes; rescale the column")
        values[i] = v
    return values


def _parse_date(cell: str, years: bool = False) -> np.datetime64 | None:
    """An ISO date, a date and time of day (``2020-01-31 13:00``, ``T`` or a space between;
    minutes resolution; or the hour alone, ``2020-01-31T13``; a trailing ``Z`` is dropped), a
    month, a quarter (``2020-Q3``, ``2020Q3``) or, with ``years``, a year (``1990``, or
    ``1990.0`` as a float column writes it)."""
    m = _QUARTER.match(cell)
    if m:
        return np.datetime64(f"{m.group(1)}-{3 * int(m.group(2)) - 2:02d}-01", "D")
    if cell[-1:] in ("Z", "z"):  # UTC, as many exporters mark it: the clock time is read as it stands
        cell = cell[:-1]
    m = _TIME.match(cell)
    if m:
        try:
            return np.datetime64(f"{m.group(1)}T{m.group(2)}:{m.group(3)}", "m")
        except ValueError:
            return None
    y = _YEAR.match(cell)
    if years and y:
        return np.datetime64(y.group(1), "D")
    if len(cell) < 7:
        return None
    if not cell[:4].isdigit():
        return None
    try:
        d = np.datetime64(cell)
    except ValueError:
        return None
    unit = np.datetime_data(d.dtype)[0]
    if unit == "h":  # an hour without minutes (numpy writes datetime64[h] so): keep the hour
        return d.astype("datetime64[m]")
    return d.astype("datetime64[D]") if unit in ("D", "M") else None


def _all_dates(cells: list[str]) -> bool:
    return bool(cells) and all(_parse_date(c) is not None for c in cells)


def _parse_dates(cells: list[str], source: str, column: str, line0: int, years: bool) -> np.ndarray:
    """Timestamps in days, or in minutes when a row has a time of day other than midnight."""
    out = np.empty(len(cells), dtype="datetime64[m]")
    for i, c in enumerate(cells):
        d = _parse_date(c, years)
        if d is None:
            raise UserError(f"{source}: line {i + line0}, column {column!r}: {c!r} is not a date "
                            f"(YYYY-MM-DD, YYYY-MM-DD HH:MM, YYYY-MM, YYYY-Qn" + (", YYYY" if years else "") + ")")
        out[i] = d
    if (out == out.astype("datetime64[D]")).all():
        out = out.astype("datetime64[D]")
    return out


@dataclass
class _Grid:
    stamps: np.ndarray  # datetime64[D] of every step of the grid, gaps included
    positions: np.ndarray  # the grid index of each row of the file
    freq: str | None
    step_days: int | None
    filled: int  # grid steps with no row in the file
    first_gap: str | None


def _regular_grid(stamps: np.ndarray, source: str, column: str, line0: int) -> _Grid | None:
    """The regular grid the timestamps lie on, and where each row falls on it.

    Month-based (M, Q, Y) when every row is on the same day of its month (or every
    row on a month's last day) and the steps are whole multiples of 1, 3 or 12
    months; else day-based with the smallest step (B when every row is a weekday
    and the smallest step is a day). Timestamps on no such grid are refused, and
    so is a grid that would be mostly filled-in gaps.
    """
    if len(stamps) < 3:
        return None
    if stamps.dtype == np.dtype("datetime64[m]"):
        if (np.diff(stamps).astype(np.int64) % 1440).any():
            return _minute_grid(stamps, source, column)
        stamps = stamps.astype("datetime64[D]")  # whole days apart, at one time of day: a day-based grid
    days = np.diff(stamps).astype(np.int64)
    months = stamps.astype("datetime64[M]")
    day_of_month = (stamps - months.astype("datetime64[D]")).astype(np.int64)
    month_end = (months + 1).astype("datetime64[D]") - np.timedelta64(1, "D") == stamps
    same_day = (day_of_month == day_of_month[0]).all() and day_of_month[0] < 28 or month_end.all()
    freq, step_days = None, None
    if days.min() >= 28 and same_day:
        m = np.diff(months).astype(np.int64)
        for f in ("M", "Q", "Y"):
            if m.min() == MONTHS[f]:
                freq = f
        if freq is None or (m % MONTHS[freq]).any():
            raise _irregular(source, column, stamps, "monthly, quarterly or annual")
        positions = (months - months[0]).astype(np.int64) // MONTHS[freq]
        n = int(positions[-1]) + 1
        grid = (months[0] + np.arange(n) * MONTHS[freq]).astype("datetime64[D]")
        if month_end.all() and not (day_of_month == day_of_month[0]).all():
            grid = (months[0] + np.arange(n) * MONTHS[freq] + 1).astype("datetime64[D]") - np.timedelta64(1, "D")
        else:
            grid = grid + np.timedelta64(int(day_of_month[0]), "D")
    else:
        step = int(days.min())
        weekdays = np.is_busday(stamps).all()
        if step == 1 and weekdays and (days == 3).any():
            freq = "B"
            positions = np.busday_count(stamps[0], stamps).astype(np.int64)
            n = int(positions[-1]) + 1
            grid = np.busday_offset(stamps[0], np.arange(n))
        else:
            if (days % step).any():
                raise _irregular(source, column, stamps, f"steps of {step} day{'s' if step > 1 else ''}")
            freq = {1: "D", 7: "W"}.get(step)
            step_days = None if freq else step
            positions = (stamps - stamps[0]).astype(np.int64) // step
            n = int(positions[-1]) + 1
            grid = stamps[0] + np.arange(n) * np.timedelta64(step, "D")
    return _on_grid(grid, positions, freq, step_days, stamps, source, column)


def _on_grid(grid: np.ndarray, positions: np.ndarray, freq: str | None, step_days: int | None,
             stamps: np.ndarray, source: str, column: str) -> _Grid:
    """The grid with the rows at ``positions``: its gaps counted (the first named), refused when
    most of it would be gaps."""
    n, filled = len(grid), len(grid) - len(stamps)
    if filled > len(stamps):
        raise UserError(f"{source}: column {column!r}: the timestamps are too sparse for a "
                        f"{freq_words(freq) if freq else f'{step_days}-day'} series: {filled} of the "
                        f"{n} steps from {stamps[0]} to {stamps[-1]} have no row")
    first_gap = None
    if filled:
        have = np.zeros(n, dtype=bool)
        have[positions] = True
        first_gap = str(grid[int(np.argmin(have))])
    return _Grid(grid, positions, freq, step_days, filled, first_gap)


def _minute_grid(stamps: np.ndarray, source: str, column: str) -> _Grid:
    """Timestamps with times of day: a grid whose step, the smallest gap, is a whole number of
    minutes dividing a day (gaps allowed), else refused."""
    minutes = np.diff(stamps).astype(np.int64)
    step = int(minutes.min())
    if 1440 % step or (minutes % step).any():
        raise _irregular(source, column, stamps, "a step of whole minutes that divides a day")
    freq = minute_freq(step)
    positions = (stamps - stamps[0]).astype(np.int64) // step
    n = int(positions[-1]) + 1
    grid = stamps[0] + np.arange(n) * np.timedelta64(step, "m")
    return _on_grid(grid, positions, freq, None, stamps, source, column)


def _irregular(source: str, column: str, stamps: np.ndarray, what: str) -> UserError:
    return UserError(f"{source}: column {column!r}: the timestamps ({stamps[0]}, {stamps[1]}, {stamps[2]}, ...) "
                     f"are not on a regular grid ({what}, gaps allowed); give one row per step, or drop the "
                     f"timestamp column")


def _with_calendar(s: Series) -> Series:
    """The calendar phase of a series on a grid with a frequency (annual: no season)."""
    first = s.timestamps[0]
    minutes = freq_minutes(s.freq)
    if minutes:
        of_day = int(first.astype("datetime64[m]").astype(np.int64)) % 1440
        if 1440 // minutes <= DAY_SEASON_MAX:  # the time of day (hourly: the hour)
            s.phase_step, s.phase0 = minutes / 1440, of_day / 1440
        else:  # the minute of the hour
            s.phase_step, s.phase0 = minutes / 60, of_day % 60 / 60
    elif s.freq == "M":
        s.phase_step = 1.0 / 12
        s.phase0 = (int(first.astype("datetime64[M]").astype(np.int64)) % 12) / 12
    elif s.freq == "Q":
        s.phase_step = 1.0 / 4
        s.phase0 = (int(first.astype("datetime64[M]").astype(np.int64)) % 12 // 3) / 4
    elif s.freq == "W":
        s.phase_step = 7 / 365.25
        s.phase0 = _day_of_year(first) / 365.25
    elif s.freq == "D":
        s.phase_step = 1.0 / 7
        s.phase0 = ((int(first.astype(np.int64)) + 3) % 7) / 7  # Monday = 0 (1970-01-01 was a Thursday)
    elif s.freq == "B":
        s.phase_step = 1.0 / 5
        s.phase0 = ((int(first.astype(np.int64)) + 3) % 7) / 5
    return s


def _day_of_year(d: np.datetime64) -> float:
    return float((d - d.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64))


# -- checks shared by train, predict and evaluate --------------------------------------
def check_horizon(horizon) -> int:
    return check_int("horizon", horizon, low=1)


def check_context(context) -> int:
    """At least 2 steps: a window is scaled by the spread of its context values."""
    check_int("context", context)
    if context < 2:
        raise OptionError("context", f"must be >= 2 steps (a window is scaled by its context's spread), "
                                     f"got {context}")
    return context


def check_series(s: Series, *, context: int, horizon: int, extra: int = 0) -> None:
    """Raise a one-line UserError when ``s`` cannot be forecast with this context/horizon.

    ``extra`` is what the caller needs beyond ``context + horizon`` (held-out
    evaluation windows, say).
    """
    check_horizon(horizon)
    check_context(context)
    n = len(s.values)
    need = context + horizon + extra
    if n < need:
        what = f"context {context} + horizon {horizon}" + (f" + {extra} held-out steps" if extra else "")
        raise UserError(f"series {s.name!r} has {n} values, too short for {what} ({need} needed); "
                        f"lower the context or the horizon, or use a longer series")
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
