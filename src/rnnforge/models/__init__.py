"""Models built from the notes' cells."""

from .charlm import CELLS, CharLM, CharLMConfig

__all__ = ["CELLS", "CharLM", "CharLMConfig"]
