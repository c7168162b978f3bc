"""The character language model: embedding, the notes' cells, readout δ; trained by
truncated BPTT, sampled by inverse transform of the predicted categorical (Ex2).

One library call per action: :func:`train` (a :class:`TrainConfig` in, a
:class:`TrainResult` out), :func:`sample` (text from a checkpoint),
:func:`evaluate` (a checkpoint's bits per character on a text).
"""

from .checkpoint import BEST, LAST, load_model
from .data import Vocab, load_text
from .generate import generate, sample
from .model import CELLS, CharLM, CharLMConfig
from .train import RunExists, Trainer, TrainConfig, TrainResult, evaluate, resolve_config, train

__all__ = ["BEST", "LAST", "CELLS", "CharLM", "CharLMConfig", "RunExists", "Trainer", "TrainConfig",
           "TrainResult", "Vocab", "evaluate", "generate", "load_model", "load_text", "resolve_config",
           "sample", "train"]
