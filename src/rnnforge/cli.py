"""The ``rnnforge`` command line (also ``python -m rnnforge``).

Each subcommand lives in ``rnnforge/commands/<name>.py`` and provides
``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it. Bad input ends in one line on stderr and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

SUBCOMMANDS = ("train", "sample", "demo", "forecast", "experiment", "bench", "inspect", "export", "vae")


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (what is wrong, and ``--help`` for the rest)
    instead of the usage block followed by the error; subcommand parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(
        prog="rnnforge",
        description="The lecture's RNN, GRU and LSTM: train them, generate with them by inverse "
                    "transform sampling, check calibration with the PIT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rnnforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.commands.{name}":
                raise
            continue  # subcommand not built yet
        module.register(sub)
    return parser


def print_config(command: str, args: argparse.Namespace, file=None) -> None:
    """Print the resolved configuration of a run, one ``key = value`` per line (to stdout by default)."""
    file = file or sys.stdout
    items = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    print(f"rnnforge {command}: resolved config", file=file)
    for key in sorted(items):
        print(f"  {key} = {items[key]!r}", file=file)
    file.flush()


def _parsers(parser: argparse.ArgumentParser):
    """``parser`` and every subcommand's parser below it, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def flag_names(parser: argparse.ArgumentParser, func=None) -> dict[str, str]:
    """Option destination -> its long flag (``lr`` -> ``--lr``). The parser of the subcommand
    that runs ``func`` is asked first, so a name that two subcommands spell differently is
    shown as the running one spells it."""
    parsers = list(_parsers(parser))
    parsers.sort(key=lambda p: p._defaults.get("func") is not func or func is None)
    names: dict[str, str] = {}
    for p in parsers:
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                # the long positive form: --refit, not --no-refit (a --no-x flag alone stays itself)
                names.setdefault(action.dest, max(action.option_strings,
                                                  key=lambda f: (not f.startswith("--no-"), len(f))))
    return names


def describe_error(e: Exception, parser: argparse.ArgumentParser, func=None) -> str:
    """The one line a user sees: an OptionError under the flag that set the option."""
    from .errors import OptionError

    if isinstance(e, OptionError):
        names = flag_names(parser, func)
        flags = [names.get(o, "--" + o.replace("_", "-")) for o in e.options]
        # a switch the library writes as greedy=True is the flag --greedy here
        problem = re.sub(r"\b(\w+)=True\b", lambda m: names.get(m[1], m[0]), e.problem)
        return f"{' and '.join(flags)} {problem}"
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    from .errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, OSError) as e:
        # expected failures: bad input, a missing or unwritable file, a full disk
        print(f"rnnforge {args.command}: error: {describe_error(e, parser, args.func)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnforge {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        # not an expected failure: a bug, whose traceback is what a report needs
        import traceback

        traceback.print_exc()
        print(f"rnnforge {args.command}: internal error: this is a bug in rnnforge; please report it "
              f"with the command line and the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
