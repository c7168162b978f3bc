"""The character model's checkpoints: what a run folder holds and how a model is rebuilt.

A run folder holds ``best.safetensors`` (the weights with the lowest held-out
loss so far) and ``last.safetensors`` (the latest weights with the optimizer,
RNG and carried state, for ``resume``). Both are :mod:`rnnforge.checkpoint`
files whose metadata has ``kind: "charlm"``, the model config and the
vocabulary, so a model is rebuilt from the file alone.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint
from ..errors import UserError
from .data import Vocab
from .model import CharLM, CharLMConfig

KIND = "charlm"
BEST, LAST = "best.safetensors", "last.safetensors"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the best (else last) checkpoint of a run folder."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).exists():
                return path / name
        raise UserError(f"{path} holds no checkpoint ({BEST} or {LAST}); train into it first")
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[CharLM, Vocab, dict]:
    """Rebuild a CharLM from a checkpoint alone (config and vocabulary are inside)."""
    path = resolve_checkpoint(path)
    tensors, meta = checkpoint.load(path)
    if meta.get("kind") != KIND:
        raise UserError(f"{path} is a {meta.get('kind')!r} checkpoint, not a character model")
    model = CharLM(CharLMConfig(**meta["model"]))
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not match the model config ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), Vocab(meta["vocab"]), meta
