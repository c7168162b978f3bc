"""Tiny character models for the inspect tests: random weights, saved as real checkpoints."""

import pytest
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


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("inspect_corpus") / "corpus.txt"
    p.write_text(TEXT * 8, encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, corpus_file):
    """A run folder holding best.safetensors of a 2-layer LSTM of 6 units."""
    d = tmp_path_factory.mktemp("inspect_run")
    vocab = Vocab.from_text(corpus_file.read_text(encoding="utf-8"))
    save_charlm(d / "best.safetensors", tiny_model("lstm", vocab), vocab, data=str(corpus_file))
    return d
