"""Forecaster checkpoints: the weights of every ensemble member, the model config and the
training and data description, in one self-describing file (``rnnforge.checkpoint``)."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint
from ..errors import UserError
from .model import Ensemble, Forecaster, ModelConfig, members_of

KIND = "rnnforge-forecaster"
#: the file name a run folder holds its forecaster under
FILENAME = "forecaster.safetensors"


def save(path, model: Forecaster | Ensemble, meta: dict) -> None:
    """Atomic, self-describing checkpoint: weights of each ensemble member (``member{k}.``),
    the model config and the training/data metadata."""
    members = members_of(model)
    tensors = {f"member{k}.{name}": v for k, m in enumerate(members) for name, v in m.state_dict().items()}
    configs = [m.config.to_dict() for m in members]
    # members of different configurations (a mixture of transforms) each keep their own
    extra = {"member_models": configs} if any(c != configs[0] for c in configs) else {}
    checkpoint.save(path, tensors, {"kind": KIND, "model": configs[0], "members": len(members), **extra, **meta})


def load(path, device: str = "cpu") -> tuple[Forecaster | Ensemble, dict]:
    """The model of a checkpoint (an Ensemble when it holds more than one member) and its metadata.
    ``path`` is the file or the run folder that holds it as FILENAME.

    A checkpoint whose config does not build a model, or whose tensors are missing, extra, of
    the wrong shape or not finite, is a UserError naming what is wrong."""
    path = Path(path)
    if path.is_dir():
        if not (path / FILENAME).is_file():
            raise UserError(f"{path} is a folder without a {FILENAME}; pass a forecaster checkpoint "
                            f"or the run folder that holds one (`rnnforge forecast train --out`)")
        path = path / FILENAME
    tensors, meta = checkpoint.load(path, device=device)
    if meta.get("kind") != KIND:
        raise UserError(f"{path} is an rnnforge checkpoint of kind {meta.get('kind')!r}, "
                        f"not a forecaster; train one with `rnnforge forecast train`")
    try:
        count = int(meta.get("members", 1))
        if not 1 <= count <= 10_000:
            raise ValueError(f"it says {count} ensemble members")
        dicts = meta.get("member_models") or [meta["model"]] * count
        if not isinstance(dicts, list) or len(dicts) != count:
            raise ValueError(f"it lists {len(dicts) if isinstance(dicts, list) else 'no'} member models "
                             f"for {count} members")
        configs = [ModelConfig(**d) for d in dicts]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: the model config in its metadata is unusable ({e})") from None
    for config in configs:
        if not (isinstance(config.hidden, int) and 1 <= config.hidden <= 1 << 16
                and isinstance(config.layers, int) and 1 <= config.layers <= 64):
            raise UserError(f"{path}: the metadata's model sizes are absurd (hidden {config.hidden!r}, "
                            f"layers {config.layers!r})")
    members = []
    for k, config in enumerate(configs):
        m = Forecaster(config)
        prefix = f"member{k}."
        state = {n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}
        want = m.state_dict()
        for name in sorted(set(want) | set(state)):
            if name not in state:
                raise UserError(f"{path}: tensor {prefix + name} is missing")
            if name not in want:
                raise UserError(f"{path}: tensor {prefix + name} is not part of a forecaster of cell "
                                f"{config.cell}")
            t = state[name]
            if t.shape != want[name].shape or not t.is_floating_point():
                raise UserError(f"{path}: tensor {prefix + name} is {t.dtype} {tuple(t.shape)}, "
                                f"expected {want[name].dtype} {tuple(want[name].shape)}")
            if not torch.isfinite(t).all():
                raise UserError(f"{path}: tensor {prefix + name} holds NaN or infinite values")
        m.load_state_dict(state)
        members.append(m.to(device).eval())
    return (members[0] if len(members) == 1 else Ensemble(members)), meta
