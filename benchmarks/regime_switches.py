"""How a trained forecaster's sample paths switch between the two states of the suite's regime series.

    python benchmarks/regime_switches.py RUN DATA.csv

RUN is the ``--out`` of ``rnnforge forecast evaluate`` on the regime series (the suite writes
it to OUT/regime and the CSV to OUT/data/regime.csv). The series' mean is 0 or 3 (a Markov
chain that stays with probability 0.97) plus N(0, 0.5^2) noise, so a value within 1.5 of a
state's mean tells the state. From origins whose last 8 values sit in one state, the script
draws paths of the model as trained (no recalibration) and prints, step by step, the share of
them at the other state's mean against the truth's ``(1 - 0.94^k) / 2``; how many of the
paths at the other state after a step are still there one step later (the truth about 0.97:
a value there is a switch, not noise); the model's one-step forecasts right after a switch
the data holds (teacher-forced) for comparison; and where the one-step draws that leave the
current state land; and how little the one-step CRPS, the training loss, rewards a forecast
for putting the 3% at the other state.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

MEANS, NEAR = (0.0, 3.0), 1.5


def one_step_crps(levels: int = 2000, outcomes: int = 4000) -> dict:
    """Expected one-step CRPS, under the truth from a steady state, of the truth's mixture
    0.97 N(0, 0.25) + 0.03 N(3, 0.25), of the best single Gaussian, and of the truth with its
    quantiles cut at 2 (no mass at the other state): CRPS = 2 int_0^1 pinball_a(y, q(a)) da,
    on a grid of ``levels`` levels, y by ``outcomes`` of its own quantiles."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    def cdf(x):
        return 0.97 * norm.cdf(x / 0.5) + 0.03 * norm.cdf((x - 3.0) / 0.5)

    def quantiles(a):
        return np.array([brentq(lambda x: cdf(x) - v, -10.0, 10.0) for v in a])

    a = (np.arange(levels) + 0.5) / levels
    y = quantiles((np.arange(outcomes) + 0.5) / outcomes)
    q = quantiles(a)

    def crps(qs):
        d = y[:, None] - qs[None, :]
        return float(2 * np.mean(np.maximum(a * d, (a - 1) * d)))

    gauss = min(crps(m + sd * norm.ppf(a)) for m in np.linspace(0.0, 0.3, 13) for sd in np.linspace(0.45, 1.0, 23))
    return {"truth": crps(q), "best Gaussian": gauss, "truth cut at 2": crps(np.minimum(q, 2.0))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("--paths", type=int, default=2000)
    p.add_argument("--origins", type=int, default=60)
    args = p.parse_args(argv)

    from scipy.stats import norm

    from rnnforge.errors import UserError
    from rnnforge.forecast.checkpoint import load as load_forecaster
    from rnnforge.forecast.series import load

    try:
        model, meta = load_forecaster(f"{args.run}/forecaster.safetensors")
        s = load(args.data, log=lambda *_: None)[0]
    except UserError as e:
        p.exit(2, f"regime_switches.py: error: {e}\n")
    y, context, horizon = s.values, int(meta["context"]), 24
    state = (y > 1.5).astype(int)
    start = len(y) // 2  # the later half: mostly windows the model did not train on
    steady = [o for o in range(start, len(y) - horizon, 7)
              if (state[o - 8:o] == state[o - 1]).all()][:args.origins]
    g = torch.Generator().manual_seed(0)
    paths = model.sample_paths([s] * len(steady), steady, context=context, horizon=horizon,
                               num_samples=args.paths, generator=g)  # (origins, paths, horizon)
    cur = np.array([MEANS[state[o - 1]] for o in steady])[:, None]
    other = 3.0 - cur
    at_other = np.abs(paths - other[..., None]) < NEAR
    print(f"{len(steady)} origins in one state for 8 values, {args.paths} paths each")
    for k in (1, 2, 4, 8, 12, 24):
        print(f"step {k:2d}: share of paths at the other state {at_other[:, :, k - 1].mean():.3f}, "
              f"truth {(1 - 0.94 ** k) / 2:.3f}")
    for k in (1, 4, 12):
        there = at_other[:, :, k - 1]
        print(f"after step {k:2d}: of the {int(there.sum())} paths at the other state, "
              f"{at_other[:, :, k][there].mean():.3f} are still there a step later (truth about 0.97)")
    towards = (paths[:, :, 0] - cur) * np.where(cur == 0.0, 1.0, -1.0)
    print("one-step draws past 1.0 / 1.5 / 2.0 / 2.5 towards the other state (truth "
          + " / ".join(f"{0.97 * norm.sf(c / 0.5) + 0.03 * norm.sf((c - 3.0) / 0.5):.4f}" for c in (1.0, 1.5, 2.0, 2.5))
          + "):")
    for mean in MEANS:
        rows = cur[:, 0] == mean
        if rows.any():
            print(f"  from state {mean:g} ({int(rows.sum())} origins): "
                  + " / ".join(f"{(towards[rows] > c).mean():.4f}" for c in (1.0, 1.5, 2.0, 2.5)))
    after = [o for o in range(context + 9, len(y)) if state[o - 1] != state[o - 2]
             and (state[o - 9:o - 1] == state[o - 2]).all()]
    one = model.sample_paths([s] * len(after), after, context=context, horizon=1, num_samples=args.paths,
                             generator=g)[:, :, 0]
    new = np.array([MEANS[state[o - 1]] for o in after])[:, None]
    print(f"right after the {len(after)} switches in the data (teacher-forced): one-step draws in the new state "
          f"{(np.abs(one - new) < NEAR).mean():.3f}, the next values in it "
          f"{np.mean([state[o] == state[o - 1] for o in after if o < len(y)]):.3f}")
    c = one_step_crps()
    print("one-step CRPS from a steady state, expected under the truth: "
          + ", ".join(f"{k} {v:.4f}" for k, v in c.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
