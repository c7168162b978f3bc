"""Generating text from a trained character model.

Each next character is drawn by inverse transform sampling (Ex2 of the notes)
of the predicted categorical distribution: the logits are turned into a CDF in
float64 (after temperature, then top-k and top-p truncation), one uniform draw
``u`` is made, and the character is the first whose CDF exceeds ``u``
(``torch.searchsorted``). The recurrent state is carried from step to step, so
each character costs one step of the network whatever the length so far.
"""

from __future__ import annotations

from typing import Iterator

import torch

from .data import Vocab
from ..errors import UserError
from .model import CharLM


def check_sampling_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature > 0:
        raise UserError(f"--temperature must be > 0, got {temperature}; use --greedy for the argmax")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")


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

    check_sampling_options(temperature, top_k, top_p)
    if length < 0:
        raise UserError(f"--length must be >= 0, got {length}")
    if not prime:
        raise UserError("--prime must hold at least one character")
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
