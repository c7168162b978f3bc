"""Fixtures of the inspect tests: a corpus file and a run folder with a tiny checkpoint."""

import pytest

from rnnforge.charlm import Vocab

from inspect_helpers import TEXT, save_charlm, tiny_model


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
