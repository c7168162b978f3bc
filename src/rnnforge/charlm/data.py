"""Text corpora for the character language model.

The default corpus is the English prose of Python's own documentation topics,
``pydoc_data.topics`` (shipped with CPython, about 465k characters), so every
install has training data with no download. Any UTF-8 text file, or a folder
of them, works too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError

DEFAULT_CORPUS = "pydoc-topics"


def default_corpus() -> str:
    """The pydoc topics, concatenated in sorted key order (deterministic)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def read_utf8(path: Path) -> str:
    """Read ``path`` as UTF-8; a bad byte is a UserError naming file and offset."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
                        f"cannot be decoded ({e.reason}); convert the file to UTF-8") from None


def load_text(source: str | None) -> str:
    """The default corpus for None or 'pydoc-topics', else a UTF-8 file or folder."""
    if source in (None, "", DEFAULT_CORPUS):
        return default_corpus()
    path = Path(source)
    if not path.exists():
        raise UserError(f"--data {source}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise UserError(f"--data {source}: the folder holds no files")
        return "\n\n".join(read_utf8(p) for p in files)
    return read_utf8(path)


@dataclass(frozen=True)
class Vocab:
    """Characters <-> ids; saved with the model so sampling needs nothing else."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` outside the vocabulary, in order of appearance."""
        seen = set(self.chars)
        out: list[str] = []
        for c in text:
            if c not in seen and c not in out:
                out.append(c)
        return out

    def encode(self, text: str) -> torch.Tensor:
        bad = self.unknown(text)
        if bad:
            raise UserError(f"characters not in the model's vocabulary: "
                            f"{', '.join(repr(c) for c in bad)}; remove them from the text")
        idx = self.index
        return torch.tensor([idx[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def split(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Train on the first part, hold out the last ``val_fraction`` (contiguous)."""
    if not 0.0 < val_fraction < 0.5:
        raise UserError(f"--val-fraction must be in (0, 0.5), got {val_fraction}")
    n_val = max(2, int(len(ids) * val_fraction))
    return ids[:-n_val], ids[-n_val:]


def streams(ids: torch.Tensor, n: int) -> torch.Tensor:
    """Cut ``ids`` into ``n`` contiguous streams of equal length: (n, len//n).

    Truncated backpropagation through time walks along each stream chunk by
    chunk, carrying the recurrent state from one chunk to the next.
    """
    per = len(ids) // n
    return ids[: per * n].view(n, per)
