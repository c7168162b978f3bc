"""Lines of text for the sequence VAE: the corpus, its split, the vocabulary and padded batches.

The default corpus is the lines of ``pydoc_data.topics`` (the character model's
corpus) that hold 20 to 120 characters after stripping. It is split by topic,
not by line: each topic goes whole to train, validation or test (by a hash of
its name), so a held-out line's neighbours never sit in the training set. A
``--data`` file gives its non-empty lines, split into three contiguous blocks
(90%, 5%, 5%) for the same reason.

The vocabulary holds ``"\\n"``, which marks both the start and the end of a line
(no line contains it), then the corpus's characters in sorted order. The
decoder's inputs have one more symbol, the mask of character dropout, whose id
is ``len(vocab)``; the readout never predicts it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..charlm.data import DEFAULT_CORPUS, Vocab, read_utf8
from ..errors import OptionError, UserError

#: the default corpus keeps lines of this many characters
MIN_CHARS, MAX_CHARS = 20, 120
#: the line boundary: the decoder starts from it and predicts it after the last character
EOL = "\n"
#: the fraction of lines held out for validation, and again for test
HELD_OUT = 0.05


@dataclass
class Lines:
    train: list[str]
    val: list[str]
    test: list[str]

    def vocab(self) -> Vocab:
        chars = set("".join(self.train) + "".join(self.val) + "".join(self.test))
        return Vocab(EOL + "".join(sorted(chars - {EOL})))


def _topic_lines(text: str) -> list[str]:
    lines = (line.strip() for line in text.split("\n"))
    return [line for line in lines if MIN_CHARS <= len(line) <= MAX_CHARS]


def default_lines() -> Lines:
    """The corpus's lines, whole topics to each part: the topics in the order of a hash of their
    names fill validation up to 5% of the lines, then test up to 5%, the rest is training."""
    from pydoc_data.topics import topics

    per_topic = sorted((zlib.crc32(key.encode()), _topic_lines(topics[key])) for key in topics)
    total = sum(len(lines) for _, lines in per_topic)
    parts: list[list[str]] = [[], [], []]  # validation, test, train
    for _, lines in per_topic:
        part = 0 if len(parts[0]) < total * HELD_OUT else 1 if len(parts[1]) < total * HELD_OUT else 2
        parts[part] += lines
    return Lines(parts[2], parts[0], parts[1])


def file_lines(path: str | Path, max_len: int) -> Lines:
    """The non-empty lines of a UTF-8 file (each stripped), in three contiguous blocks."""
    path = Path(path)
    if not path.exists():
        raise OptionError("data", f"{path}: no such file")
    if path.is_dir():
        raise OptionError("data", f"{path} is a folder; give a file with one text per line")
    lines = [line.strip() for line in read_utf8(path).split("\n")]
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line]
    if not numbered:
        raise UserError(f"{path} holds no lines of text; give a file with one text per line")
    check_lengths(numbered, max_len, f"{path}: line")
    if len(numbered) < 3:
        raise UserError(f"{path} holds {len(numbered)} line(s); at least 3 are needed "
                        f"(training, validation and test lines)")
    kept = [line for _, line in numbered]
    n = len(kept)
    n_val = n_test = max(1, n // 20)
    return Lines(kept[:n - n_val - n_test], kept[n - n_val - n_test:n - n_test], kept[n - n_test:])


def check_lengths(numbered, max_len: int, where: str) -> None:
    """Refuse a line longer than the model's ``max_len`` characters, naming the first one."""
    for i, line in numbered:
        if len(line) > max_len:
            raise UserError(f"{where} {i} has {len(line)} characters, more than the model's maximum "
                            f"of {max_len}; shorten it or train with a larger maximum line length")


def load_lines(source: str | None, max_len: int = MAX_CHARS) -> Lines:
    if source in (None, "", DEFAULT_CORPUS):
        lines = default_lines()
        check_lengths(enumerate(lines.train + lines.val + lines.test, 1), max_len, "corpus line")
        return lines
    return file_lines(source, max_len)


def encode_lines(vocab: Vocab, lines: list[str]) -> list[torch.Tensor]:
    return [vocab.encode(line) for line in lines]


def batch(encoded: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lines of ids -> (B, T) padded with the boundary id 0, and their lengths (B,)."""
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    ids = torch.zeros(len(encoded), int(lengths.max()), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, :len(e)] = e
    return ids, lengths
