"""Models built from the notes' cells."""

from .charlm import CELLS, CharLM, make_rnn

__all__ = ["CELLS", "CharLM", "make_rnn"]
