"""``rnnforge demo``: the main job in one command.

Trains a small LSTM character model on Python's documentation prose on the CPU
for about three minutes, prints the held-out bits per character, writes the
learning curve and prints a generated sample.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace

from ..charlm.train import TrainConfig
from .train import HelpFormatter, add_model_and_training_flags

DEMO = replace(TrainConfig(), minutes=2.5, device="cpu", out="runs/demo", eval_every=100,
               tensorboard=False, lr=4e-3, warmup=30)


def register(sub) -> None:
    p = sub.add_parser("demo", help="train a small character model for ~3 minutes and sample from it",
                       description="Train an LSTM character model on Python's documentation prose "
                                   "(shipped with Python), report held-out bits per character, write "
                                   "the learning curve and print generated text.",
                       formatter_class=HelpFormatter)
    add_model_and_training_flags(p, DEMO)
    p.add_argument("--sample-length", type=int, default=400, help="characters to generate at the end")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the sample")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..charlm.checkpoint import LAST
    from ..charlm.generate import check_sampling_options, sample
    from ..checkpoint import read_meta
    from ..cli import print_config
    from .train import run_config, start

    cfg = run_config(args, DEMO)
    check_sampling_options(args.temperature, length=args.sample_length)  # before training, not after
    print_config("demo", argparse.Namespace(**asdict(cfg), sample_length=args.sample_length,
                                            temperature=args.temperature))
    t0 = time.perf_counter()
    result = start(cfg)
    print(f"\ntrained {result.step} steps ({result.elapsed:.0f} s, "
          f"{result.metrics['tokens_per_s']:,.0f} tokens/s, engine {result.engine})")
    print(f"held-out bits per character: {result.best_val_bpc:.3f}")
    print(f"learning curve: {result.out / 'learning_curve.png'}")
    # "The " where the corpus has those characters, else its first character
    vocab = read_meta(result.out / LAST)["vocab"]
    prime = "".join(c for c in "The " if c in vocab) or vocab[0]
    text = "".join(sample(result.out, prime, args.sample_length, temperature=args.temperature, seed=cfg.seed))
    print(f"\nsample (temperature {args.temperature}, seed {cfg.seed}):\n{'-' * 60}\n{prime}{text}\n{'-' * 60}")
    print(f"done in {time.perf_counter() - t0:.0f} s; sample more with: "
          f"rnnforge sample {result.out} --length 1000")
    return 0
