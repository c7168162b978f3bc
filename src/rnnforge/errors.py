"""The errors users see: one line saying what is wrong and what to do.

Library code names its own parameters (``lr``, ``batch_size``), never a
command-line flag: an :class:`OptionError` carries the parameter's name apart
from the problem, and the command line prints it under the flag that set it
(``--lr``, ``--batch-size``).
"""

from __future__ import annotations

import math


class UserError(ValueError):
    """Bad input from a user: the command line prints it as one line, exit code 2."""


class OptionError(UserError):
    """A bad value of a named option: ``OptionError("lr", "must be > 0, got nan")``.

    A problem of several options together names them all:
    ``OptionError(("steps", "minutes"), "are both 0: ...")`` reads "steps and minutes are both 0".
    """

    def __init__(self, option: str | tuple[str, ...], problem: str) -> None:
        self.options = (option,) if isinstance(option, str) else tuple(option)
        self.option, self.problem = self.options[0], problem
        super().__init__(f"{' and '.join(self.options)} {problem}")


def check_int(option: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; an OptionError saying the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(option, f"must be a whole number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise OptionError(option, f"must be {_range(low, high)}, got {value}")
    return value


def check_float(option: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in the interval; NaN and infinities are refused."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise OptionError(option, f"must be a number, got {value!r}") from None
    bad = not math.isfinite(x)
    if low is not None:
        bad = bad or x < low or (low_open and x == low)
    if high is not None:
        bad = bad or x > high or (high_open and x == high)
    if bad:
        what = "a finite number" if low is None and high is None else _range(low, high, low_open, high_open)
        raise OptionError(option, f"must be {what}, got {value}")
    return x


def _range(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    return f"{'<' if high_open else '<='} {high}"
