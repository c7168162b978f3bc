"""``rnnforge inspect``: every gate and state of a character model on a text, as a page and numbers."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("inspect", help="look inside a character model's cells on a text (web page, plots, tables)",
                       description="Run a trained character model over a text, record every gate and state "
                                   "of every layer at every character, and write a self-contained web page "
                                   "(index.html), PNGs (heatmap, gate saturation, time constants), units.csv "
                                   "and report.md: which units track quotes, brackets, line position, ...; "
                                   "how saturated the gates are; how long each unit remembers.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file, or a run folder (its best checkpoint is used)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", dest="text_file", default=None, metavar="FILE",
                     help="a UTF-8 text file to run the model over")
    src.add_argument("--prime", dest="text", default=None, metavar="TEXT",
                     help="the text itself, given on the command line")
    src.add_argument("--held-out", action="store_true",
                     help="the held-out end of the run's training text (what is used when no text is given)")
    p.add_argument("--length", type=int, default=5000,
                   help="characters of the file or held-out text to use, from its start (0: all)")
    p.add_argument("--out", default=None, help="output folder (default: inspect/ beside the checkpoint)")
    p.add_argument("--layer", type=int, default=0, help="layer the page opens on")
    p.add_argument("--quantity", default=None,
                   help="quantity the page opens on: f, i, o, C~, C, z (LSTM); s, r, z~, z (GRU); z (RNN); "
                        "default z")
    p.add_argument("--unit", type=int, default=0, help="unit the page opens on")
    p.add_argument("--long-term", type=float, default=10.0,
                   help="a unit whose time constant (or look-back) exceeds this many characters is long-term")
    p.add_argument("--look-back", type=int, default=64,
                   help="largest distance k (characters) of the gradient look-back estimate")
    p.add_argument("--look-back-units", type=int, default=32, help="units per layer sampled for the look-back")
    p.add_argument("--look-back-positions", type=int, default=16,
                   help="steps of the text the look-back gradient is averaged over")
    p.add_argument("--page-values", type=int, default=None,
                   help="most values (bytes) the page carries; quantities beyond it stay out of the page "
                        "(default: 24 million)")
    p.add_argument("--seed", type=int, default=0, help="seed of the look-back's unit sample")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (0: torch's default); the recording is one small step after "
                        "another, where more threads mostly wait on each other")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import print_config
    from ..inspect import PAGE_VALUES, inspect_checkpoint
    from ..runtime import set_threads

    print_config("inspect", args)
    set_threads(args.threads)
    result = inspect_checkpoint(
        args.checkpoint, args.out, text=args.text, text_file=args.text_file, length=args.length,
        layer=args.layer, quantity=args.quantity, unit=args.unit, long_term=args.long_term,
        look_back=args.look_back, look_back_units=args.look_back_units,
        look_back_positions=args.look_back_positions, seed=args.seed, device=args.device,
        page_values=PAGE_VALUES if args.page_values is None else args.page_values)
    rec, an = result.recording, result.analysis
    print(f"recorded {rec.steps} characters ({rec.mode}, {rec.num_layers} x {rec.hidden_size} units) and "
          f"computed the statistics in {result.seconds_record:.1f} s; wrote the files in "
          f"{result.seconds_write:.1f} s")
    for b in an.best:
        print(f"  {b['feature']:<12} best: layer {b['layer']} {b['quantity']:<3} unit {b['unit']:<4} r = {b['r']:+.3f}")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0
