"""The fused engine's whole-sequence products: torch's BLAS or oneDNN, whichever is faster here.

torch's CPU matrix product runs its BLAS (MKL in the x86 wheels), which picks
its kernels by CPU vendor: on an AMD EPYC with AVX-512 it runs (4096 x 256) x
(256 x 1024) in float32 at about 90 GFLOP/s on one thread, where oneDNN (which
torch ships for its own LSTM kernels, and which picks its kernels from the
CPU's features) runs it at about 205. The fused engine's large products (the
input projection of all steps where the C loops do not form it themselves, the
weight and input gradients) therefore go through :func:`mm` / :func:`addmm`,
which use oneDNN's product (``torch.ops.mkldnn._linear_pointwise``, exact
float32, no reduced precision) where it is the faster of the two on this machine.
oneDNN's product takes its left operand contiguous: a transposed one (``dG^T`` of
the weight gradients) is computed as ``(b^T a^T)^T``, copying the narrower ``b``.

Which is faster is measured once per process and thread count, the first time
a float32 product of at least ``MIN_FLOPS`` comes: both run a fixed
(1024 x 256) x (256 x 1024) product, one warm-up and three interleaved timed
repeats each (about 2 x 0.5 GFLOP x 4, some 20-50 ms in all), logged at debug
level. With autotune off (``engines.autotune(False)``, ``RNNFORGE_AUTOTUNE=0``)
the fixed rule decides by CPU vendor (:func:`cpu_vendor`, ``vendor_id`` of
``/proc/cpuinfo``): oneDNN on the vendors of ``SLOW_BLAS_VENDORS`` (AMD: MKL runs
its generic kernels there, half oneDNN's rate on the EPYC above), torch's product
elsewhere (on Intel CPUs MKL is the product it was tuned for). The fixed rule
changes the library of the products only: the C loops' width limit stays
``fused.C_LOOP_MAX_HIDDEN``, so the engine the fixed rule picks for a layer
(``engines.rule``) is the same on every CPU. Where oneDNN is unavailable, torch's
product runs. ``RNNFORGE_GEMM=blas`` or ``onednn`` forces one (``onednn`` only
where it can run). float64 always runs torch's product (oneDNN has no float64).

Where torch's BLAS is the slower product, the fused LSTM's torch-op loops
(one BLAS product per step) also lose to its C loops at every width, so its C
loops run up to ``WIDE_C_LOOPS`` units there (:func:`c_loop_max_hidden`; measured
on the AMD EPYC, LSTM B=32, one thread: forward+backward 1.4x the torch-op loops
at H=512 and 1.3x at H=1024). Elsewhere ``fused.C_LOOP_MAX_HIDDEN`` stands, the
width past which MKL's per-step product beats the C loops' own on Intel CPUs.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time

import torch

from . import tuner

log = logging.getLogger("rnnforge")

#: below this many multiply-adds a product runs torch's (the choice does not matter there)
MIN_FLOPS = 1 << 20
#: the widest layer the fused C loops take where torch's BLAS is the slower product
WIDE_C_LOOPS = 1024
#: CPU vendors (``vendor_id``) where the fixed rule runs oneDNN's product: MKL's is the slower there
SLOW_BLAS_VENDORS = ("AuthenticAMD",)
_choice: dict[int, bool] = {}  # thread count -> oneDNN is faster


@functools.lru_cache(maxsize=None)
def _read_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    # no /proc (Windows names the vendor in its processor string, e.g. "... AuthenticAMD")
    words = platform.processor().split()
    return next((w for w in words if w in ("AuthenticAMD", "GenuineIntel")), "")


def cpu_vendor() -> str:
    """The CPU's vendor id ("AuthenticAMD", "GenuineIntel", ...), or "" where it cannot be read."""
    return _read_vendor()


