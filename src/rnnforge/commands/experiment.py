"""``rnnforge experiment``: rerunnable experiments on the notes' claims.

    rnnforge experiment memory --task adding --cells rnn gru lstm --lengths 50 200 1000
"""

from __future__ import annotations

import argparse

from ..errors import OptionError, UserError

#: what --quick runs unless a flag says otherwise: well under a minute of one CPU core
QUICK = dict(lengths=[10, 30, 100], seeds=[0], steps=1000, seconds_per_run=10.0, hidden=16)
#: the full run's defaults
FULL = dict(lengths=[50, 100, 200, 400, 1000], seeds=[0, 1, 2], steps=2000, seconds_per_run=120.0,
            hidden=32)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment", help="rerunnable experiments on the lecture notes' claims",
        description="Rerunnable experiments on the lecture notes' claims.")
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    p.set_defaults(func=lambda args: _no_experiment(p))

    m = sub.add_parser(
        "memory", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="do LSTM and GRU remember in the long and near term, and the sigmoid RNN not?",
        description="Train the notes' cells on long-term tasks (adding problem, copy) and "
                    "near-term tasks (delay, parity) over lengths T and seeds, with a fixed "
                    "budget per run, stopping once solved (error < 0.01). Writes results.md, "
                    "results.csv and results.png to --out.")
    m.add_argument("--task", default="adding",
                   help="adding (sum of two marked values, test MSE), copy (recall K symbols "
                        "after T blanks), delay (the bit of k steps ago) or parity (XOR of the "
                        "last k bits)")
    m.add_argument("--cells", nargs="+", default=["rnn", "rnn-tanh", "gru", "lstm"],
                   help="cells to compare: rnn (the notes' sigmoid RNN), rnn-tanh, gru, lstm, "
                        "lstm-fb (LSTM with biases and forget-gate bias --forget-bias); "
                        "space or comma separated")
    m.add_argument("--lengths", nargs="+", default=None,
                   help=f"sequence lengths T (copy: the blank delay) [default: {FULL['lengths']}, "
                        f"--quick: {QUICK['lengths']}]")
    m.add_argument("--seeds", nargs="+", default=None,
                   help=f"seeds, one run each per cell and T [default: {FULL['seeds']}, "
                        f"--quick: {QUICK['seeds']}]")
    m.add_argument("--steps", type=str, default=None,
                   help=f"most training steps per run [default: {FULL['steps']}, "
                        f"--quick: {QUICK['steps']}]")
    m.add_argument("--seconds-per-run", type=str, default=None,
                   help=f"most seconds of training per run, CPU time of this process on CPU, wall time on "
                        f"a GPU [default: {FULL['seconds_per_run']}, "
                        f"--quick: {QUICK['seconds_per_run']}]")
    m.add_argument("--minutes", type=str, default=None,
                   help="total time budget: sets --seconds-per-run to minutes*60 / number of runs "
                        "(an upper bound, since solved runs stop early)")
    m.add_argument("--hidden", type=str, default=None,
                   help=f"hidden units H [default: {FULL['hidden']}, --quick: {QUICK['hidden']}]")
    m.add_argument("--batch", type=str, default="50", help="sequences per training step")
    m.add_argument("--lr", type=str, default="0.01", help="Adam learning rate")
    m.add_argument("--clip", type=str, default="1.0", help="gradient-norm clipping threshold")
    m.add_argument("--eval-every", type=str, default="100",
                   help="evaluate on the test set (and stop if solved) every this many steps")
    m.add_argument("--test-size", type=str, default="500", help="sequences in the fixed test set")
    m.add_argument("--bias", action="store_true",
                   help="give every recurrent layer biases (the notes have none; lstm-fb always has)")
    m.add_argument("--forget-bias", type=str, default="1.0",
                   help="initial forget-gate bias b_f of the lstm-fb cell")
    m.add_argument("--k", type=str, default="3",
                   help="delay task: how many steps back; parity task: how many last bits")
    m.add_argument("--copy-symbols", dest="symbols", type=str, default="5",
                   help="copy task: symbols to recall (K)")
    m.add_argument("--alphabet", type=str, default="8", help="copy task: size of the alphabet (A)")
    m.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    m.add_argument("--threads", type=str, default="1",
                   help="torch CPU threads (0: torch's default); one is fastest for these small "
                        "models and leaves the other cores free")
    m.add_argument("--quick", action="store_true",
                   help=f"a run of about 20 s on one core: T = {QUICK['lengths']}, one seed, "
                        f"{QUICK['steps']} steps, H = {QUICK['hidden']}")
    m.add_argument("--out", default=None,
                   help="output folder for results.md/.csv/.png [default: runs/memory-TASK]")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=run)


def _no_experiment(parser: argparse.ArgumentParser) -> int:
    raise UserError("name an experiment: memory (see rnnforge experiment --help)")


def _words(values) -> list[str]:
    """Flatten ``["a,b", "c"]`` to ``["a", "b", "c"]``."""
    return [w for v in values for w in str(v).replace(",", " ").split()]


def _number(dest: str, text, kind=int):
    """``text`` as ``kind``; an OptionError under ``dest`` (the CLI names the flag) otherwise."""
    try:
        return kind(text)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise OptionError(dest, f"must be {what}, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..errors import check_float
    from ..experiments.memory import check_options, run_memory
    from ..runtime import set_threads

    preset = QUICK if args.quick else FULL
    args.cells = _words(args.cells)
    args.lengths = [_number("lengths", w) for w in _words(args.lengths or preset["lengths"])]
    args.seeds = [_number("seeds", w) for w in _words(args.seeds or preset["seeds"])]
    args.steps = _number("steps", args.steps if args.steps is not None else preset["steps"])
    runs = len(args.cells) * len(args.lengths) * len(args.seeds)
    if args.minutes is not None:
        minutes = check_float("minutes", _number("minutes", args.minutes, float), low=0, low_open=True)
        args.seconds_per_run = minutes * 60.0 / max(1, runs)
    else:
        args.seconds_per_run = _number(
            "seconds_per_run",
            args.seconds_per_run if args.seconds_per_run is not None else preset["seconds_per_run"],
            float)
    args.hidden = _number("hidden", args.hidden if args.hidden is not None else preset["hidden"])
    for dest in ("batch", "eval_every", "test_size", "k", "symbols", "alphabet", "threads"):
        setattr(args, dest, _number(dest, getattr(args, dest)))
    for dest in ("lr", "clip", "forget_bias"):
        setattr(args, dest, _number(dest, getattr(args, dest), float))
    args.out = args.out or f"runs/memory-{args.task}"

    from .. import cli

    options = dict(steps=args.steps, seconds_per_run=args.seconds_per_run, hidden=args.hidden,
                   batch=args.batch, lr=args.lr, clip=args.clip, eval_every=args.eval_every,
                   test_size=args.test_size, device=args.device, k=args.k,
                   symbols=args.symbols, alphabet=args.alphabet, forget_bias=args.forget_bias)
    check_options(args.task, args.cells, args.lengths, args.seeds, **options)  # before any output
    set_threads(args.threads)
    cli.print_config("experiment", args)
    results = run_memory(args.task, args.cells, args.lengths, args.seeds, bias=args.bias,
                         out=args.out, progress=not args.no_progress, **options)
    with open(f"{args.out}/results.md") as fh:
        print(fh.read(), end="")
    print(f"wrote {args.out}/results.md, results.csv, results.png")
    return 0 if results else 1
