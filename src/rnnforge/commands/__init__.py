"""Subcommands of the ``rnnforge`` command line, one module each (see cli.py)."""
