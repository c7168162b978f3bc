"""The three recurrent cells of the lecture notes, one file each."""

from ._base import Gate, RecurrentCell
from .gru import GRUCell
from .lstm import LSTMCell
from .rnn import RNNCell

__all__ = ["Gate", "RecurrentCell", "RNNCell", "GRUCell", "LSTMCell"]
