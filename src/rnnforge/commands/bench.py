"""``rnnforge bench``: the engine table on this machine.

For every cell and shape, the forward (no grad) and forward+backward time of
torch.nn and of every rnnforge engine that can run the request, as medians of
interleaved repeats (engines take turns, so a load spike hits them all), and
the speed ratio ``torch.nn time / engine time`` (> 1 means faster than
torch.nn). torch.nn has no sigmoid RNN, so the notes' RNN is compared with
torch.nn.RNN(tanh) on the same shape, the issue's yardstick.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_sigmoid")
#: the issue's shapes, T x B x I x H
DEFAULT_SHAPES = ("256x32x128x256", "1000x1x128x128")


def parse_shape(text: str) -> tuple[int, int, int, int]:
    from ..errors import UserError

    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise UserError(f"--shapes: {text!r} is not TxBxIxH with four positive ints, "
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
        from .. import engines as registry

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
    """Markdown table from ``[(cell, shape, engine, {"fwd": ms, ...}, {"fwd": ratio, ...})]``."""
    lines = ["| cell | T x B x I x H | engine | fwd ms | fwd speed vs torch.nn | fwd+bwd ms | "
             "fwd+bwd speed vs torch.nn |",
             "|---|---|---|---:|---:|---:|---:|"]
    for cell, shape, name, ms, ratio in rows:
        shp = "x".join(map(str, shape))
        cells = []
        for k in ("fwd", "fwd+bwd"):
            cells.append(f"{ms[k]:.1f}" if k in ms else "-")
            cells.append(f"{ratio[k]:.2f}x" if k in ratio else "-")
        lines.append(f"| {cell} | {shp} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def engine_table(cells, shapes, engines, repeats, backward=True, dtype=torch.float32,
                 echo=print):
    rows = []
    for shape in shapes:
        for cell in cells:
            res = time_cell(cell, shape, engines, repeats, backward, dtype)
            base = res["torch.nn"]
            label = "torch.nn (RNN tanh)" if cell == "rnn_sigmoid" else "torch.nn"
            for name, ms in res.items():
                ratio = {k: base[k] / v for k, v in ms.items()}
                rows.append((cell, shape, label if name == "torch.nn" else name, ms, ratio))
                if echo:
                    echo(format_table(rows[-1:]).splitlines()[-1])
    return rows


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time every engine against torch.nn on this machine",
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS,
                   help="cells to time")
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), metavar="TxBxIxH",
                   help="input shapes: steps x batch x input size x hidden size")
    p.add_argument("--engines", nargs="+", default=None,
                   help="engines to time; None times every registered engine")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed repeats per engine (after one warm-up); the median is shown")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads for the run; 0 keeps torch's default")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="parameter and input dtype")
    p.add_argument("--no-backward", action="store_true",
                   help="time the forward only")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (steadier on a busy "
                        "machine; with --threads 1 it is the compute time)")
    p.set_defaults(func=run)


def _c_loops_line() -> str:
    """Whether the fused engine's compiled loops run here, and up to which batch."""
    from .. import _ckernels
    from ..engines import fused
    try:
        _ckernels.load("rnn")
    except _ckernels.KernelUnavailable as e:
        return f"fused: compiled loops unavailable ({e}); its torch-op loops run"
    limits = ", ".join(f"{k} <= {v}" for k, v in fused.C_LOOP_MAX_BATCH.items())
    return f"fused: loops over time in C at batch {limits} and hidden <= {fused.C_LOOP_MAX_HIDDEN}"


def run(args) -> int:
    from .. import engines as registry
    from ..cli import print_config
    from ..errors import UserError

    shapes = [parse_shape(s) for s in args.shapes]
    if args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    if args.threads < 0:
        raise UserError("--threads must be 0 (torch's default) or a positive count")
    engines = args.engines or sorted(registry.ENGINES)
    unknown = [e for e in engines if e not in registry.ENGINES]
    if unknown:
        raise UserError(f"--engines: unknown {unknown}; registered: {sorted(registry.ENGINES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    set_clock(args.clock)
    print_config("bench", args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.clock} clock; "
          f"times are medians of {args.repeats} interleaved repeats; "
          f"speed = torch.nn time / engine time")
    print(_c_loops_line())
    print(format_table([]))
    engine_table(args.cells, shapes, engines, args.repeats, not args.no_backward,
                 getattr(torch, args.dtype))
    return 0
