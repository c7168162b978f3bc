"""Export benchmark: torch.compile and torch.export of rnnforge layers against eager and torch.nn.

Per cell at one shape (TxBxIxH, default 16x16x64x128, float32, CPU):

* compile s      the first call of ``torch.compile(module, fullgraph=True)`` (inductor) doing
                 forward+backward: tracing, AOTAutograd and code generation;
* fwd+bwd ms     median step time of eager and compiled, for rnnforge (engine="auto", which
                 runs the fused engine here and, compiled, its registered operators) and
                 torch.nn (for the sigmoid RNN, which torch lacks, a tanh RNN of its size;
                 compiled with ``torch._dynamo.config.allow_rnn``, without which dynamo
                 refuses torch.nn's recurrent modules under fullgraph=True);
* export s / fwd ms   torch.export with dynamic batch and time, and the exported program's
                 forward (no gradient) against the fused engine's eager forward.

torch.nn under compile unrolls its loop over time: its compile time grows with T
(minutes at T=64 on a loaded 2-core machine), hence the short default T.

Implementations take turns within each repeat and the median is reported, so
load from other processes hits all of them alike; compare ratios, not absolute ms.

    .venv/bin/python benchmarks/bench_export.py --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch._functorch.config
import torch._inductor.config

from rnnforge.bench import CELLS, make_modules, parse_shape


def _step(module, x):
    def run():
        out = module(x)[0]
        out.sum().backward()
    return run


def _forward(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def _timed_first(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def medians(fns: dict, repeats: int) -> dict:
    """{name: median ms} over ``repeats`` rounds, the functions taking turns within each round."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_cell(cell: str, T: int, B: int, I: int, H: int, repeats: int) -> dict:
    torch.manual_seed(0)
    theirs, ours = make_modules(cell, I, H, ["auto"])
    ours = ours["auto"]
    x = torch.randn(T, B, I, requires_grad=True)
    row = {}
    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True)
    row["compile s"] = _timed_first(_step(compiled, x))
    steps = {"rnnforge eager": _step(ours, x), "rnnforge compiled": _step(compiled, x)}
    # dynamo refuses torch.nn's RNN/GRU/LSTM ("Attempted to wrap RNN, GRU, or LSTM") unless
    # its experimental support is switched on
    torch._dynamo.config.allow_rnn = True
    compiled_nn = torch.compile(theirs, fullgraph=True)
    row["torch.nn compile s"] = _timed_first(_step(compiled_nn, x))
    steps.update({"torch.nn eager": _step(theirs, x), "torch.nn compiled": _step(compiled_nn, x)})
    row.update(medians(steps, repeats))
    row["engine"] = ours.engine_used
    # the exported program against the same engine in eager (auto may pick another engine for
    # a forward without gradient than the one it traced with gradients enabled)
    t0 = time.perf_counter()
    dims = ({0: torch.export.Dim("T"), 1: torch.export.Dim("B")},)
    program = torch.export.export(ours.eval(), (x.detach(),), dynamic_shapes=dims).module()
    row["export s"] = time.perf_counter() - t0
    ours.engine = "fused"
    row.update(medians({"eager fwd": _forward(ours, x.detach()),
                        "exported fwd": _forward(program, x.detach())}, repeats))
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="16x16x64x128", help="TxBxIxH")
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # cold compiles: no graph replayed from inductor's or AOTAutograd's caches of earlier runs
    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    T, B, I, H = parse_shape(args.shape)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, shape T={T} B={B} I={I} H={H}, float32, fwd+bwd in ms")
    cols = ["engine", "compile s", "torch.nn compile s", "rnnforge eager", "rnnforge compiled",
            "torch.nn eager", "torch.nn compiled", "compiled/eager", "vs torch.nn compiled",
            "export s", "eager fwd", "exported fwd"]
    print("| cell | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for cell in args.cells:
        r = bench_cell(cell, T, B, I, H, args.repeats)
        r["compiled/eager"] = r["rnnforge compiled"] / r["rnnforge eager"]
        r["vs torch.nn compiled"] = r["rnnforge compiled"] / r["torch.nn compiled"]

        def fmt(v):
            return v if isinstance(v, str) else "-" if v is None else f"{v:.2f}"
        print(f"| {cell} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
