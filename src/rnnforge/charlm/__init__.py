"""The character language model: embedding, the notes' cells, readout δ; trained by
truncated BPTT, sampled by inverse transform of the predicted categorical (Ex2)."""

from .checkpoint import BEST, LAST, load_model
from .data import Vocab, load_text
from .generate import generate
from .model import CELLS, CharLM, CharLMConfig
from .train import Trainer, TrainConfig

__all__ = ["BEST", "LAST", "CELLS", "CharLM", "CharLMConfig", "Trainer", "TrainConfig", "Vocab",
           "generate", "load_model", "load_text"]
