"""``rnnforge sample``: generate text from a trained character model."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained character model",
                       description="Stream text from a checkpoint, each character drawn by inverse "
                                   "transform sampling of the predicted distribution.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file, or a run folder (its best checkpoint is used)")
    p.add_argument("--prime", default="\n", help="text to start from (characters must be in the vocabulary)")
    p.add_argument("--length", type=int, default=500, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="divides the logits: < 1 is more conservative, > 1 more varied")
    p.add_argument("--top-k", type=int, default=None, help="keep only the k most likely characters")
    p.add_argument("--top-p", type=float, default=None,
                   help="keep the smallest set of characters whose probability reaches p")
    p.add_argument("--seed", type=int, default=None, help="random seed; the same seed gives the same text")
    p.add_argument("--greedy", action="store_true", help="always take the most likely character")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import print_config
    from ..charlm.checkpoint import load_model
    from ..charlm.generate import check_sampling_options, generate
    from ..runtime import resolve_device

    print_config("sample", args)
    check_sampling_options(args.temperature, args.top_k, args.top_p)  # fail before loading anything
    model, vocab, meta = load_model(args.checkpoint, resolve_device(args.device))
    out = sys.stdout
    out.write(args.prime)
    for ch in generate(model, vocab, args.prime, args.length, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed, greedy=args.greedy):
        out.write(ch)
        out.flush()
    out.write("\n")
    return 0
