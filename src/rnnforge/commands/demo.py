"""``rnnforge demo``: the main job in one command.

Trains a small LSTM character model on Python's documentation prose on the CPU
for about three minutes, prints the held-out bits per character, writes the
learning curve and prints a generated sample.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..charlm.train import TrainConfig
from .train import add_model_and_training_flags

DEMO = replace(TrainConfig(), minutes=2.5, device="cpu", out="runs/demo", eval_every=100,
               tensorboard=False, lr=4e-3, warmup=30)


def register(sub) -> None:
    p = sub.add_parser("demo", help="train a small character model for ~3 minutes and sample from it",
                       description="Train an LSTM character model on Python's documentation prose "
                                   "(shipped with Python), report held-out bits per character, write "
                                   "the learning curve and print generated text.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_and_training_flags(p, DEMO)
    p.add_argument("--sample-length", type=int, default=400, help="characters to generate at the end")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the sample")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..cli import print_config
    from ..charlm.checkpoint import load_model
    from ..charlm.generate import generate
    from ..charlm.train import Trainer, config_from_args

    print_config("demo", args)
    t0 = time.perf_counter()
    trainer = Trainer(config_from_args(args))
    metrics = trainer.run()
    print(f"\ntrained {trainer.step} steps ({trainer.elapsed:.0f} s, "
          f"{metrics['tokens_per_s']:,.0f} tokens/s, engine {trainer.engine_used})")
    print(f"held-out bits per character: {trainer.best:.3f}")
    print(f"learning curve: {trainer.out / 'learning_curve.png'}")
    model, vocab, _ = load_model(trainer.out)
    prime = "The "
    text = "".join(generate(model, vocab, prime, args.sample_length, temperature=args.temperature,
                            seed=args.seed))
    print(f"\nsample (temperature {args.temperature}, seed {args.seed}):\n{'-' * 60}\n{prime}{text}\n{'-' * 60}")
    print(f"done in {time.perf_counter() - t0:.0f} s; sample more with: "
          f"rnnforge sample {trainer.out} --length 1000")
    return 0
