"""The scipy distcont sweep: rnnforge's from_pdf against scipy's PINV on every
continuous distribution of scipy's own test list, with its test parameters.

For each case both samplers are built from the density only (scipy's
``NumericalInversePolynomial`` with its defaults, u_resolution 1e-10; ours by
``from_pdf`` with the same resolution, ``support`` the distribution's support
and ``center`` its median) and the u-error ``max |u - F(ppf(u))|`` of each is
measured with scipy's exact CDF ``F`` (not either sampler's own estimate) over
``--points`` midpoints ``u = (i + 1/2) / n`` plus 2 x 40 points log-spaced from
1e-12 to 0.01 toward each end. A case "reaches" 1e-10 when that error is at
most 1e-10 (1.05e-10 for rounding in F); a build that raises, or that gives
no result within ``--timeout`` seconds (scipy's PINV on anglit), counts as a
miss with its reason. Each build runs in a child process.

    python benchmarks/bench_sampling_sweep.py                # every case
    python benchmarks/bench_sampling_sweep.py --only levy arcsine
    python benchmarks/bench_sampling_sweep.py --points 100000 --csv sweep.csv
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import queue as queue_mod
import time
import warnings

import numpy as np
import scipy.stats as st
import torch
from scipy.stats import sampling as ss
from scipy.stats._distr_params import distcont

from rnnforge.sampling import from_pdf

REACH = 1.05e-10


def probe_points(n: int) -> np.ndarray:
    mid = (np.arange(n) + 0.5) / n
    tail = np.logspace(-12, -2, 40)
    return np.unique(np.concatenate([tail, mid, 1.0 - tail]))


def true_u_error(ppf, dist, u) -> float:
    x = np.asarray(ppf(u), dtype=np.float64)
    with np.errstate(all="ignore"):
        e = np.abs(dist.cdf(x) - u)
    return float(np.nanmax(e)) if np.isfinite(e).any() else math.inf


def ours(dist):
    a, b = (float(v) for v in dist.support())
    c = float(dist.median())

    def pdf(x):
        with np.errstate(all="ignore"):
            return torch.from_numpy(np.asarray(dist.pdf(x.numpy()), dtype=np.float64))
    s = from_pdf(pdf, support=(a, b), center=c if a < c < b else None)
    return lambda u: s.ppf(torch.from_numpy(u)).numpy()


def scipys(dist):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = ss.NumericalInversePolynomial(dist, random_state=0)
    return g.ppf


def _one(who, name, params, u, queue):
    torch.set_num_threads(1)
    dist = getattr(st, name)(*params)
    try:
        ppf = (ours if who == "rnnforge" else scipys)(dist)
        queue.put((true_u_error(ppf, dist, u), ""))
    except Exception as e:  # a refusal is a miss, with its reason
        queue.put((math.inf, f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"))


def run_case(name, params, u, timeout):
    """Both builds and their u-errors, each in a child process stopped after ``timeout``
    seconds (scipy's PINV does not finish on some cases, anglit among them)."""
    row = {"name": name, "params": params}
    ctx = mp.get_context("fork")
    for who in ("rnnforge", "scipy"):
        t0 = time.perf_counter()
        q = ctx.Queue()
        p = ctx.Process(target=_one, args=(who, name, params, u, q))
        p.start()
        try:
            row[who], row[who + "_msg"] = q.get(timeout=timeout)
        except queue_mod.Empty:
            row[who], row[who + "_msg"] = math.inf, f"no result in {timeout:g} s"
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
        row[who + "_s"] = time.perf_counter() - t0
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="distribution names to run (default: all)")
    ap.add_argument("--points", type=int, default=100_000, help="midpoints of the u-error probe")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per build and check")
    ap.add_argument("--csv", help="write one row per case here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    u = probe_points(args.points)
    rows = []
    for name, params in distcont:
        if args.only and name not in args.only:
            continue
        r = run_case(name, tuple(params), u, args.timeout)
        rows.append(r)
        print(f"{name:>18} {str(r['params'])[:28]:<28} ours {r['rnnforge']:9.2e} ({r['rnnforge_s']:5.1f}s) "
              f"scipy {r['scipy']:9.2e} ({r['scipy_s']:5.1f}s) {r['rnnforge_msg']}"
              f"{' | scipy: ' + r['scipy_msg'] if r['scipy_msg'] else ''}", flush=True)
    n = len(rows)
    ok_r = sum(r["rnnforge"] <= REACH for r in rows)
    ok_s = sum(r["scipy"] <= REACH for r in rows)
    print(f"\ncases reaching 1e-10: rnnforge {ok_r}/{n}, scipy PINV {ok_s}/{n}")
    only_s = [r["name"] for r in rows if r["scipy"] <= REACH < r["rnnforge"]]
    only_r = [r["name"] for r in rows if r["rnnforge"] <= REACH < r["scipy"]]
    print(f"scipy only: {only_s}\nrnnforge only: {only_r}")
    if args.csv:
        import csv
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
