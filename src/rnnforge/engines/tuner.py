"""``engine="auto"`` by measurement: time the candidate engines once per kind of request.

A request's key is what decides the engines' relative speed: the engines
weighed, the cell, dtype, device, torch's thread count, training (a gradient
will be taken) or inference, the layer's depth and directions, and T, B, I and
H each rounded up to a power of two (the fused engine's C-loop limits are powers of two, so no bucket
straddles them). The first request of a key times every engine of
``engines.MEASURED`` that can run it, interleaved, on scratch tensors of the
request's shape (zero initial states, no lengths; the forward, and under
autograd the backward into the layer's parameters through
``torch.autograd.grad``, so no ``.grad`` is touched; the caller's random state
is restored afterwards).

On CPU at one torch thread the calls are timed on the calling thread's CPU clock
(``time.thread_time``: every product and C loop then runs on that thread), which
other processes' load does not inflate; on a shared machine a wall-clock race of
two engines could otherwise go to either (seen at load 6 on 2 cores: the slower
by 1.5x picked). With more threads, or on another device, the wall clock.

Cost, bounded: one warm-up and at most ``REPEATS`` timed calls per candidate,
on at most ``race_steps(T, B)`` steps of the request's batch B (``MAX_STEPS``, or
more at a small batch: ``MAX_ROWS // B``, so a race never holds more than
``MAX_ROWS`` rows of input), with no further timed round once ``BUDGET_S`` seconds
have passed (one round always runs); for two candidates that is at most twelve
layer calls and, for a layer whose call takes longer than a quarter second,
four. The race runs this long because the engines' costs are not linear in T
alike: torch's oneDNN LSTM (native) takes 0.43 ms a step at T=64 and 0.71 at
T=256 (B=32, H=256, forward and backward, one AMD EPYC thread), the fused one 0.53
at both, so a race run on 64 steps picks native where fused is 1.35x faster at the
request's 256; at B=1 (T=1000, H=128) fused leads native by 4-6% on 256 steps but
by 12-14% on all 1000, so a 256-step race went to native on a loaded machine.
The measurement is logged at debug level on the ``rnnforge`` logger.

The winner is kept in memory and in ``autotune-<tag>.json`` in the kernel
cache folder (``_ckernels.kernel_dir()``: a folder only this user can write),
where ``tag`` hashes the CPU model, the kernels' instruction set (and a
forced ``RNNFORGE_GEMM``), the torch version and the rnnforge version, so an upgrade of either, or another CPU
sharing the folder, measures afresh. The file is replaced atomically.

A cached choice is checked again once per process: the first request of a key in
a process that finds the key in the file (so written by an earlier process; a
file of another CPU, instruction set, torch or rnnforge is another file and
measures afresh) times the cached engine against the runner-up of its recorded
times, one warm-up and ``RECHECK_REPEATS`` timed call each on the same scratch
tensors (four layer calls of up to ``MAX_STEPS`` steps). Where the cached engine
is still within ``TIE`` of the runner-up it stays, and the entry records when it
was last confirmed; otherwise the key is measured in full as if it were new and
the file updated. On an oversubscribed machine the cached choice is trusted
unchecked (a check there would be noise).

A measurement taken while the machine is oversubscribed (a one-minute load
average above its core count) is used by this process only and not written to
the file: other jobs' load can reverse a close race, and a cached choice is only
checked against its runner-up, never measured in full again unless it loses.

Where the fixed rule's engine (``engines.rule``) is within ``TIE`` of the
fastest measured, the rule's engine is kept: a near tie is noise, and the rule
is what tests and benchmarks see. ``TIE`` is small (1%) because what is promised
is the fastest engine within 3%, and the race's own noise takes part of that: a
3% tie kept native at 256x32x128x256 forward where fused leads by 4-6%. A
recheck of a cached choice allows ``RECHECK_TIE`` (one timed call each: a
smaller margin would measure in full again on noise).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger("rnnforge")

MAX_STEPS = 256
#: the most rows (steps x batch) a race's input holds, where a small batch allows more steps
MAX_ROWS = 8192
REPEATS = 5
BUDGET_S = 1.0
#: timed calls per engine when a cached choice is checked again (module doc)
RECHECK_REPEATS = 1
#: a measured time within this fraction of the fastest counts as a tie
TIE = 0.01
#: the tie of a recheck of a cached choice (module doc)
RECHECK_TIE = 0.03


def race_steps(T: int, B: int) -> int:
    """The steps a race runs for a request of T steps at batch B (module doc)."""
    return min(T, max(MAX_STEPS, MAX_ROWS // max(B, 1)))


_enabled: bool | None = None  # None: RNNFORGE_AUTOTUNE decides
_memory: dict[str, str] = {}


def autotune(enabled: bool | None = None) -> bool:
    """Turn measuring on (True) or off (False, then ``engines.rule`` decides ``auto``);
    None leaves it as it is. Returns whether it is on. Until called, the environment
    variable ``RNNFORGE_AUTOTUNE`` decides (``0``, ``false``, ``no`` or ``off``: off)."""
    global _enabled
    if enabled is not None:
        _enabled = bool(enabled)
    return is_enabled()


def is_enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return os.environ.get("RNNFORGE_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


def tracing(x) -> bool:
    """Whether this call is being traced or compiled (torch.compile, torch.export, torch.jit,
    fake tensors): timing means nothing there, and the choice must not depend on a clock."""
    if not isinstance(x, torch.Tensor) or torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and getattr(compiler, "is_compiling", lambda: False)():
        return True
    try:
        from torch._subclasses.fake_tensor import is_fake
    except ImportError:  # pragma: no cover  (every torch this project supports has it)
        return False
    return bool(is_fake(x)) or x.device.type == "meta"


def _bucket(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def key(layer, x: torch.Tensor, grad: bool, candidates: list[str]) -> str:
    T, B, I = x.shape if x.dim() == 3 else (x.shape[0], 1, x.shape[-1])
    return "|".join([
        "+".join(sorted(candidates)), layer.mode, str(x.dtype).removeprefix("torch."), x.device.type,
        f"threads={torch.get_num_threads()}", "train" if grad else "infer",
        f"L={layer.num_layers}", f"D={layer.num_directions}",
        f"T={_bucket(T)}", f"B={_bucket(B)}", f"I={_bucket(I)}", f"H={_bucket(layer.hidden_size)}"])


# -- the cache file --------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """What a measurement holds for: the CPU, the kernels' instruction set, a forced choice of
    product (engines/gemm.py), torch, rnnforge."""
    import rnnforge
    from .. import _ckernels

    try:
        isa = _ckernels.isa()
    except _ckernels.KernelUnavailable:
        isa = "none"
    return {"cpu": _cpu_model(), "isa": isa, "gemm": os.environ.get("RNNFORGE_GEMM", "").strip().lower() or "auto",
            "torch": torch.__version__, "rnnforge": rnnforge.__version__}


def cache_file() -> Path:
    from .. import _ckernels

    ident = machine()
    tag = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return _ckernels.kernel_dir() / f"autotune-{tag}.json"


def _read(path: Path) -> dict[str, dict]:
    """The file's choices, or {} where it is missing, unreadable or for another machine."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("machine") != machine() or not isinstance(data.get("choices"), dict):
        return {}
    return data["choices"]