def fixed_rule_onednn() -> bool:
    """The fixed rule's product (autotune off): oneDNN's on a CPU of ``SLOW_BLAS_VENDORS``."""
    return cpu_vendor() in SLOW_BLAS_VENDORS


def _onednn_op():
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        return mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


def _measure() -> bool:
    op = _onednn_op()
    a, w = torch.randn(1024, 256), torch.randn(1024, 256)
    runs = {"blas": lambda: torch.mm(a, w.t()), "onednn": lambda: op(a, w, None, "none", [], "")}
    best = dict.fromkeys(runs, float("inf"))
    for name, run in runs.items():
        run()
    for _ in range(3):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    faster = best["onednn"] < best["blas"]
    log.debug("rnnforge gemm: %s (blas %.2f ms, onednn %.2f ms, %d thread(s))",
              "onednn" if faster else "blas", 1e3 * best["blas"], 1e3 * best["onednn"],
              torch.get_num_threads())
    return faster


def _prefer_onednn(widths: bool = False) -> bool:
    """Whether oneDNN's product is the one to run here (forced, measured faster, or the
    fixed rule's by vendor; ``widths``: whether the C loops widen for it, which the fixed
    rule never does). Never while tracing: the traced graph keeps torch's product and the
    fixed width limits."""
    if _tracing_now():
        return False
    forced = os.environ.get("RNNFORGE_GEMM", "").strip().lower()
    if forced == "blas" or _onednn_op() is None:
        return False
    if forced == "onednn":
        return True
    if not tuner.is_enabled():
        return not widths and fixed_rule_onednn()
    n = torch.get_num_threads()
    if n not in _choice:
        _choice[n] = _measure()
    return _choice[n]


def _tracing_now() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and getattr(compiler, "is_compiling", lambda: False)():
        return True
    try:
        from torch._guards import detect_fake_mode
    except ImportError:  # pragma: no cover
        return False
    return detect_fake_mode() is not None


def use_onednn(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a @ b`` runs oneDNN's product."""
    if a.dtype != torch.float32 or b.dtype != torch.float32 or a.device.type != "cpu" \
            or a.dim() != 2 or b.dim() != 2 or a.shape[0] * a.shape[1] * b.shape[1] < MIN_FLOPS:
        return False
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return False  # the fused engine calls these inside its autograd.Function, without grad
    return not tuner.tracing(a) and _prefer_onednn()


def c_loop_max_hidden(default: int, family: str = "lstm") -> int:
    """The widest layer of ``family`` the fused engine's C loops take here: for the LSTM
    ``WIDE_C_LOOPS`` where torch's BLAS is the slower product, else ``default``
    (``fused.C_LOOP_MAX_HIDDEN``). The GRU's and RNNs' C loops tie with their torch-op
    loops at H=512 there (measured), so they keep ``default``."""
    if family == "lstm" and default < WIDE_C_LOOPS and _prefer_onednn(widths=True):
        return WIDE_C_LOOPS
    return default


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D ``a`` (m, k) and ``b`` (k, n), either operand possibly transposed."""
    if use_onednn(a, b):
        if not a.is_contiguous() and a.t().is_contiguous() and b.shape[1] <= a.shape[0]:
            # a transposed (the weight gradients' dG^T): oneDNN's product wants its left operand
            # contiguous, and copying b^T, the narrower one, then (b^T a^T)^T is the faster way
            # (measured, (1024 x 4096) x (4096 x 256): 0.78x the time of copying a^T)
            return _onednn_op()(b.t().contiguous(), a, None, "none", [], "").t()
        return _onednn_op()(a, b.t(), None, "none", [], "")
    return a @ b


def addmm(bias: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """``out = a @ b + bias`` (``bias`` (n,) or None), written into ``out``."""
    if use_onednn(a, b):
        out.copy_(_onednn_op()(a, b.t(), bias, "none", [], ""))
    elif bias is None:
        torch.mm(a, b, out=out)
    else:
        torch.addmm(bias, a, b, out=out)
