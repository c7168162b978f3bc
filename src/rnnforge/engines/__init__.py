"""Engines: interchangeable implementations of one recurrent layer's forward.

An engine owns no parameters. It reads the named parameters from the layer's
cells and returns ``out (T, B, D*H), h_n (D*L, B, H), c_n (D*L, B, H) or None``
for a time-major input ``x (T, B, I)``, initial states of the same shape as
``h_n`` and optional ``lengths (B,)``. Every engine computes the same function;
they differ in speed and in what they can run.

``engine="auto"`` runs the first engine in ``AUTO_ORDER`` that can run the
request. Which fast engine wins depends on the cell, device, dtype and whether
a gradient will be taken, as measured (``CPU_PREFERENCE`` below): for a layer
with ``engine="auto"``, an engine of the preference list that is not the
measured winner declines in ``why_not`` with the reason ("engine='auto' runs
fused here: ..."), so ``available()`` shows why each engine was or was not
picked. A named engine never declines for that reason. A named engine that
cannot run raises ``ValueError`` saying why: nothing falls back silently.
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
#: the order in which engine="auto" tries engines (CPU_PREFERENCE settles native against fused)
AUTO_ORDER: list[str] = []

#: engine="auto" on CPU: (cell, dtype, gradient taken) -> the fast engines, measured fastest first.
#:
#: The rule, from BENCHMARKS.md ("Engine benchmarks") (2026-11-26, 2-core x86_64 VM, torch
#: 2.13.0+cpu, 1 thread, CPU-time medians of interleaved repeats; shapes T x B x I x H =
#: 256x32x128x256 / 1000x1x128x128; ratios are torch.nn time / engine time, and native
#: runs torch.nn's own kernels, within 10% of it everywhere):
#:
#: * LSTM float32 -> native. torch runs it with oneDNN; fused is 0.58x / 0.22x forward
#:   and 0.86x / 0.29x forward+backward: the same GEMM work, and at B=1 our per-step
#:   kernel launches cost more than oneDNN's whole step.
#: * LSTM float64 -> fused when training (oneDNN has no float64 and torch's fallback
#:   loop records a per-step autograd graph: fused was 2.0x at 1000x1), else native.
#: * GRU -> fused when a gradient is taken (1.28x / 3.29x forward+backward: torch.nn's
#:   CPU GRU records a per-step autograd graph), native for forward only (fused 1.05x
#:   at B=32 but 0.83x at B=1, so native is the safe side).
#: * tanh RNN -> fused (forward 1.32x / 1.18x, forward+backward 1.32x / 3.18x).
#: * sigmoid RNN -> fused (torch has no sigmoid RNN; the reference loop is 4.9x / 9.3x slower).
#: Where the fused engine runs its loops over time in C (``fused.runs_c_loops``: batch up
#: to 64, up to 256 units) fused comes first for every cell, except an LSTM run forward only at a batch
#: above 4, where oneDNN's forward stays faster (1 thread, C loops: LSTM forward 1.06x /
#: 0.75x and forward+backward 1.04-1.10x / 1.21x torch.nn at 1000x1 / 256x32; GRU 3.5x /
#: 1.12x and 11x / 1.42x; tanh RNN 3.5x and 9.4x at 1000x1).
#: On other devices CPU_PREFERENCE says nothing and AUTO_ORDER decides (fused is CPU-only).
CPU_PREFERENCE: dict[tuple[str, torch.dtype, bool], tuple[str, ...]] = {}
for _dtype in (torch.float32, torch.float64):
    for _grad in (False, True):
        CPU_PREFERENCE[("lstm", _dtype, _grad)] = (
            ("fused", "native") if (_dtype == torch.float64 and _grad) else ("native", "fused"))
        CPU_PREFERENCE[("gru", _dtype, _grad)] = ("fused", "native") if _grad else ("native", "fused")
        CPU_PREFERENCE[("rnn_tanh", _dtype, _grad)] = ("fused", "native")
        CPU_PREFERENCE[("rnn_sigmoid", _dtype, _grad)] = ("fused",)


class _Ranked:
    """An engine as registered: its own ``why_not`` plus the measured rule of ``auto``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = engine.name

    def __getattr__(self, attr):
        return getattr(self.engine, attr)

    def why_not(self, layer, x, lengths):
        reason = self.engine.why_not(layer, x, lengths)
        if reason is None and layer.engine == "auto":
            best = preferred(layer, x, lengths)
            if best is not None and best != self.name and self.name in _preference(layer, x):
                return (f"engine='auto' runs {best} here: measured faster for this "
                        f"{layer.mode} ({x.dtype}, {x.device.type}, "
                        f"{'training' if _grad(layer, x) else 'forward only'}); see CPU_PREFERENCE")
        return reason

    def forward(self, layer, x, h0, c0, lengths):
        return self.engine.forward(layer, x, h0, c0, lengths)


def _grad(layer, x) -> bool:
    """Whether autograd will differentiate this call."""
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in layer.parameters()))


SMALL_BATCH_PREFERENCE: tuple[str, ...] = ("fused", "native")


def _preference(layer, x) -> tuple[str, ...]:
    """``x`` is time-major (T, B, I), as engines receive it."""
    if x.device.type != "cpu":
        return ()
    B = x.shape[1] if x.dim() == 3 else 1
    if fused.runs_c_loops(layer.mode, B, layer.hidden_size) and (layer.mode != "lstm" or B <= 4 or _grad(layer, x)):
        return SMALL_BATCH_PREFERENCE if layer.mode != "rnn_sigmoid" else ("fused",)
    return CPU_PREFERENCE.get((layer.mode, x.dtype, _grad(layer, x)), ())


def preferred(layer, x: torch.Tensor, lengths=None) -> str | None:
    """The measured winner for this request: the first engine of its preference that can run."""
    for name in _preference(layer, x):
        if name in ENGINES and ENGINES[name].engine.why_not(layer, x, lengths) is None:
            return name
    return None


def register(engine: Engine, *, auto_rank: int | None = None) -> Engine:
    """Add ``engine`` to the registry; ``auto_rank`` places it in AUTO_ORDER."""
    ENGINES[engine.name] = _Ranked(engine)
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
register(fused.FusedEngine(), auto_rank=1)  # after native, before reference
