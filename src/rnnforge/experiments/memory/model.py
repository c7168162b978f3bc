"""The memory experiment's model: one recurrent layer of a cell and the notes' readout.

Cells: ``rnn`` (the notes' sigmoid RNN, ``z = σ(alpha x + gamma z_prev)``, the
cell without gates), ``rnn-tanh``, ``gru``, ``lstm`` -- all without biases, as
in the notes (``bias=True`` adds them) -- and ``lstm-fb``: the LSTM with biases
and the forget-gate bias started at ``forget_bias`` (1 by default; Gers et al.
2000, Jozefowicz et al. 2015), to measure the effect of that common
initialisation rather than change the task.
"""

from __future__ import annotations

import torch
from torch import nn

from ...layers import GRU, LSTM, RNN
from ...readout import Readout
from .tasks import Task

#: cell name -> (layer class, keyword arguments, description)
CELLS: dict[str, tuple[type, dict, str]] = {
    "rnn": (RNN, {"nonlinearity": "sigmoid"}, "the notes' RNN, z = σ(alpha x + gamma z_prev)"),
    "rnn-tanh": (RNN, {"nonlinearity": "tanh"}, "Elman RNN with tanh (torch.nn.RNN)"),
    "gru": (GRU, {}, "the notes' GRU"),
    "lstm": (LSTM, {}, "the notes' LSTM (no biases, as the notes)"),
    "lstm-fb": (LSTM, {}, "the notes' LSTM with biases, forget-gate bias b_f started at forget_bias"),
}
DEFAULT_CELLS = ("rnn", "rnn-tanh", "gru", "lstm")


class MemoryNet(nn.Module):
    """One recurrent layer and the notes' δ readout on the states the task reads."""

    def __init__(self, cell: str, task: Task, hidden: int, *, bias: bool = False,
                 forget_bias: float = 1.0) -> None:
        super().__init__()
        cls, kwargs, _ = CELLS[cell]
        with_bias = bias or cell == "lstm-fb"
        self.rnn = cls(task.input_size, hidden, bias=with_bias, engine="auto", **kwargs)
        if cell == "lstm-fb":
            with torch.no_grad():
                for c in self.rnn.cells:
                    c.b_f.fill_(forget_bias)
        self.readout = Readout(hidden, task.output_size)
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (L, B, H)
        return self.readout(self.task.states(out))
