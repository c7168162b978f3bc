"""Engines: interchangeable implementations of one recurrent layer's forward.

An engine owns no parameters. It reads the named parameters from the layer's
cells and returns ``out (T, B, D*H), h_n (D*L, B, H), c_n (D*L, B, H) or None``
for a time-major input ``x (T, B, I)``, initial states of the same shape as
``h_n`` and optional ``lengths (B,)``. Every engine computes the same function;
they differ in speed and in what they can run.

``engine="auto"`` runs the first engine in ``AUTO_ORDER`` that can run the
request. A named engine that cannot run raises ``ValueError`` saying why:
nothing falls back silently.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Engine(Protocol):
    name: str

    def why_not(self, layer, x: torch.Tensor, lengths: torch.Tensor | None) -> str | None:
        """None when this engine can run the request, else the reason it cannot."""

    def forward(self, layer, x, h0, c0, lengths):
        """(out, h_n, c_n) for time-major ``x``; see the module docstring."""


ENGINES: dict[str, Engine] = {}
#: preference of engine="auto", fastest first (revised from measurements in BENCHMARKS.md)
AUTO_ORDER: list[str] = []


def register(engine: Engine, *, auto_rank: int | None = None) -> Engine:
    """Add ``engine`` to the registry; ``auto_rank`` places it in AUTO_ORDER."""
    ENGINES[engine.name] = engine
    if auto_rank is not None:
        AUTO_ORDER.insert(auto_rank, engine.name)
    return engine


def check_engine_name(name: str) -> None:
    if name != "auto" and name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose 'auto' or one of {sorted(ENGINES)}")


def select(layer, x: torch.Tensor, lengths: torch.Tensor | None) -> Engine:
    """The engine that will run ``layer`` on ``x``, or a ValueError saying why none can."""
    check_engine_name(layer.engine)
    if layer.engine != "auto":
        engine = ENGINES[layer.engine]
        reason = engine.why_not(layer, x, lengths)
        if reason is not None:
            raise ValueError(f"engine {engine.name!r} cannot run this {type(layer).__name__}: "
                             f"{reason}")
        return engine
    reasons = []
    for name in AUTO_ORDER:
        reason = ENGINES[name].why_not(layer, x, lengths)
        if reason is None:
            return ENGINES[name]
        reasons.append(f"{name}: {reason}")
    raise ValueError("no engine can run this request: " + "; ".join(reasons))


def available(layer, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, str | None]:
    """For each registered engine, None if it can run the request, else why not."""
    return {name: e.why_not(layer, x, lengths) for name, e in ENGINES.items()}


def decode_step(layer, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None):
    """One step of every layer for generation: ``(z (B, H), state)``.

    ``h0``/``c0`` are (L, B, H). Returns the state in ``hx`` form. Runs the fast
    decode path (``engines/decode.py``: weights packed once and cached, reused
    buffers, no autograd) for every engine choice except ``engine="reference"``,
    which steps the plain cells, one equation per line: the oracle the fast
    path is tested against.
    """
    if layer.engine != "reference":
        return decode.step(layer, x, h0, c0)
    h_n, c_n = [], []
    for l, cell in enumerate(layer.cells):
        if c0 is not None:
            x, c = cell(x, (h0[l], c0[l]))
            c_n.append(c)
        else:
            x = cell(x, h0[l])
        h_n.append(x)
    h_n = torch.stack(h_n)
    return x, ((h_n, torch.stack(c_n)) if c0 is not None else h_n)


from . import decode, fused, native, reference  # noqa: E402  (registration)

register(native.NativeEngine(), auto_rank=0)
register(reference.ReferenceEngine(), auto_rank=1)
register(fused.FusedEngine())
