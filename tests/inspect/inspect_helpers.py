"""Tiny character models for the inspect tests: random weights, saved as real checkpoints.

A module of its own name: every directory's conftest.py is imported as ``conftest``, so
importing helpers from it would find another directory's.
"""

import torch

from rnnforge import checkpoint
from rnnforge.charlm import CharLM, CharLMConfig, Vocab

TEXT = ('The "quick" fox (jumps [over] the) lazy dog.\n'
        '    indented code(x, y)\n'
        'Say "hi" & <b>bye</b>.\n')


def tiny_model(cell: str, vocab: Vocab, hidden: int = 6, layers: int = 2, seed: int = 0) -> CharLM:
    torch.manual_seed(seed)
    return CharLM(CharLMConfig(len(vocab), cell=cell, hidden=hidden, layers=layers, embed=4)).eval()


def save_charlm(path, model: CharLM, vocab: Vocab, data: str | None = None) -> None:
    """A checkpoint as training writes it (the parts load_model and the held-out text read)."""
    meta = {"kind": "charlm", "model": model.config_dict(), "vocab": vocab.chars,
            "train": {"data": data, "val_fraction": 0.25}}
    checkpoint.save(path, {f"model.{k}": v for k, v in model.state_dict().items()}, meta)


