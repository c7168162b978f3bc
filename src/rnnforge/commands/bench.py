"""``rnnforge bench``: the engine table on this machine (timing code in ``rnnforge.bench``)."""

from __future__ import annotations

import argparse

from ..bench import CELLS, CLOCKS, DEFAULT_SHAPES

_DESCRIPTION = ("Time the forward and forward+backward of torch.nn and of every rnnforge engine that "
                "can run each cell and shape (medians of interleaved repeats) and print the speed "
                "ratio torch.nn time / engine time; > 1 is faster than torch.nn. The notes' sigmoid "
                "RNN is compared with torch.nn.RNN(tanh) of the same size.")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time every engine against torch.nn on this machine",
        description=_DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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


def run(args) -> int:
    import torch

    from .. import engines as registry
    from ..bench import auto_line, c_loops_line, engine_table, format_table, parse_shape, set_clock
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
    print(c_loops_line())
    print(auto_line())
    print(format_table([]))
    engine_table(args.cells, shapes, engines, args.repeats, not args.no_backward,
                 getattr(torch, args.dtype))
    return 0
