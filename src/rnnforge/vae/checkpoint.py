"""The VAE's checkpoints: ``kind: "vae"`` files of :mod:`rnnforge.checkpoint` (or ``"vae-lm"``
for the plain character model trained on the same lines as its yardstick).

A run folder holds ``best.safetensors`` (lowest held-out negative ELBO) and
``last.safetensors`` (with optimizer and RNG state, for resume), ``metrics.csv``
and the learning curve. The metadata carries the model config and the
vocabulary; the fitted aggregate posterior, when present, is the
``posterior.data`` and ``posterior.chol`` tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint
from ..charlm.data import Vocab
from ..errors import UserError
from ..runlog import BEST, LAST, resolve_checkpoint  # noqa: F401  (part of this module's interface)
from .model import SequenceVAE, VAEConfig
from .posterior import AggregatePosterior

KIND, LM_KIND = "vae", "vae-lm"
METRICS, CURVE = "metrics.csv", "learning_curve.png"
RUN_FILES = (BEST, LAST, METRICS)
WRITTEN = (BEST, LAST, CURVE, METRICS)


def _check_kind(path: Path, meta: dict, kind: str) -> None:
    if meta.get("kind") != kind:
        what = "a sequence VAE" if kind == KIND else "a VAE run's yardstick character model"
        raise UserError(f"{path} is a {meta.get('kind')!r} checkpoint, not {what}; "
                        f"give the folder or file that 'rnnforge vae train' wrote")
    if not isinstance(meta.get("model"), dict) or not isinstance(meta.get("vocab"), str):
        raise UserError(f"{path}: the checkpoint's metadata lacks the model config or the vocabulary")


def _load_state(path: Path, model: torch.nn.Module, tensors: dict) -> None:
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: the weights do not fit the model config "
                        f"({str(e).splitlines()[0]})") from None
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise UserError(f"{path}: the weights hold NaN or infinite values")


def load_vae(path: str | Path, device: str | torch.device = "cpu"
             ) -> tuple[SequenceVAE, Vocab, dict, AggregatePosterior | None]:
    """Rebuild a SequenceVAE (and its fitted aggregate posterior, if stored) from a checkpoint alone."""
    path = resolve_checkpoint(path)
    tensors, meta = checkpoint.load(path)
    _check_kind(path, meta, KIND)
    try:
        config = VAEConfig(**meta["model"])
    except (TypeError, UserError) as e:
        raise UserError(f"{path}: the checkpoint's model config is invalid ({e})") from None
    if config.vocab_size != len(meta["vocab"]):
        raise UserError(f"{path}: the vocabulary has {len(meta['vocab'])} characters for a "
                        f"vocab_size of {config.vocab_size}")
    model = SequenceVAE(config)
    _load_state(path, model, tensors)
    post = AggregatePosterior.from_tensors(tensors, config.latent, str(path))
    return model.to(device).eval(), Vocab(meta["vocab"]), meta, post


def load_lm(path: str | Path, device: str | torch.device = "cpu"):
    """The yardstick: a CharLM trained on the VAE's lines (kind ``vae-lm``)."""
    from ..charlm.model import CharLM, CharLMConfig

    path = resolve_checkpoint(path)
    tensors, meta = checkpoint.load(path)
    _check_kind(path, meta, LM_KIND)
    try:
        config = CharLMConfig(**meta["model"])
    except (TypeError, UserError) as e:
        raise UserError(f"{path}: the checkpoint's model config is invalid ({e})") from None
    model = CharLM(config)
    _load_state(path, model, tensors)
    return model.to(device).eval(), Vocab(meta["vocab"]), meta


def store_posterior(path: Path, post: AggregatePosterior) -> None:
    """Write ``post`` into the checkpoint at ``path`` (atomically, everything else kept)."""
    tensors, meta = checkpoint.load(path)
    tensors = {k: v for k, v in tensors.items() if not k.startswith("posterior.")}
    tensors.update(post.tensors())
    meta = {k: v for k, v in meta.items() if k not in ("format", "versions")}
    checkpoint.save(path, tensors, meta)
