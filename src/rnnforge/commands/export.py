"""``rnnforge export``: a trained character model or forecaster as a torch.export program or ONNX.

The file takes the network's recurrent state as inputs and returns it, with
batch and time dynamic; docs/export.md shows how to run it without rnnforge.
"""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("export", help="export a trained model as a torch.export program (.pt2) or ONNX",
                       description="Write the network of a character model or forecaster (a checkpoint "
                                   "or run folder) as a torch.export program or an ONNX file, its "
                                   "recurrent state an input and an output, batch and time dynamic.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", help="a checkpoint file, or a run folder (its best checkpoint is used)")
    p.add_argument("--format", default=None,
                   help="pt2 (torch.export.load, needs rnnforge) or onnx (onnxruntime alone); default: "
                        "the suffix of --out, else pt2")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="the file to write; default model.pt2 or model.onnx in the run folder")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--engine", default="fused",
                   help="the engine the program runs: fused (its loops over time are one operator, any "
                        "length) or auto")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cli import print_config
    from ..export import export_format, export_run

    fmt = export_format(args.format, args.out)
    path, kind = export_run(args.run, fmt, args.out, force=args.force, engine=args.engine)
    print_config("export", args, file=sys.stderr)
    print(f"rnnforge export: wrote the {kind} as {fmt} to {path}", file=sys.stderr)
    return 0
