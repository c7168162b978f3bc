"""The character model's checkpoints: what a run folder holds and how a model is rebuilt.

A run folder holds ``best.safetensors`` (the weights with the lowest held-out
loss so far) and ``last.safetensors`` (the latest weights with the optimizer,
RNG and carried state, for ``resume``), ``metrics.csv`` and the learning curve.
Both checkpoints are :mod:`rnnforge.checkpoint` files whose metadata has
``kind: "charlm"``, the model config (``model``) and the vocabulary
(``vocab``), so a model is rebuilt from the file alone. Everything read from a
file is checked before it is used: a bad file is one UserError naming what is
wrong, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint
from ..errors import UserError
from ..runlog import BEST, LAST, resolve_checkpoint  # noqa: F401  (part of this module's interface)
from .data import Vocab
from .model import CharLM, CharLMConfig, parameter_count

KIND = "charlm"
METRICS, CURVE = "metrics.csv", "learning_curve.png"
#: what makes a folder hold a run (the overwrite guard looks for these)
RUN_FILES = (BEST, LAST, METRICS)
#: files written through checkpoint.atomic_write, whose left-over temporaries are cleaned up
WRITTEN = (BEST, LAST, CURVE, METRICS)

#: the model config's keys and the JSON types they must have
MODEL_KEYS = {"vocab_size": int, "cell": str, "hidden": int, "layers": int, "embed": int,
              "dropout": (int, float), "tie_weights": bool, "bias": bool, "engine": str}


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", bool: "true or false",
                        dict: "an object"}[t] for t in types)


def _is(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    # JSON true/false load as bool, which Python also counts as int
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def model_config(path: Path, meta: dict) -> CharLMConfig:
    """The model config in ``meta``, every key present with its type and a sane value."""
    if meta.get("kind") != KIND:
        raise UserError(f"{path} is a {meta.get('kind')!r} checkpoint, not a character model")
    for key, types in (("model", dict), ("vocab", str)):
        if key not in meta:
            raise UserError(f"{path}: the checkpoint's metadata has no {key!r}")
        if not _is(meta[key], types):
            raise UserError(f"{path}: the checkpoint's {key!r} must be {_type_name(types)}, "
                            f"got {type(meta[key]).__name__}")
    model = meta["model"]
    for key, types in MODEL_KEYS.items():
        if key not in model:
            raise UserError(f"{path}: the checkpoint's model config has no {key!r}")
        if not _is(model[key], types):
            raise UserError(f"{path}: the checkpoint's model {key!r} must be {_type_name(types)}, "
                            f"got {model[key]!r}")
    extra = sorted(set(model) - set(MODEL_KEYS))
    if extra:
        raise UserError(f"{path}: the checkpoint's model config has unknown keys {extra}")
    vocab = meta["vocab"]
    if len(vocab) != model["vocab_size"] or len(set(vocab)) != len(vocab):
        raise UserError(f"{path}: the checkpoint's vocabulary has {len(vocab)} characters "
                        f"({len(set(vocab))} distinct) for a vocab_size of {model['vocab_size']}")
    try:
        return CharLMConfig(**model)
    except UserError as e:
        raise UserError(f"{path}: the checkpoint's model config is invalid: {e}") from None


def model_weights(path: Path, config: CharLMConfig, tensors: dict[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """The ``model.*`` tensors as a state dict, checked against ``config``: names, shapes,
    a floating-point dtype and finite values."""
    held = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    n, have = parameter_count(config), sum(v.numel() for v in held.values())
    if n > 16 * have + 10**6:
        # a config far bigger than the file's weights is wrong metadata; never build it, not even
        # on the meta device (whose sizes overflow for absurd values)
        raise UserError(f"{path}: the checkpoint's model config (cell {config.cell}, hidden "
                        f"{config.hidden}, layers {config.layers}, embed {config.embed}) means "
                        f"{n:,} parameters, but the file holds {have:,} weights")
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in CharLM(config).state_dict().items()}
    missing = [k for k in want if k not in held]
    if missing:
        raise UserError(f"{path}: tensor 'model.{missing[0]}' is missing"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = [k for k in held if k not in want]
    if extra:
        raise UserError(f"{path}: tensor 'model.{extra[0]}' is not part of a {config.cell} model"
                        + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for k, shape in want.items():
        t = held[k]
        if tuple(t.shape) != shape:
            raise UserError(f"{path}: tensor 'model.{k}' has shape {list(t.shape)}, the model config "
                            f"needs {list(shape)}")
        if not t.is_floating_point():
            raise UserError(f"{path}: tensor 'model.{k}' holds {t.dtype}, not floating-point weights")
        if not torch.isfinite(t).all():
            raise UserError(f"{path}: tensor 'model.{k}' holds NaN or infinite values")
    return held


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[CharLM, Vocab, dict]:
    """Rebuild a CharLM from a checkpoint alone (config and vocabulary are inside)."""
    path = resolve_checkpoint(path)
    tensors, meta = checkpoint.load(path)
    config = model_config(path, meta)
    state = model_weights(path, config, tensors)
    model = CharLM(config)
    model.load_state_dict(state)
    return model.to(device).eval(), Vocab(meta["vocab"]), meta
