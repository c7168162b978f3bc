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
import warnings
import weakref
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
        raise OptionError("temperature", f"must be > 0, got {temperature}; greedy decoding "
                                         f"(greedy=True) takes the most likely character")
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
             seed: int | None = None, greedy: bool = False, cuda_graph: bool | None = None
             ) -> Iterator[str]:
    """Yield ``length`` characters following ``prime``, one at a time.

    Each character is ``sample_categorical`` of the model's logits (or their
    argmax with ``greedy``): the same arithmetic and the same uniforms from the
    seeded generator, drawn 256 steps at a time (as ``CategoricalStepper`` does).
    The model is stepped by its ``decoder`` (state and buffers kept between
    characters). Each step (the network, the readout and the draw) is one static
    step (:class:`StaticGeneration`): fixed buffers, no host synchronization, so
    the characters of a block are computed before they are read back in one copy.

    ``cuda_graph``: on a CUDA device (None, the default, or True) the step is
    captured as a CUDA graph once per batch size, dtype, sampling options and
    weights version, and replayed per character; False runs the same step op by
    op (for debugging); True on a CPU model, or a capture that fails, is an error
    (under None a failed capture warns and runs op by op). The uniforms are drawn
    outside the graph, from the same generator in the same blocks, so the graph
    and the eager step give the same text for a seed on the same device.
    """
    check_sampling_options(temperature, top_k, top_p, length, seed, prime)
    device = next(model.parameters()).device
    if cuda_graph and device.type != "cuda":
        raise OptionError("cuda_graph", f"needs a model on a CUDA device; this one is on {device.type}")
    ids = vocab.encode(prime).to(device)  # UserError naming characters outside the vocabulary
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()  # fresh entropy for this generator only; the global RNG is untouched
    else:
        gen.manual_seed(seed)
    logits, state = model(ids[None], None)  # the prime in one forward: (1, P, V)
    if length == 0:
        return
    run = StaticGeneration.of(model, batch=1, block=min(length, _BLOCK), temperature=temperature,
                              top_k=top_k, top_p=top_p, greedy=greedy,
                              graph=device.type == "cuda" and cuda_graph is not False,
                              strict=cuda_graph is True)
    chars = vocab.chars
    for tokens in run.blocks(logits[:, -1], state, length, gen):
        for tok in tokens:
            yield chars[tok[0]]


#: steps per block: uniforms drawn and characters read back once per block
_BLOCK = 256

