"""``rnnforge sample``: generate text from a trained character model.

Only the text goes to stdout (``rnnforge sample RUN > out.txt`` works); the
resolved configuration and messages go to stderr.
"""

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
    p.add_argument("--cuda-graph", choices=("auto", "on", "off"), default="auto",
                   help="on a CUDA device, replay each generation step as one captured CUDA graph "
                        "(auto: on CUDA only; off: op by op, for debugging)")
    p.add_argument("--output", metavar="FILE", default=None,
                   help="write the text to FILE (replaced whole, only once complete) instead of stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..charlm.generate import sample
    from ..checkpoint import atomic_write
    from ..cli import print_config
    from ..errors import OptionError

    if args.output is not None and Path(args.output).is_dir():
        raise OptionError("output", f"{args.output} is a folder; give a file name")
    # options and checkpoint are checked first, so that an error is the only line on stderr
    chars = sample(args.checkpoint, args.prime, args.length, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, seed=args.seed, greedy=args.greedy,
                   device=args.device, cuda_graph={"auto": None, "on": True, "off": False}[args.cuda_graph])
    print_config("sample", args, file=sys.stderr)
    if args.output is not None:
        text = args.prime + "".join(chars) + "\n"
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"rnnforge sample: wrote {len(text)} characters to {args.output}", file=sys.stderr)
        return 0
    out = sys.stdout
    out.write(args.prime)
    for ch in chars:
        out.write(ch)
        out.flush()
    out.write("\n")
    return 0
