"""Experiments that turn claims of the lecture notes into runs anyone can repeat.

Each experiment is a module with a library function (usable from Python and
tests) and a subcommand of ``rnnforge experiment``:

- :mod:`rnnforge.experiments.memory`: "LSTM models have the ability to
  remember inputs in the long term and in the near term" -- the adding
  problem, copy/recall and near-term tasks over the notes' RNN, GRU and LSTM.
"""

from .memory import CELLS, TASKS, RunResult, run_memory, train_one

__all__ = ["CELLS", "TASKS", "RunResult", "run_memory", "train_one"]
