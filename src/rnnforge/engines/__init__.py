"""Engines: interchangeable implementations of one recurrent layer's forward.

An engine owns no parameters. It reads the named parameters from the layer's
cells and returns ``out (T, B, D*H), h_n (D*L, B, H), c_n (D*L, B, H) or None``
for a time-major input ``x (T, B, I)``, initial states of the same shape as
``h_n`` and optional ``lengths (B,)``. Every engine computes the same function;
they differ in speed and in what they can run.

``engine="auto"`` runs the engine :func:`choose` names: the fastest for the
request, as measured on this machine the first time a request of its kind
comes (``engines/tuner.py``: what a kind is, what a measurement costs, where it
is cached). ``autotune(False)`` or ``RNNFORGE_AUTOTUNE=0`` turns measuring off;
then, and under tracing (torch.compile, torch.export, torch.jit, fake tensors),
the fixed rule :func:`rule` decides. For a layer with ``engine="auto"``, a fast engine that the
rule passes over declines in ``why_not`` with the reason ("engine='auto' runs
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
#: the order in which engine="auto" tries engines where ``choose``'s measurements say nothing
AUTO_ORDER: list[str] = []
#: the engines the autotuner times against each other (and ``rule`` ranks on CPU)
MEASURED = ("fused", "native")


def _grad(layer, x) -> bool:
    """Whether autograd will differentiate this call."""
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in layer.parameters()))


def autotune(enabled: bool | None = None) -> bool:
    """Measure which engine ``auto`` runs (True, the default) or follow :func:`rule` (False);
    None only asks. Returns whether measuring is on. ``RNNFORGE_AUTOTUNE=0`` turns it off
    until this is called."""
    return tuner.autotune(enabled)


def pin(layer, name: str | None, *, grad: bool = True) -> None:
    """Make ``engine="auto"`` run ``name`` for ``layer``'s training requests (``grad``) or its
    inference requests (not ``grad``) wherever ``name`` can run them; None unpins. A resumed
    training run pins the engine its checkpoint recorded, so it repeats the run it continues."""
    pins = dict(getattr(layer, "_auto_pins", {}))
    if name is None:
        pins.pop(grad, None)
    else:
        check_engine_name(name)
        pins[grad] = name
    layer._auto_pins = pins


def choose(layer, x: torch.Tensor, lengths: torch.Tensor | None = None) -> str:
    """The engine ``engine="auto"`` runs for ``layer`` on the time-major ``x``.

    A pinned engine (:func:`pin`) that can run the request; else, with autotune on
    and outside tracing, the fastest of the ``MEASURED`` engines that can run it,
    measured once per kind of request (``tuner.tuned``); else :func:`rule`.
    """
    grad = _grad(layer, x)
    pinned = getattr(layer, "_auto_pins", {}).get(grad)
    if pinned is not None and ENGINES[pinned].engine.why_not(layer, x, lengths) is None:
        return pinned
    ruled = rule(layer, x, lengths)
    if not tuner.tracing(x) and tuner.is_enabled():
        candidates = [name for name in MEASURED
                      if name in ENGINES and ENGINES[name].engine.why_not(layer, x, lengths) is None]
        if len(candidates) > 1:
            return tuner.tuned(layer, x, candidates, grad, ruled)
    return ruled


def rule(layer, x: torch.Tensor, lengths: torch.Tensor | None = None) -> str:
    """The fixed rule of ``engine="auto"`` when autotune is off or under tracing.

    On CPU the fused and native engines are ranked as measured, fastest first,
    and the first of the two that can run the request wins:

    * fused wherever its loops over time run in C (``fused.runs_c_loops``: a
      batch up to 64 and up to 256 units), except an LSTM run forward only at a
      batch above 4, where torch's oneDNN forward is faster;
    * otherwise by cell: the LSTM native (oneDNN), but fused when training in
      float64 (oneDNN has no float64, and torch's fallback records an autograd
      graph per step); the GRU fused when a gradient is taken (torch's CPU GRU
      records a graph per step), native forward only; both RNNs fused (torch
      has no sigmoid RNN).

    On other devices, or where neither can run, the first engine of
    ``AUTO_ORDER`` that can run wins: on CUDA native (triton first once
    ``TRITON_IN_AUTO`` is on, where its dtypes and widths allow; it stays off until
    its kernels have run and been timed on a GPU); triton only ever on CUDA (on CPU
    it would run under Triton's interpreter, a test harness). A
    ``ValueError`` lists every engine's reason when none can. The measurements
    are BENCHMARKS.md's engine tables (``rnnforge bench``;
    ``benchmarks/bench_engines.py --parts table loops wide``).
    """
    def can(name):
        return name in ENGINES and ENGINES[name].engine.why_not(layer, x, lengths) is None

    if x.device.type == "cpu":
        mode, grad = layer.mode, _grad(layer, x)
        B = x.shape[1] if x.dim() == 3 else 1
        if fused.runs_c_loops(mode, B, layer.hidden_size):
            fused_first = mode != "lstm" or B <= 4 or grad
        else:
            fused_first = {"lstm": x.dtype == torch.float64 and grad, "gru": grad}.get(mode, True)
        for name in (MEASURED if fused_first else MEASURED[::-1]):
            if can(name):
                return name
    reasons = []
    for name in AUTO_ORDER:
        reason = _auto_skips(name, x) or ENGINES[name].engine.why_not(layer, x, lengths)
        if reason is None:
            return name
        reasons.append(f"{name}: {reason}")
    raise ValueError("no engine can run this request: " + "; ".join(reasons))


#: whether ``auto`` offers triton on CUDA. Off until ``benchmarks/gpu_check.py`` has run its
#: kernels on a GPU (correctness, then timings against cuDNN): so far they have run only
#: under Triton's interpreter, and a kernel never run on the hardware does not become the
#: default path of every CUDA layer. ``engine="triton"`` runs it by name meanwhile.
TRITON_IN_AUTO = False


def _auto_skips(name: str, x: torch.Tensor) -> str | None:
    """Why ``auto`` passes over an engine that may well run the request, or None."""
    if name != "triton":
        return None
    if not TRITON_IN_AUTO:
        return ("engine='auto' does not run triton yet: its kernels have run only under Triton's "
                "interpreter, not on a GPU (benchmarks/gpu_check.py); name engine='triton' to run it")
    if x.device.type != "cuda":
        return ("engine='auto' runs triton only on CUDA (on CPU it would run under Triton's "
                "interpreter, a test harness); name engine='triton' to run it here")
    return None


class _Ranked:
    """An engine as registered: its own ``why_not``, plus the reason ``auto`` passes it over."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = engine.name

    def __getattr__(self, attr):
        return getattr(self.engine, attr)

    def why_not(self, layer, x, lengths):
        reason = self.engine.why_not(layer, x, lengths)
        if reason is None and layer.engine == "auto":
            reason = _auto_skips(self.name, x)
        if reason is None and layer.engine == "auto" and self.name in MEASURED and x.device.type == "cpu":
            best = choose(layer, x, lengths)
            if best != self.name:
                how = "on this machine" if tuner.is_enabled() else "by the fixed rule"
                return (f"engine='auto' runs {best} here: measured faster {how} for this "
                        f"{layer.mode} ({x.dtype}, {x.device.type}, "
                        f"{'training' if _grad(layer, x) else 'forward only'}); see engines.choose")
        return reason

    def forward(self, layer, x, h0, c0, lengths):
        return self.engine.forward(layer, x, h0, c0, lengths)


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
    return ENGINES[choose(layer, x, lengths)]


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


from . import decode, fused, native, reference, tuner  # noqa: E402  (registration)
from . import triton as triton_engine  # noqa: E402  (imports triton itself only when it runs)

register(native.NativeEngine(), auto_rank=0)
register(reference.ReferenceEngine(), auto_rank=1)
register(fused.FusedEngine(), auto_rank=1)  # after native, before reference
register(triton_engine.TritonEngine(), auto_rank=0)  # first on CUDA once TRITON_IN_AUTO is on
