"""rnnforge: the lecture's recurrent cells, exact and fast, and generation by
inverse transform sampling checked with the probability integral transform."""

__version__ = "0.1.0"

from .cells import GRUCell, LSTMCell, RNNCell
from .layers import GRU, LSTM, RNN
from .readout import Readout

__all__ = ["RNNCell", "GRUCell", "LSTMCell", "RNN", "GRU", "LSTM", "Readout", "__version__"]
