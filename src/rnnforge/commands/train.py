"""``rnnforge train``: train a character language model on a text corpus."""

from __future__ import annotations

import argparse

from ..charlm.model import CELLS
from ..charlm.train import TrainConfig
from ..runtime import AMP

D = TrainConfig()


def add_model_and_training_flags(p: argparse.ArgumentParser, defaults: TrainConfig = D) -> None:
    """The flags shared by ``train`` and ``demo`` (the demo changes some defaults)."""
    g = p.add_argument_group("data")
    g.add_argument("--data", default=defaults.data or "pydoc-topics",
                   help="UTF-8 text file or folder; 'pydoc-topics' is Python's own documentation prose")
    g.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                   help="fraction of the text (at its end) held out for evaluation")
    g = p.add_argument_group("model")
    g.add_argument("--cell", default=defaults.cell, choices=CELLS, metavar="{" + ",".join(CELLS) + "}",
                   help="recurrent cell of the notes: rnn (sigmoid), rnn-tanh, gru or lstm")
    g.add_argument("--hidden", type=int, default=defaults.hidden, help="hidden units per layer (H)")
    g.add_argument("--layers", type=int, default=defaults.layers, help="recurrent layers")
    g.add_argument("--embed", type=int, default=defaults.embed, help="embedding size; 0 means --hidden")
    g.add_argument("--dropout", type=float, default=defaults.dropout,
                   help="dropout on the embedding, between layers and before the readout")
    g.add_argument("--tie-weights", action=argparse.BooleanOptionalAction, default=defaults.tie_weights,
                   help="share the embedding matrix with the readout delta (needs --embed = --hidden)")
    g.add_argument("--engine", default=defaults.engine,
                   help="recurrent engine: auto, reference, native, fused (see 'rnnforge bench')")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=defaults.steps, help="step budget (0: none)")
    g.add_argument("--minutes", type=float, default=defaults.minutes,
                   help="wall-clock budget in minutes (0: none); the first budget spent ends the run")
    g.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="contiguous text streams per step (per process under torchrun)")
    g.add_argument("--seq-len", type=int, default=defaults.seq_len,
                   help="characters per chunk of truncated backpropagation through time")
    g.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate of AdamW")
    g.add_argument("--min-lr-ratio", type=float, default=defaults.min_lr_ratio,
                   help="final learning rate as a fraction of --lr (cosine decay)")
    g.add_argument("--warmup", type=int, default=defaults.warmup, help="linear warm-up steps")
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                   help="AdamW weight decay on the weight matrices")
    g.add_argument("--clip", type=float, default=defaults.clip, help="gradient norm clipping threshold")
    g.add_argument("--eval-every", type=int, default=defaults.eval_every,
                   help="steps between held-out evaluations and checkpoints")
    g.add_argument("--seed", type=int, default=defaults.seed, help="random seed (runs are deterministic on CPU)")
    g = p.add_argument_group("run")
    g.add_argument("--out", default=defaults.out, help="output folder: checkpoints, metrics.csv, learning curve")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out/last.safetensors")
    g.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N")
    g.add_argument("--amp", default=defaults.amp, choices=AMP,
                   help="mixed precision on GPU: auto (bfloat16 where the GPU has it, else float16 with "
                        "loss scaling; full precision on CPU), bf16, fp16 or off")
    g.add_argument("--no-amp", dest="amp", action="store_const", const="off", help="the same as --amp off")
    g.add_argument("--threads", type=int, default=defaults.threads,
                   help="CPU threads for torch (0: torch's default)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=defaults.progress,
                   help="show a live progress bar")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=defaults.tensorboard,
                   help="also log to TensorBoard when it is installed")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a character language model",
                       description="Train one of the notes' cells as a character language model. "
                                   "Under torchrun it trains with DistributedDataParallel.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_and_training_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from ..cli import print_config
    from ..charlm.train import Trainer, config_from_args
    from ..runtime import leave_process_group

    cfg = config_from_args(args)
    quiet = int(os.environ.get("RANK", "0")) != 0
    if not quiet:
        print_config("train", args)
    trainer = Trainer(cfg, log=(lambda *a: None) if quiet else print)
    metrics = trainer.run()
    if trainer.is_main:
        print(f"step {trainer.step}: held-out {metrics['val_bpc']:.3f} bits/char "
              f"(best {trainer.best:.3f}); checkpoints in {trainer.out}")
    world = trainer.world
    del trainer  # and with it the DDP wrapper, which holds the process group
    if world > 1:
        leave_process_group()
    return 0
