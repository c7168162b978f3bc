"""``rnnforge vae train | sample | interpolate | evaluate | demo``: the recurrent VAE of Bowman et al. 2016.

Only generated lines go to stdout for ``sample`` and ``interpolate`` (the same
seed prints the same bytes); the resolved configuration and messages go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, fields, replace

from ..vae.model import CELLS
from ..vae.train import ANNEAL, VAETrainConfig
from .train import HelpFormatter, add_schedule_flags, flag_adder

D = VAETrainConfig()
DEMO = replace(D, hidden=128, embed=48, latent=16, minutes=1.5, eval_every=100, eval_lines=200,
               free_bits=0.25, out="runs/vae-demo", device="cpu")


def add_train_flags(p: argparse.ArgumentParser, defaults: VAETrainConfig = D) -> None:
    """Every option of VAETrainConfig defaults to None: a fresh run fills it in from ``defaults``,
    a resumed one from its checkpoint."""
    add = flag_adder(defaults)
    g = p.add_argument_group("data")
    add(g, "--data", "UTF-8 file of lines; 'pydoc-topics' is the lines of Python's documentation prose")
    add(g, "--max-len", "the longest line the model takes, in characters", type=int)
    g = p.add_argument_group("model")
    add(g, "--cell", "recurrent cell of encoder and decoder", choices=CELLS, metavar="{" + ",".join(CELLS) + "}")
    add(g, "--hidden", "hidden units per layer of encoder and decoder", type=int)
    add(g, "--layers", "recurrent layers", type=int)
    add(g, "--embed", "character embedding size", type=int)
    add(g, "--latent", "dimensions of the code z", type=int)
    add(g, "--bidirectional", "read the line both ways in the encoder", action=argparse.BooleanOptionalAction)
    add(g, "--engine", "recurrent engine: auto, reference, native, fused")
    add(g, "--readout-z", "the decoder's readout sees z beside its state, not the state alone",
        action=argparse.BooleanOptionalAction)
    g = p.add_argument_group("against posterior collapse")
    add(g, "--kl-anneal", "KL weight schedule: none, linear (Bowman et al. 2016) or cyclical (Fu et al. 2019)",
        choices=ANNEAL)
    add(g, "--anneal-fraction", "fraction of the budget (linear) or of each cycle (cyclical) over which "
                                "the KL weight rises from 0 to 1", type=float)
    add(g, "--cycles", "cycles of the cyclical schedule", type=int)
    add(g, "--free-bits", "free bits per latent dimension (Kingma et al. 2016); 0: off", type=float)
    add(g, "--char-dropout", "probability of replacing a decoder input character by the mask "
                             "(training only)", type=float)
    add(g, "--aggressive", "fraction of the budget with aggressive encoder updates (He et al. 2019); 0: off",
        type=float)
    add(g, "--aggressive-steps", "encoder-only updates before each joint update while aggressive", type=int)
    g = p.add_argument_group("training")
    add_schedule_flags(g, add)
    add(g, "--batch-size", "lines per step", type=int)
    add(g, "--eval-lines", "validation lines scored at each evaluation", type=int)
    add(g, "--seed", "random seed (runs are deterministic on CPU)", type=int)
    g = p.add_argument_group("run")
    add(g, "--out", "output folder: checkpoints, metrics.csv, learning curve")
    g.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (its options come from the checkpoint)")
    g.add_argument("--force", action="store_true", help="start over in an --out folder that holds a run")
    add(g, "--device", "auto, cpu, cuda or cuda:N")
    add(g, "--threads", "CPU threads for torch (0: torch's default)", type=int)
    add(g, "--progress", "show a live progress bar", action=argparse.BooleanOptionalAction)
    add(g, "--tensorboard", "also log to TensorBoard when it is installed", action=argparse.BooleanOptionalAction)


def add_eval_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="test", choices=("test", "val"), help="the held-out lines to score")
    p.add_argument("--iw-samples", type=int, default=100,
                   help="importance samples per line for the NLL bound (time grows with it)")
    p.add_argument("--max-lines", type=int, default=500, help="held-out lines scored (time grows with it)")
    p.add_argument("--samples", type=int, default=200, help="lines generated from each of prior and posterior")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of those lines")
    p.add_argument("--yardstick", default=None,
                   help="a yardstick run folder from an earlier evaluate (default: train one)")
    p.add_argument("--yardstick-steps", type=int, default=None,
                   help="the yardstick's step budget (default: the VAE's)")
    p.add_argument("--yardstick-minutes", type=float, default=None,
                   help="the yardstick's time budget in minutes (default: the VAE's)")
    p.add_argument("--eval-seed", dest="eval_seed", type=int, default=0, help="seed of the draws")


def register(sub) -> None:
    p = sub.add_parser("vae", help="a recurrent variational autoencoder of lines (Bowman et al. 2016)",
                       description="A sequence VAE on the notes' cells: codes drawn by inverse transform "
                                   "(Ex2), checked by the PIT (Ex1).")
    vs = p.add_subparsers(dest="vae_command", metavar="ACTION", required=True)

    t = vs.add_parser("train", help="train a sequence VAE", formatter_class=HelpFormatter)
    add_train_flags(t)
    t.set_defaults(func=run_train)

    s = vs.add_parser("sample", help="decode lines from prior or fitted-posterior codes",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("run", help="a run folder of 'vae train' (its best checkpoint) or a checkpoint file")
    s.add_argument("--from", dest="source", default="prior", choices=("prior", "posterior"),
                   help="draw the codes from the N(0, I) prior or the fitted aggregate posterior")
    s.add_argument("--n", type=int, default=10, help="lines to generate")
    s.add_argument("--temperature", type=float, default=1.0, help="divides the logits of each character")
    s.add_argument("--greedy", action="store_true", help="take the most likely character at each step")
    s.add_argument("--seed", type=int, default=None, help="random seed; the same seed prints the same lines")
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.set_defaults(func=run_sample)

    i = vs.add_parser("interpolate", help="decode points on the line between two lines' codes",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    i.add_argument("run", help="a run folder of 'vae train' or a checkpoint file")
    i.add_argument("line_a", help="the first line")
    i.add_argument("line_b", help="the second line")
    i.add_argument("--steps", type=int, default=5, help="points from the first code to the second, ends included")
    i.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    i.set_defaults(func=run_interpolate)

    e = vs.add_parser("evaluate", help="bounds, latent use, PIT of the codes, sample quality",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("run", help="a run folder of 'vae train' or a checkpoint file")
    e.add_argument("--out", required=True, help="folder for report.md, metrics.csv and the PNGs")
    add_eval_flags(e)
    e.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    e.set_defaults(func=run_evaluate)

    d = vs.add_parser("demo", help="train a small VAE for 1.5 minutes, evaluate it briefly, show samples (about 3 minutes)",
                      formatter_class=HelpFormatter)
    add_train_flags(d, DEMO)
    d.set_defaults(func=run_demo)


def run_config(args, defaults: VAETrainConfig = D) -> VAETrainConfig:
    from ..vae.train import resolve_config

    names = {f.name for f in fields(VAETrainConfig)}
    return resolve_config({k: v for k, v in vars(args).items() if k in names}, defaults)


def start(cfg: VAETrainConfig):
    from ..errors import UserError
    from ..runlog import RunExists
    from ..vae.train import train

    try:
        return train(cfg)
    except RunExists as e:
        raise UserError(f"{e.out} holds a run ({', '.join(e.files)}); use --resume to continue "
                        f"or --force to start over") from None


def run_train(args) -> int:
    from ..cli import print_config

    cfg = run_config(args)
    cfg.validate()
    print_config("vae train", argparse.Namespace(**asdict(cfg)))
    r = start(cfg)
    print(f"step {r.step}: held-out -ELBO {r.metrics.get('val_nelbo_bpc', float('nan')):.3f} bits/char "
          f"(best {r.best:.3f}); checkpoints and the fitted aggregate posterior in {r.out}")
    return 0


def run_sample(args) -> int:
    from ..cli import print_config
    from ..vae.evaluate import sample

    lines = sample(args.run, args.n, source=args.source, temperature=args.temperature, greedy=args.greedy,
                   seed=args.seed, device=args.device)
    print_config("vae sample", args, file=sys.stderr)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def run_interpolate(args) -> int:
    from ..cli import print_config
    from ..vae.evaluate import interpolate

    lines = interpolate(args.run, args.line_a, args.line_b, args.steps, device=args.device)
    print_config("vae interpolate", args, file=sys.stderr)
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def _evaluate(args, run, out, log=print):
    from ..vae.evaluate import evaluate

    return evaluate(run, out, split=args.split, iw_samples=args.iw_samples, max_lines=args.max_lines,
                    samples=args.samples, temperature=args.temperature, yardstick=args.yardstick,
                    yardstick_steps=args.yardstick_steps, yardstick_minutes=args.yardstick_minutes,
                    seed=args.eval_seed, device=args.device, log=log)


def run_evaluate(args) -> int:
    from ..cli import print_config
    from ..vae.evaluate import check_options

    check_options(args.iw_samples, args.max_lines, args.samples, args.temperature, args.split)
    print_config("vae evaluate", args)
    m = _evaluate(args, args.run, args.out)
    print(f"-ELBO {m['nelbo_bpc']:.3f}, IW NLL {m['iw_nll_bpc']:.3f}, yardstick {m['yardstick_bpc']:.3f} "
          f"bits/char; KL {m['kl_bits_line']:.1f} bits/line; {m['active_units']}/{m['latent']} active")
    return 0


def run_demo(args) -> int:
    import time
    from pathlib import Path

    from ..cli import print_config
    from ..vae.evaluate import interpolate, sample

    cfg = run_config(args, DEMO)
    cfg.validate()
    print_config("vae demo", argparse.Namespace(**asdict(cfg)))
    t0 = time.perf_counter()
    r = start(cfg)
    ev = argparse.Namespace(split="val", iw_samples=20, max_lines=150, samples=100, temperature=1.0,
                            yardstick=None, yardstick_steps=None,
                            yardstick_minutes=min(0.5, cfg.minutes) if cfg.minutes else None,
                            eval_seed=0, device=cfg.device)
    m = _evaluate(ev, r.out, Path(r.out) / "evaluation")
    print(f"\n-ELBO {m['nelbo_bpc']:.3f} bits/char, IW NLL (K=20) {m['iw_nll_bpc']:.3f}, yardstick "
          f"{m['yardstick_bpc']:.3f}; KL {m['kl_bits_line']:.1f} bits/line, {m['active_units']}/"
          f"{m['latent']} active, shuffled codes +{m['shuffled_increase_bits_line']:.1f} bits/line")
    print(f"PIT of held-out codes, smallest KS p-value: prior {m['prior_p_min']:.2g}, fitted posterior "
          f"{m['posterior_p_min']:.2g} (Bonferroni bound {m['bonferroni']:.2g})")
    for source in ("prior", "posterior"):
        print(f"\nfrom the {source}:")
        for line in sample(r.out, 4, source=source, seed=cfg.seed):
            print(f"  {line}")
    print("\ninterpolation:")
    for line in interpolate(r.out, "The return statement leaves the current function call.",
                            "A class definition defines a class object.", 5):
        print(f"  {line}")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s; report in {Path(r.out) / 'evaluation' / 'report.md'}")
    return 0
