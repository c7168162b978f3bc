"""Text corpora for the character language model.

The default corpus is the English prose of Python's own documentation topics,
``pydoc_data.topics`` (shipped with CPython, about 465k characters), so every
install has training data with no download. Any UTF-8 text file, or a folder
of them, works too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import OptionError, UserError, check_float

DEFAULT_CORPUS = "pydoc-topics"


def default_corpus() -> str:
    """The pydoc topics, concatenated in sorted key order (deterministic)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


class NotUTF8(UserError):
    """A file that is not UTF-8 text."""


def read_utf8(path: Path) -> str:
    """Read ``path`` as UTF-8 without its byte-order mark; a bad byte is a NotUTF8 naming file and offset."""
    raw = path.read_bytes()
    try:
        # utf-8-sig drops a leading U+FEFF, which is a marker, not a character of the text
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise NotUTF8(f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
                      f"cannot be decoded ({e.reason}); convert the file to UTF-8") from None


def warn_stderr(message: str) -> None:
    print(f"rnnforge: warning: {message}", file=sys.stderr, flush=True)


def corpus_files(folder: Path, pattern: str = "*") -> list[Path]:
    """The files under ``folder`` matching ``pattern`` at any depth, sorted, hidden ones left out."""
    if not isinstance(pattern, str) or not pattern:
        raise OptionError("glob", f"must be a file name pattern such as '*.txt', got {pattern!r}")
    try:
        found = folder.rglob(pattern)
        return sorted(p for p in found if p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    except ValueError as e:  # pathlib refuses some patterns ("", absolute ones)
        raise OptionError("glob", f"{pattern!r} is not a usable pattern ({e})") from None


def load_text(source: str | None, pattern: str = "*", warn=warn_stderr) -> str:
    """The default corpus for None or 'pydoc-topics', else a UTF-8 file or folder.

    A folder gives its files matching ``pattern`` (recursively) in sorted order,
    joined by blank lines; files that are not UTF-8 text are skipped, and
    ``warn`` is called once naming them. A single file that is not UTF-8 is an error.
    """
    if source in (None, "", DEFAULT_CORPUS):
        return default_corpus()
    path = Path(source)
    if not path.exists():
        raise OptionError("data", f"{source}: no such file or folder")
    if not path.is_dir():
        return read_utf8(path)
    files = corpus_files(path, pattern)
    if not files:
        raise OptionError("data", f"{source}: the folder holds no files matching {pattern!r}")
    texts, skipped = [], []
    for p in files:
        try:
            texts.append(read_utf8(p))
        except NotUTF8:
            skipped.append(str(p.relative_to(path)))
    if not texts:
        raise OptionError("data", f"{source}: none of its {len(files)} files matching {pattern!r} "
                                  f"is UTF-8 text")
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warn(f"{source}: skipped {len(skipped)} of {len(files)} files that are not UTF-8 text: {shown}")
    return "\n\n".join(texts)


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
    check_float("val_fraction", val_fraction, low=0, high=0.5, low_open=True, high_open=True)
    n_val = max(2, int(len(ids) * val_fraction))
    return ids[:-n_val], ids[-n_val:]


def streams(ids: torch.Tensor, n: int) -> torch.Tensor:
    """Cut ``ids`` into ``n`` contiguous streams of equal length: (n, len//n).

    Truncated backpropagation through time walks along each stream chunk by
    chunk, carrying the recurrent state from one chunk to the next.
    """
    per = len(ids) // n
    return ids[: per * n].view(n, per)