def _write(path: Path, k: str, entry: dict) -> None:
    """Add one choice to the file: read, update, write a temporary file, rename over."""
    choices = _read(path)
    choices[k] = entry
    try:
        fd, tmp = tempfile.mkstemp(prefix=".autotune-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"machine": machine(), "choices": choices}, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:  # a read-only cache only costs a measurement in the next process
        log.debug("rnnforge autotune: cannot write %s: %s", path, e)


def oversubscribed() -> bool:
    """Whether other work competes for the cores now (a measurement then stays in memory)."""
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1)
    except OSError:  # no load average on this platform: trust the measurement
        return False


def clear_memory() -> None:
    """Forget this process's choices (the file stays)."""
    _memory.clear()


# -- measuring --------------------------------------------------------------------------------
def clock(x: torch.Tensor):
    """The clock a measurement on ``x`` reads (module doc)."""
    if x.device.type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def measure(layer, x: torch.Tensor, candidates: list[str], grad: bool,
            repeats: int = REPEATS) -> dict[str, float]:
    """{engine: best seconds of one call} on scratch tensors shaped like ``x`` (see the module doc)."""
    from . import ENGINES

    B = x.shape[1] if x.dim() == 3 else 1
    T = race_steps(x.shape[0], B)
    D, L, H = layer.num_directions, layer.num_layers, layer.hidden_size
    with torch.random.fork_rng(devices=[]):  # scratch draws and dropout leave the caller's RNG alone
        gen = torch.Generator().manual_seed(0)
        xs = torch.randn(T, B, x.shape[-1], generator=gen, dtype=x.dtype).to(x.device)
        xs.requires_grad_(grad and x.requires_grad)
        h0 = torch.zeros(D * L, B, H, dtype=x.dtype, device=x.device)
        c0 = torch.zeros_like(h0) if layer.mode == "lstm" else None
        wrt = ([xs] if xs.requires_grad else []) + [p for p in layer.parameters() if p.requires_grad]
        grad = grad and bool(wrt)

        def run(name):
            with torch.set_grad_enabled(grad):
                out, h_n, c_n = ENGINES[name].engine.forward(layer, xs, h0, c0, None)
                if grad:
                    torch.autograd.grad(out.sum(), wrt, allow_unused=True)

        start = time.perf_counter()
        for name in candidates:  # warm-up: first-call allocations, oneDNN primitives, the C build
            run(name)
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        now = clock(x)
        for _ in range(repeats):
            for name in candidates:
                t0 = now()
                run(name)
                samples[name].append(now() - t0)
            if time.perf_counter() - start > BUDGET_S:
                break
    return {name: min(v) for name, v in samples.items()}


