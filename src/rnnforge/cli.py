"""The ``rnnforge`` command line (also ``python -m rnnforge``).

Each subcommand lives in ``rnnforge/commands/<name>.py`` and provides
``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it. Bad input ends in one line on stderr and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("train", "sample", "demo", "forecast", "experiment", "bench", "inspect")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
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


def print_config(command: str, args: argparse.Namespace) -> None:
    """Print the resolved configuration of a run, one ``key = value`` per line."""
    items = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    print(f"rnnforge {command}: resolved config")
    for key in sorted(items):
        print(f"  {key} = {items[key]!r}")
    sys.stdout.flush()


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every option's destination -> its long flag, over all subcommands (``lr`` -> ``--lr``)."""
    names: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for dest, flag in flag_names(sub).items():
                    names.setdefault(dest, flag)
        elif action.option_strings:
            names.setdefault(action.dest, max(action.option_strings, key=len))
    return names


def describe_error(e: Exception, parser: argparse.ArgumentParser) -> str:
    """The one line a user sees: an OptionError under the flag that set the option."""
    from .errors import OptionError

    if isinstance(e, OptionError):
        flag = flag_names(parser).get(e.option, "--" + e.option.replace("_", "-"))
        return f"{flag} {e.problem}"
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
        print(f"rnnforge {args.command}: error: {describe_error(e, parser)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
