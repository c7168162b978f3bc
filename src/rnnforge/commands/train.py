"""``rnnforge train``: train a character language model on a text corpus."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields

from ..charlm.model import CELLS
from ..charlm.train import TrainConfig
from ..runtime import AMP

D = TrainConfig()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default unless it is None: the training options default to None so that
    ``--resume`` can tell a flag given again from one left out, and say their default in the help."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def flag_adder(defaults):
    """``add(group, flag, help, **kw)``: a flag that defaults to None, its help showing the value
    ``defaults`` (a config dataclass) gives it, so ``--resume`` can tell a flag given again."""
    def add(g, flag, help, **kw):
        dest = flag[2:].replace("-", "_")
        shown = getattr(defaults, dest)
        if dest == "data" and shown is None:
            shown = "pydoc-topics"
        g.add_argument(flag, default=None, help=f"{help} (default: {shown})", **kw)
    return add


def add_schedule_flags(g, add) -> None:
    """The budget and AdamW schedule flags every trainer shares (``training.check_schedule``)."""
    add(g, "--steps", "step budget (0: none)", type=int)
    add(g, "--minutes", "wall-clock budget in minutes (0: none); the first budget spent ends the run",
        type=float)
    add(g, "--lr", "peak learning rate of AdamW", type=float)
    add(g, "--min-lr-ratio", "final learning rate as a fraction of --lr (cosine decay)", type=float)
    add(g, "--warmup", "linear warm-up steps", type=int)
    add(g, "--weight-decay", "AdamW weight decay on the weight matrices", type=float)
    add(g, "--clip", "gradient norm clipping threshold (0: none)", type=float)
    add(g, "--eval-every", "steps between held-out evaluations and checkpoints", type=int)


def add_model_and_training_flags(p: argparse.ArgumentParser, defaults: TrainConfig = D) -> None:
    """The flags shared by ``train`` and ``demo`` (the demo changes some defaults).

    Every option of TrainConfig defaults to None here: a fresh run fills it in
    from ``defaults``, a resumed one from its checkpoint (see run_config).
    """
    add = flag_adder(defaults)
    g = p.add_argument_group("data")
    add(g, "--data", "UTF-8 text file or folder; 'pydoc-topics' is Python's own documentation prose")
    add(g, "--glob", "in a --data folder, the files to read (a pattern, matched at any depth); "
                     "files that are not UTF-8 text are skipped with a warning", metavar="PATTERN")
    add(g, "--val-fraction", "fraction of the text (at its end) held out for evaluation", type=float)
    g = p.add_argument_group("model")
    add(g, "--cell", "recurrent cell of the notes: rnn (sigmoid), rnn-tanh, gru or lstm",
        choices=CELLS, metavar="{" + ",".join(CELLS) + "}")
    add(g, "--hidden", "hidden units per layer (H)", type=int)
    add(g, "--layers", "recurrent layers", type=int)
    add(g, "--embed", "embedding size; 0 means --hidden", type=int)
    add(g, "--dropout", "dropout on the embedding, between layers and before the readout", type=float)
    add(g, "--tie-weights", "share the embedding matrix with the readout delta (needs --embed = --hidden)",
        action=argparse.BooleanOptionalAction)
    add(g, "--engine", "recurrent engine: auto, reference, native, fused (see 'rnnforge bench')")
    g = p.add_argument_group("training")
    add_schedule_flags(g, add)
    add(g, "--batch-size", "contiguous text streams per step (per process under torchrun)", type=int)
    add(g, "--seq-len", "characters per chunk of truncated backpropagation through time", type=int)
    add(g, "--seed", "random seed (runs are deterministic on CPU)", type=int)
    g = p.add_argument_group("run")
    add(g, "--out", "output folder: checkpoints, metrics.csv, learning curve")
    g.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out: its model, data and budget come from the "
                        "checkpoint; a larger --steps or --minutes trains a finished run further")
    g.add_argument("--force", action="store_true",
                   help="start over in an --out folder that holds a run (its checkpoints and "
                        "metrics are removed)")
    add(g, "--device", "auto, cpu, cuda or cuda:N")
    add(g, "--amp", "mixed precision on GPU: auto (bfloat16 where the GPU has it, else float16 with "
                    "loss scaling; full precision on CPU), bf16, fp16 or off", choices=AMP)
    g.add_argument("--no-amp", dest="amp", action="store_const", const="off", help="the same as --amp off")
    add(g, "--threads", "CPU threads for torch (0: torch's default)", type=int)
    add(g, "--progress", "show a live progress bar", action=argparse.BooleanOptionalAction)
    add(g, "--tensorboard", "also log to TensorBoard when it is installed", action=argparse.BooleanOptionalAction)


def run_config(args, defaults: TrainConfig = D) -> TrainConfig:
    """The run's config: the flags given, the rest from ``defaults`` or, with --resume, the run."""
    from ..charlm.train import resolve_config

    names = {f.name for f in fields(TrainConfig)}
    return resolve_config({k: v for k, v in vars(args).items() if k in names}, defaults)


def start(cfg: TrainConfig, log=print):
    """``charlm.train`` with the overwrite guard's message naming the flags."""
    from ..charlm.train import RunExists, train
    from ..errors import UserError

    try:
        return train(cfg, log=log)
    except RunExists as e:
        raise UserError(f"{e.out} holds a run ({', '.join(e.files)}); use --resume to continue "
                        f"or --force to start over") from None


def register(sub) -> None:
    p = sub.add_parser("train", help="train a character language model",
                       description="Train one of the notes' cells as a character language model. "
                                   "Under torchrun it trains with DistributedDataParallel.",
                       formatter_class=HelpFormatter)
    add_model_and_training_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from ..cli import print_config

    cfg = run_config(args)
    quiet = int(os.environ.get("RANK", "0")) != 0
    if not quiet:
        print_config("train", argparse.Namespace(**asdict(cfg)))
    result = start(cfg, log=(lambda *a: None) if quiet else print)
    if result.main:
        print(f"step {result.step}: held-out {result.metrics['val_bpc']:.3f} bits/char "
              f"(best {result.best_val_bpc:.3f}); checkpoints in {result.out}")
    return 0