def decide(times: dict[str, float], ruled: str) -> str:
    """The fastest engine; the rule's own where it is within ``TIE`` of the fastest."""
    best = min(times, key=times.get)
    if ruled in times and times[ruled] <= times[best] * (1 + TIE):
        return ruled
    return best


def _runner_up(entry: dict, cached: str, candidates: list[str]) -> str | None:
    """The candidate closest behind ``cached`` in the entry's recorded times (any other where
    none is recorded); None where ``cached`` is the only candidate."""
    others = [n for n in candidates if n != cached]
    ms = entry.get("ms") if isinstance(entry.get("ms"), dict) else {}
    timed = [n for n in others if isinstance(ms.get(n), (int, float))]
    if timed:
        return min(timed, key=lambda n: ms[n])
    return others[0] if others else None


def _recheck(layer, x, k: str, entry: dict, candidates: list[str], grad: bool) -> bool:
    """Whether the file's choice for ``k`` still holds against its runner-up (module doc)."""
    cached = entry["engine"]
    other = _runner_up(entry, cached, candidates)
    if other is None or oversubscribed():
        return True
    t0 = time.perf_counter()
    times = measure(layer, x, [cached, other], grad, repeats=RECHECK_REPEATS)
    holds = times[cached] <= times[other] * (1 + RECHECK_TIE)
    log.debug("rnnforge autotune %s: cached %s %s (%s; checked in %.0f ms)", k, cached,
              "holds" if holds else "lost", ", ".join(f"{n} {1e3 * s:.2f} ms" for n, s in times.items()),
              1e3 * (time.perf_counter() - t0))
    return holds


def tuned(layer, x: torch.Tensor, candidates: list[str], grad: bool, ruled: str) -> str:
    """The engine ``auto`` runs for this request: remembered, read from the cache file (checked
    again once per process), or measured."""
    k = key(layer, x, grad, candidates)
    name = _memory.get(k)
    if name in candidates:
        return name
    path = cache_file()
    entry = _read(path).get(k)
    if isinstance(entry, dict) and entry.get("engine") in candidates:
        if _recheck(layer, x, k, entry, candidates, grad):
            _memory[k] = entry["engine"]
            if not oversubscribed():
                _write(path, k, {**entry, "checked": round(time.time())})
            return entry["engine"]
    t0 = time.perf_counter()
    times = measure(layer, x, candidates, grad)
    name = decide(times, ruled)
    log.debug("rnnforge autotune %s: %s (%s; rule: %s; measured in %.0f ms)", k, name,
              ", ".join(f"{n} {1e3 * s:.2f} ms" for n, s in times.items()), ruled,
              1e3 * (time.perf_counter() - t0))
    _memory[k] = name
    if oversubscribed():
        log.debug("rnnforge autotune: the machine is oversubscribed; %s is kept for this process only", k)
    else:
        _write(path, k, {"engine": name, "ms": {n: round(1e3 * s, 4) for n, s in times.items()},
                         "checked": round(time.time())})
    return name
