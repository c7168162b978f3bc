"""Timing the engines against torch.nn: the code behind ``rnnforge bench`` and ``benchmarks/``.

For every cell and shape, the forward (no grad) and forward+backward time of
torch.nn and of every rnnforge engine that can run the request, as medians of
interleaved repeats (engines take turns, so a load spike hits them all), and
the speed ratio ``torch.nn time / engine time`` (> 1 means faster than
torch.nn). torch.nn has no sigmoid RNN, so the notes' RNN is compared with
torch.nn.RNN(tanh) on the same shape, the
nearest that torch.nn has.
"""

from __future__ import annotations

import statistics
import time

import torch

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_sigmoid")
#: T x B x I x H: a training batch, and one long sequence at batch 1
DEFAULT_SHAPES = ("256x32x128x256", "1000x1x128x128")


def parse_shape(text: str) -> tuple[int, int, int, int]:
    from .errors import OptionError

    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise OptionError("shapes", f"{text!r} is not TxBxIxH with four positive ints, "
                        f"e.g. 256x32x128x256")
    return dims  # type: ignore[return-value]


def make_modules(cell: str, I: int, H: int, engines: list[str], dtype=torch.float32):
    """(torch.nn module, {engine: rnnforge layer}) computing the same function.

    The sigmoid RNN's torch.nn yardstick is an RNN(tanh) of the same size.
    """
    import rnnforge as rf

    torch_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell, torch.nn.RNN)
    kw = {} if cell in ("lstm", "gru") else {"nonlinearity": "tanh"}
    ref = torch_cls(I, H, dtype=dtype, **kw)
    layers = {}
    for name in engines:
        if cell == "rnn_sigmoid":
            layer = rf.RNN(I, H, nonlinearity="sigmoid", engine=name, dtype=dtype)
        else:
            layer = getattr(rf, torch_cls.__name__).from_torch(ref, engine=name)
        layers[name] = layer
    return ref, layers


#: "wall": elapsed time. "cpu": CPU time of this process (time.process_time), which a busy
#: shared machine does not inflate by descheduling us; with 1 thread it is the compute time.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def set_clock(name: str) -> None:
    global _clock
    _clock = CLOCKS[name]


def _time(fn) -> float:
    t0 = _clock()
    fn()
    return _clock() - t0


def _fwd(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def _fwd_bwd(module, x):
    def run():
        out = module(x)[0]
        out.sum().backward()
    return run


def time_cell(cell: str, shape, engines: list[str], repeats: int, backward: bool = True,
              dtype=torch.float32, seed: int = 0) -> dict[str, dict[str, float]]:
    """{"torch.nn" or engine: {"fwd": ms, "fwd+bwd": ms}} -- medians of interleaved repeats."""
    T, B, I, H = shape
    torch.manual_seed(seed)
    ref, layers = make_modules(cell, I, H, engines, dtype)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    runnable = {}
    for name, layer in layers.items():
        from . import engines as registry

        if registry.ENGINES[name].why_not(layer, x, None) is None:
            runnable[name] = layer
    modules = {"torch.nn": ref, **runnable}
    kinds = {"fwd": _fwd}
    if backward:
        kinds["fwd+bwd"] = _fwd_bwd
    samples = {name: {k: [] for k in kinds} for name in modules}
    for name, m in modules.items():  # warm-up: first-call allocations, oneDNN primitive caches
        for k, make in kinds.items():
            make(m, x)()
    for _ in range(repeats):
        for name, m in modules.items():
            for k, make in kinds.items():
                samples[name][k].append(_time(make(m, x)))
    return {name: {k: 1e3 * statistics.median(v) for k, v in d.items()} for name, d in samples.items()}


def format_table(rows) -> str:
    """Markdown table from ``[(cell, shape, engine, {"fwd": ms, ...}, {"fwd": ratio, ...}[, auto])]``;
    ``auto``: what ``engine="auto"`` runs this engine for ("fwd", "fwd+bwd", both or "")."""
    lines = ["| cell | T x B x I x H | engine | fwd ms | fwd speed vs torch.nn | fwd+bwd ms | "
             "fwd+bwd speed vs torch.nn | auto runs it for |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for cell, shape, name, ms, ratio, *auto in rows:
        shp = "x".join(map(str, shape))
        cells = []
        for k in ("fwd", "fwd+bwd"):
            cells.append(f"{ms[k]:.1f}" if k in ms else "-")
            cells.append(f"{ratio[k]:.2f}x" if k in ratio else "-")
        cells.append(auto[0] if auto else "")
        lines.append(f"| {cell} | {shp} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def auto_choice(cell: str, shape, backward: bool = True, dtype=torch.float32) -> dict[str, str]:
    """{"fwd": engine, "fwd+bwd": engine}: what ``engine="auto"`` runs for this cell and shape
    (with autotune on, measured here the first time, as a user's first call would be)."""
    from . import engines as registry

    T, B, I, H = shape
    _, layers = make_modules(cell, I, H, ["auto"], dtype)
    layer = layers["auto"]
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    with torch.no_grad():
        picks = {"fwd": registry.choose(layer, x)}
    if backward:
        picks["fwd+bwd"] = registry.choose(layer, x)
    return picks


def auto_line() -> str:
    """How ``engine="auto"`` decides in this process."""
    from .engines import tuner

    if tuner.is_enabled():
        return (f"auto: the fastest engine as measured here on first use (cached in "
                f"{tuner.cache_file()}); RNNFORGE_AUTOTUNE=0 for the fixed rule")
    return "auto: the fixed rule (engines.rule; autotune off)"


def engine_table(cells, shapes, engines, repeats, backward=True, dtype=torch.float32,
                 echo=print):
    rows = []
    for shape in shapes:
        for cell in cells:
            picks = auto_choice(cell, shape, backward, dtype)
            res = time_cell(cell, shape, engines, repeats, backward, dtype)
            base = res["torch.nn"]
            label = "torch.nn (RNN tanh)" if cell == "rnn_sigmoid" else "torch.nn"
            untimed = ", ".join(f"{e} for {k} (not timed)" for k, e in picks.items() if e not in res)
            for name, ms in res.items():
                ratio = {k: base[k] / v for k, v in ms.items()}
                auto = untimed if name == "torch.nn" else ", ".join(k for k, e in picks.items() if e == name)
                rows.append((cell, shape, label if name == "torch.nn" else name, ms, ratio, auto))
                if echo:
                    echo(format_table(rows[-1:]).splitlines()[-1])
    return rows


def c_loops_line() -> str:
    """Whether the fused engine's compiled loops run here, and up to which batch."""
    from . import _ckernels
    from .engines import fused
    try:
        _ckernels.load("rnn")
    except _ckernels.KernelUnavailable as e:
        return f"fused: compiled loops unavailable ({e}); its torch-op loops run"
    from .engines import gemm

    limits = ", ".join(f"{k} <= {v}" for k, v in fused.C_LOOP_MAX_BATCH.items())
    wide = gemm.c_loop_max_hidden(fused.C_LOOP_MAX_HIDDEN)
    width = (f"hidden <= {fused.C_LOOP_MAX_HIDDEN}" if wide == fused.C_LOOP_MAX_HIDDEN
             else f"hidden <= {fused.C_LOOP_MAX_HIDDEN} (lstm <= {wide})")
    products = "oneDNN" if gemm._prefer_onednn() else "torch's BLAS"
    return (f"fused: loops over time in C at batch {limits} and {width}; "
            f"whole-sequence float32 products by {products}")
