"""Do the notes' cells remember in the long and the near term?

The notes: "LSTM models have the ability to 'remember' inputs in the long term
and in the near term", and the GRU's update gate ``s`` is "long term", its
reset gate ``r`` "short term". The sigmoid RNN, ``z = σ(alpha x + gamma z_prev)``,
is the cell without gates. This package makes the claim measurable:

- :mod:`.tasks`: the adding and copy tasks (long term), delay and parity (near
  term), generated from a seed, and what "solved" means;
- :mod:`.model`: the cells compared and the model (one recurrent layer of the
  cell, ``engine="auto"``, and the notes' δ on the states the task reads);
- :mod:`.runner`: one training run (:func:`train_one`) and the sweep over
  cells, lengths and seeds (:func:`run_memory`), with every option checked
  first (:func:`check_options`);
- :mod:`.report`: the record of a run, the summary, the markdown table, the CSV
  and the plot.
"""

from .model import CELLS, DEFAULT_CELLS, MemoryNet
from .report import RunResult, markdown_table, plot_results, summarize, write_results
from .runner import check_options, run_memory, train_one
from .tasks import SOLVED_BELOW, TASKS, AddingTask, CopyTask, DelayTask, ParityTask, Task, make_task

__all__ = [
    "CELLS", "DEFAULT_CELLS", "MemoryNet",
    "RunResult", "summarize", "markdown_table", "write_results", "plot_results",
    "train_one", "check_options", "run_memory",
    "SOLVED_BELOW", "TASKS", "Task", "AddingTask", "CopyTask", "DelayTask", "ParityTask", "make_task",
]
