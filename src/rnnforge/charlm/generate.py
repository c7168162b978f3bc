"""Generating text from a trained character model.

Each next character is drawn by inverse transform sampling (Ex2 of the notes)
of the predicted categorical distribution: the logits are turned into a CDF in
float64 (after temperature, then top-k and top-p truncation), one uniform draw
``u`` is made, and the character is the first whose CDF exceeds ``u``
(``torch.searchsorted``). The recurrent state is carried from step to step, so
each character costs one step of the network whatever the length so far.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch

from .data import Vocab
from ..errors import OptionError, check_float, check_int
from .model import CharLM

#: seeds of torch's generators are unsigned 64-bit numbers
MAX_SEED = 2**64 - 1


def check_sampling_options(temperature: float, top_k: int | None = None, top_p: float | None = None,
                           length: int = 0, seed: int | None = None, prime: str = "\n") -> None:
    """Every sampling option checked at once, before anything is loaded."""
    if isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature <= 0:
        raise OptionError("temperature", f"must be > 0, got {temperature}; greedy decoding takes "
                                         f"the most likely character")
    check_float("temperature", temperature, low=0, low_open=True)
    if top_k is not None:
        check_int("top_k", top_k, low=1)
    if top_p is not None:
        check_float("top_p", top_p, low=0, high=1, low_open=True)
    check_int("length", length, low=0)
    if seed is not None:
        check_int("seed", seed, low=0, high=MAX_SEED)
    if not isinstance(prime, str) or not prime:
        raise OptionError("prime", "must hold at least one character")


@torch.no_grad()
def generate(model: CharLM, vocab: Vocab, prime: str = "\n", length: int = 500, *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, greedy: bool = False) -> Iterator[str]:
    """Yield ``length`` characters following ``prime``, one at a time.

    Each character is ``sample_categorical`` of the model's logits (or their
    argmax with ``greedy``), drawn through a ``CategoricalStepper``: the same
    arithmetic and the same uniforms from the seeded generator, with the options
    checked once per call rather than per character. The model is stepped by its
    ``decoder`` (state and buffers kept between characters).
    """
    from ..sampling.categorical import CategoricalStepper

    check_sampling_options(temperature, top_k, top_p, length, seed, prime)
    device = next(model.parameters()).device
    ids = vocab.encode(prime).to(device)  # UserError naming characters outside the vocabulary
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()  # fresh entropy for this generator only; the global RNG is untouched
    else:
        gen.manual_seed(seed)
    logits, state = model(ids[None], None)  # the prime in one forward: (1, P, V)
    logits = logits[:, -1]  # (1, V)
    if length == 0:
        return
    dec = model.decoder(state, batch=1)
    draw = None
    if not greedy:
        x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        draw = CategoricalStepper(1, logits.shape[-1], temperature=temperature, top_k=top_k,
                                  top_p=top_p, generator=gen, dtype=x.dtype, device=device,
                                  block=min(length, 256)).draw
    chars = vocab.chars
    for i in range(length):
        if greedy:
            nxt = logits.argmax(-1)  # (1,)
        else:
            nxt = draw(logits if logits.dtype in (torch.float32, torch.float64) else logits.float())
        yield chars[nxt.item()]
        if i + 1 < length:
            logits = dec.step(nxt)


def sample(checkpoint: str | Path, prime: str = "\n", length: int = 500, *, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
           greedy: bool = False, device: str | torch.device = "cpu") -> Iterator[str]:
    """``length`` characters following ``prime`` from a checkpoint file or run folder.

    The options and the checkpoint are checked here, before the first character
    is asked for; the characters then come one at a time from :func:`generate`.
    """
    from ..runtime import resolve_device
    from .checkpoint import load_model

    check_sampling_options(temperature, top_k, top_p, length, seed, prime)
    model, vocab, _ = load_model(checkpoint, resolve_device(str(device)))
    vocab.encode(prime)  # characters outside the vocabulary are an error now, not at the first next()
    return generate(model, vocab, prime, length, temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=seed, greedy=greedy)