#: the last StaticGeneration of each model (its buffers and captured graphs), reused by the next call
_RUNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def draw_static(x: torch.Tensor, t: torch.Tensor, temperature: float, top_k, top_p
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sample_categorical``'s draw for logits ``x`` (N, V) float32/64 and uniforms ``t``
    (N, 1) in (0, 1] (overwritten), without host synchronization: ``(k (N, 1), bad, nan)``.

    The same categories as ``sampling.categorical._draw`` for the same ``t``: where
    ``_build`` looks at the row totals or maxima on the host to choose between the
    unshifted weights and the ones shifted by the row maxima, this builds both
    tables and selects on the device (two passes over V for a character vocabulary
    cost less than a synchronization). Where ``_build`` would raise, ``bad`` (a
    0-d bool tensor) is set instead, and ``nan`` says whether a logit is NaN; the
    caller raises when it reads them back.
    """
    from ..sampling.categorical import _TINY, _search, _tables

    N, V = x.shape
    m = x.amax(-1, keepdim=True)
    finite = torch.isfinite(m).all()
    if top_k is None and top_p is None:
        table, ends = _tables(x, "logits", temperature, None, None, None)
        total = (table if ends is None else ends)[:, -1]
        plain = ((total >= V * _TINY) & (total < math.inf)).all()
        bad = ~plain & ~finite
    else:
        table, ends = _tables(x, "logits", temperature, top_k, top_p, None)
        scaled = m.double() / temperature  # _build compares the Python floats max / T
        plain = (scaled.min() >= -30.0) & (scaled.max() <= 80.0)
        bad = ~finite
    shifted, shifted_ends = _tables(x, "logits", temperature, top_k, top_p, m)
    table = torch.where(plain, table, shifted)
    if ends is not None:
        ends = torch.where(plain, ends, shifted_ends)
    return _search(table, ends, t), bad, torch.isnan(x).any()


class StaticGeneration:
    """Generation steps of a character model in static buffers, graph-capturable.

    Holds the decoder (``model.decoder``), the token ids fed back (B,), a block of
    uniforms (block, B, 1), the tokens drawn (block, B), per step the flags of bad
    logits, and a step counter on the device. ``draw(logits)`` writes the next ids,
    ``step(swap)`` advances the decoder from them and draws: tensor operations
    only, no allocation the graph could not replay, no host synchronization. With
    ``graph`` (CUDA only) each step is a replayed CUDA graph (two, when the decoder
    alternates its product order every other step).
    """

    def __init__(self, model: CharLM, batch: int, block: int, temperature: float, top_k, top_p,
                 greedy: bool, graph: bool, strict: bool = True) -> None:
        from ..sampling.categorical import _check_options

        _check_options(temperature, top_k, top_p)
        weight = model.embedding.weight
        dev = weight.device
        if graph and dev.type != "cuda":
            raise OptionError("cuda_graph", f"needs a model on a CUDA device; this one is on {dev.type}")
        self.batch, self.block, self.graph = batch, block, graph
        # graph asked for (the cache key), and whether a failed capture is an error (else a warning
        # and the op-by-op step: the default, cuda_graph=None, is a preference, not a demand)
        self.want, self.strict = (graph, strict), strict
        self.options = (float(temperature), top_k, top_p, bool(greedy))
        self.dec = model.decoder(None, batch)
        self.ids = torch.zeros(batch, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)
        self.tokens = torch.zeros(block, batch, dtype=torch.long, device=dev)
        self.flags = torch.zeros(block, 2, dtype=torch.bool, device=dev)  # bad logits, NaN among them
        self.u = torch.ones(block, batch, 1, dtype=torch.float64, device=dev)
        self.graphs: dict = {}
        self.busy = False  # a generator is reading from it: another call gets its own instance

    @classmethod
    def of(cls, model: CharLM, *, batch: int, block: int, temperature: float = 1.0, top_k=None,
           top_p=None, greedy: bool = False, graph: bool = False, strict: bool = True
           ) -> "StaticGeneration":
        """The model's cached instance for these settings, or a new one (which replaces it);
        a new one too while the cached one is feeding an unfinished generation."""
        run = _RUNS.get(model)
        dtype = model.embedding.weight.dtype
        if (run is None or run.busy or run.batch != batch or run.block != block or run.want != (graph, strict)
                or run.options != (float(temperature), top_k, top_p, bool(greedy))
                or run.dec.weight is not model.embedding.weight or run.u.device != model.embedding.weight.device
                or run.dec.logits.dtype != dtype):
            run = _RUNS[model] = cls(model, batch, block, temperature, top_k, top_p, greedy, graph, strict)
        return run

    def draw(self, logits: torch.Tensor) -> None:
        """Next ids from ``logits`` (B, V) and the uniforms at the step counter; the ids and
        the flags are also written at the counter, which then advances."""
        temperature, top_k, top_p, greedy = self.options
        x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        if greedy:
            k = x.argmax(-1)
        else:
            t = self.u.index_select(0, self.pos)[0]  # (B, 1), a copy: _search overwrites it
            k, bad, nan = draw_static(x, t, temperature, top_k, top_p)
            self.flags.index_copy_(0, self.pos, torch.stack([bad, bad & nan])[None])
            # bad logits give k = V, flagged; clamped so that the steps until the flag is read
            # index the embedding in range (on CUDA an index out of range is a fatal device assert)
            k = k.view(-1).clamp_(max=x.shape[-1] - 1)
        self.ids.copy_(k)
        self.tokens.index_copy_(0, self.pos, k[None])
        self.pos.add_(1)

    def step(self, swap: bool) -> None:
        """Advance the decoder from the ids, then draw the next ones."""
        self.draw(self.dec.advance(self.ids, swap))

    def _replay(self, swap: bool) -> None:
        if not self.graph:
            self.step(swap)
            return
        g = self.graphs.get(swap)
        if g is None:
            from ..engines.decode import CudaGraph

            mutable = [self.dec.h, self.ids, self.pos, self.tokens, self.flags]
            if self.dec.c is not None:
                mutable.append(self.dec.c)
            try:
                g = CudaGraph(lambda: self.step(swap), mutable, share=next(iter(self.graphs.values()), None))
            except RuntimeError as e:
                if self.strict:
                    raise
                warnings.warn(f"generate: the CUDA graph capture failed ({e}); running the step op by op "
                              f"(cuda_graph=False avoids the attempt, cuda_graph=True makes it an error)",
                              RuntimeWarning, stacklevel=2)
                self.graph = False
                self.step(swap)
                return
            self.graphs[swap] = g
        g()

    @torch.no_grad()
    def blocks(self, first_logits: torch.Tensor, state, length: int, gen: torch.Generator):
        """Lists of ``length`` token rows [[id] * B, ...], one list per block: the first
        drawn from ``first_logits`` (B, V), each next one from the step fed the one before.
        ValueError (``sample_categorical``'s) where a step's logits were bad."""
        self.busy = True
        try:
            yield from self._blocks(first_logits, state, length, gen)
        finally:
            self.busy = False

    def _blocks(self, first_logits, state, length, gen):
        self.dec.reset(state)
        self.flags.zero_()
        greedy = self.options[3]
        done = 0
        while done < length:
            if not self.dec.fresh():
                self.graphs = {}  # new weight buffers: the graphs read the old ones
            if not greedy:
                # 1 - U[0, 1) lies in (0, 1], as sample_categorical draws them
                torch.rand(self.u.shape, dtype=torch.float64, device=self.u.device, generator=gen,
                           out=self.u).neg_().add_(1.0)
            self.pos.zero_()
            n = min(self.block, length - done)
            for i in range(done, done + n):
                if i == 0:
                    self.draw(first_logits)
                else:
                    self._replay(self.dec.swapped(i - 1))
            tokens, flags = self.tokens[:n].tolist(), self.flags[:n].tolist()
            for j, (bad, nan) in enumerate(flags):
                if bad:
                    yield tokens[:j]
                    raise ValueError("logits contain NaN" if nan else
                                     "a row of logits is +inf or entirely -inf; logits must be "
                                     "finite with at least one > -inf per row")
            yield tokens
            done += n


def sample(checkpoint: str | Path, prime: str = "\n", length: int = 500, *, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
           greedy: bool = False, device: str | torch.device = "cpu", cuda_graph: bool | None = None
           ) -> Iterator[str]:
    """``length`` characters following ``prime`` from a checkpoint file or run folder.

    The options and the checkpoint are checked here, before the first character
    is asked for; the characters then come one at a time from :func:`generate`.
    """
    from ..runtime import resolve_device
    from .checkpoint import load_model

    check_sampling_options(temperature, top_k, top_p, length, seed, prime)
    dev = resolve_device(str(device))
    if cuda_graph and torch.device(dev).type != "cuda":
        raise OptionError("cuda_graph", f"needs a CUDA device, got device {device}")
    model, vocab, _ = load_model(checkpoint, dev)
    vocab.encode(prime)  # characters outside the vocabulary are an error now, not at the first next()
    return generate(model, vocab, prime, length, temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=seed, greedy=greedy, cuda_graph=cuda_graph)
