"""Sequence VAE against its targets: one VAE and the plain character model, same lines, same budget.

Trains a VAE (``rnnforge.vae.train``) and the yardstick CharLM of the same width
(``objective="lm"``) for the same number of steps with the same batches, then runs
``rnnforge.vae.evaluate`` and prints each target with its figure:

* IW NLL (K samples) within 0.03 bits/char of the yardstick, KL >= 8 bits/line,
  at least half the units active, shuffled codes >= 8 bits/line worse;
* Ex1: the held-out codes' smallest per-dimension KS p-value under the fitted
  aggregate posterior above 0.01/d, while the prior's is below;
* fitted-posterior samples >= 0.05 bits/char better than prior samples under the
  yardstick, with at most 5% copied verbatim.

Variants are chosen on the validation lines (``--split val``); the chosen one is
then run once on the test lines (``--split test``).

    python benchmarks/bench_vae.py --split val --set latent=16 --set free_bits=0.75
    python benchmarks/bench_vae.py --split test --run OUT/vae --yardstick OUT/eval-val/yardstick  # once
    python benchmarks/bench_vae.py --quick                                 # a smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from rnnforge.vae.evaluate import evaluate
from rnnforge.vae.train import VAETrainConfig, train

# the variant chosen on the validation lines (docs/vae.md, Benchmark)
BASE = VAETrainConfig(hidden=128, embed=48, latent=32, batch_size=32, eval_every=100, eval_lines=200,
                      free_bits=0.625, char_dropout=0.0, progress=False, device="cpu", threads=1)


def parse_set(items: list[str]) -> dict:
    types = {f.name: f.type for f in fields(VAETrainConfig)}
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"bench_vae: unknown option {key!r}")
        default = getattr(VAETrainConfig(), key)
        out[key] = (value.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)(value) \
            if default is not None else value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000, help="training steps of the VAE and of the yardstick")
    ap.add_argument("--split", default="val", choices=("val", "test"), help="the held-out lines scored")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a VAE training option (a field of VAETrainConfig), repeatable")
    ap.add_argument("--iw-samples", type=int, default=100)
    ap.add_argument("--max-lines", type=int, default=300)
    ap.add_argument("--samples", type=int, default=600,
                    help="lines decoded from each of prior and posterior codes (200 leave a noise of about "
                         "0.03 bits/char in their difference)")
    ap.add_argument("--temperature", type=float, default=1.0, help="of the sampled lines scored by the yardstick")
    ap.add_argument("--yardstick", default=None, help="reuse the yardstick of an earlier run with the same steps")
    ap.add_argument("--run", default=None,
                    help="evaluate this trained run instead of training one (e.g. the variant chosen on "
                         "the validation lines, scored once on the test lines)")
    ap.add_argument("--out", default="/tmp/rnnforge-bench/vae")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    args = ap.parse_args()
    torch.set_num_threads(1)

    cfg = replace(BASE, steps=args.steps, out=f"{args.out}/vae", force=True, **parse_set(args.set))
    if args.quick:
        cfg = replace(cfg, hidden=32, embed=16, latent=4, steps=20, eval_every=10, eval_lines=50)
        args.iw_samples, args.max_lines, args.samples = 5, 40, 20
    load = os.getloadavg()[0]
    print(f"# bench_vae: {platform.machine()} {os.cpu_count()} cores, load {load:.1f}; VAE {cfg.cell} "
          f"H={cfg.hidden} E={cfg.embed} d={cfg.latent}, {cfg.steps} steps of {cfg.batch_size} lines; "
          f"readout sees z {cfg.readout_z}; anneal {cfg.kl_anneal} over {cfg.anneal_fraction}"
          f"{f' of each of {cfg.cycles} cycles' if cfg.kl_anneal == 'cyclical' else ''}, "
          f"free bits {cfg.free_bits}, char dropout {cfg.char_dropout}, "
          f"aggressive {cfg.aggressive}; {args.split} lines", flush=True)
    t0 = time.process_time()
    if args.run is None:
        run = train(cfg, log=lambda line: print("  " + line, flush=True)).out
    else:
        run = args.run
        print(f"  evaluating the trained run {run} (its options above are not used)")
    t_vae = time.process_time() - t0
    m = evaluate(run, f"{args.out}/eval-{args.split}", split=args.split, iw_samples=args.iw_samples,
                 max_lines=args.max_lines, samples=args.samples, temperature=args.temperature,
                 yardstick=args.yardstick, yardstick_steps=cfg.steps, log=lambda line: print("  " + line, flush=True))
    t_all = time.process_time() - t0
    print(f"CPU time: VAE training {t_vae / 60:.1f} min, all {t_all / 60:.1f} min; load {os.getloadavg()[0]:.1f}")
    d = m["latent"]
    rows = [
        ("IW NLL - yardstick (bits/char) <= 0.03", m["iw_minus_yardstick_bpc"], m["iw_minus_yardstick_bpc"] <= 0.03),
        ("KL (bits/line) >= 8", m["kl_bits_line"], m["kl_bits_line"] >= 8),
        (f"active units >= {d / 2:g}", m["active_units"], m["active_units"] >= d / 2),
        ("shuffled-code increase (bits/line) >= 8", m["shuffled_increase_bits_line"],
         m["shuffled_increase_bits_line"] >= 8),
        (f"posterior PIT min KS p > {0.01 / d:.2g}", m["posterior_p_min"], m["posterior_p_min"] > 0.01 / d),
        (f"prior PIT min KS p <= {0.01 / d:.2g}", m["prior_p_min"], m["prior_p_min"] <= 0.01 / d),
        ("prior - posterior sample bpc >= 0.05", m["prior_sample_bpc"] - m["posterior_sample_bpc"],
         m["prior_sample_bpc"] - m["posterior_sample_bpc"] >= 0.05),
        ("posterior samples copied <= 5%", m["posterior_copied"], m["posterior_copied"] <= 0.05),
    ]
    print(f"\n-ELBO {m['nelbo_bpc']:.4f}, IW NLL (K={m['iw_samples']}) {m['iw_nll_bpc']:.4f}, yardstick "
          f"{m['yardstick_bpc']:.4f} bits/char; MI {m['mi_bits']:.2f} bits; samples bpc prior "
          f"{m['prior_sample_bpc']:.3f}, posterior {m['posterior_sample_bpc']:.3f}; n = {m['lines']}")
    print("| target | figure | |\n|---|---|---|")
    for name, value, ok in rows:
        print(f"| {name} | {value:.4g} | {'met' if ok else 'missed'} |")
    print(f"(the fit itself: {m['fit_check_lines']} random training lines left out of the fit, smallest KS p "
          f"{m['fit_check_p_min']:.3g}, largest KS {m['fit_check_ks_max']:.3f})")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"result-{args.split}.json").write_text(json.dumps(
        {"config": {k: getattr(cfg, k) for k in ("cell", "hidden", "embed", "latent", "steps", "batch_size",
                                                 "readout_z", "kl_anneal", "anneal_fraction", "cycles",
                                                 "free_bits", "char_dropout", "aggressive")},
         "metrics": m, "cpu_minutes": t_all / 60, "load": load}, indent=1, default=str))


if __name__ == "__main__":
    main()
