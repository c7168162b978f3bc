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

SUBCOMMANDS = ("train", "sample", "demo", "forecast", "experiment", "bench")


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


def main(argv: list[str] | None = None) -> int:
    from .errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"rnnforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
