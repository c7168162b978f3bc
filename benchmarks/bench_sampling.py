"""Benchmarks of rnnforge.sampling against scipy.stats.sampling and torch.

A script, not a test. Every figure is a ratio against its peer measured in the
same run (timings interleaved, best of --repeat), because the machine is shared:

1. PINV (from_pdf) vs scipy's NumericalInversePolynomial on N(0,1), Gamma(1.5),
   Beta(2,5), StudentT(3), Cauchy and a two-component Gaussian mixture with
   separated modes (density exactly 0 between): u-error of both against the true
   CDF (scipy.stats), setup time, time for --draws draws (ours: sample(); scipy: rvs()).
2. sample_categorical and the object path Categorical(logits=...).sample() (also from
   probs=) at (B=16, V=50304) (and B=1) vs torch.multinomial on softmax.
3. torch's Normal.icdf(torch.rand(...)), the analytic path, as the baseline.

    python benchmarks/bench_sampling.py                 # full run (1e7 draws)
    python benchmarks/bench_sampling.py --draws 1000000 --repeat 3
    python benchmarks/bench_sampling.py --device cuda   # our side on a GPU (scipy stays on CPU)
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import scipy
import scipy.stats as st
import torch
from scipy.stats import sampling as ss

from rnnforge.sampling import Categorical, from_distribution, from_pdf, sample_categorical

F64 = torch.float64


class _Mix:
    """0.5 N(-40, 1) + 0.5 N(40, 1): the density underflows to 0 on |x| < ~2.4."""

    def pdf(self, x):
        return 0.5 * st.norm.pdf(x, -40, 1) + 0.5 * st.norm.pdf(x, 40, 1)

    def cdf(self, x):
        return 0.5 * st.norm.cdf(x, -40, 1) + 0.5 * st.norm.cdf(x, 40, 1)


def _scipy_dist(pdf, support=None):
    class D:
        pass
    d = D()
    d.pdf = pdf
    if support is not None:
        d.support = lambda: support
    return d


SQ2PI = math.sqrt(2 * math.pi)
CASES = {
    # name: (torch pdf, support, scipy pdf, scipy support or None, true cdf)
    "N(0,1)": (lambda x: torch.exp(-0.5 * x * x), (-math.inf, math.inf),
               lambda x: np.exp(-0.5 * x * x), None, st.norm.cdf),
    "Gamma(1.5)": (lambda x: torch.sqrt(x) * torch.exp(-x), (0.0, math.inf),
                   lambda x: np.sqrt(x) * np.exp(-x), (0, np.inf), st.gamma(1.5).cdf),
    "Beta(2,5)": (lambda x: x * (1 - x) ** 4, (0.0, 1.0),
                  lambda x: x * (1 - x) ** 4, (0, 1), st.beta(2, 5).cdf),
    "StudentT(3)": (lambda x: (1 + x * x / 3) ** -2, (-math.inf, math.inf),
                    lambda x: (1 + x * x / 3) ** -2, None, st.t(3).cdf),
    "Cauchy": (lambda x: 1 / (1 + x * x), (-math.inf, math.inf),
               lambda x: 1 / (1 + x * x), None, st.cauchy.cdf),
    "Mixture N(+-40,1)": (lambda x: torch.exp(-0.5 * (x + 40) ** 2) + torch.exp(-0.5 * (x - 40) ** 2),
                          (-math.inf, math.inf), _Mix().pdf, None, _Mix().cdf),
}


def best_of(fns, repeat):
    """Interleaved timing: run each fn once per round, keep each one's best (s)."""
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def u_error_true(ppf, cdf, n=100_000):
    u = (np.arange(n) + 0.5) / n
    return float(np.abs(cdf(ppf(u)) - u).max())


def _backend(sampler):
    return "c" if sampler._kernel() is not None else "torch"


def bench_pinv(args, dev):
    rows = []
    for name, (tpdf, sup, npdf, nsup, cdf) in CASES.items():
        ours = from_pdf(tpdf, support=sup, device=dev)
        # scipy cannot start at 0 for the mixture (density exactly 0 there); given a
        # centre on one mode it builds without complaint and samples that mode only
        kw = {"center": 40.0} if name.startswith("Mixture") else {}
        try:
            theirs = ss.NumericalInversePolynomial(_scipy_dist(npdf, nsup), random_state=np.random.default_rng(0), **kw)
            their_err = u_error_true(theirs.ppf, cdf)
            t_setup = best_of([lambda: from_pdf(tpdf, support=sup, device=dev),
                               lambda: ss.NumericalInversePolynomial(_scipy_dist(npdf, nsup), **kw)],
                              max(args.repeat, 20))           # setups are short: more rounds
        except Exception as e:  # scipy refuses some densities
            theirs, their_err = None, f"setup failed: {type(e).__name__}"
            t_setup = best_of([lambda: from_pdf(tpdf, support=sup, device=dev)], max(args.repeat, 20)) + [math.nan]
        our_err = u_error_true(lambda u: ours.ppf(torch.as_tensor(u, device=dev)).cpu().numpy(), cdf)
        torch_ops = from_pdf(tpdf, support=sup, device=dev, backend="torch")
        g = torch.Generator(device=dev).manual_seed(0)
        fns = [lambda: ours.sample(args.draws, generator=g), lambda: torch_ops.sample(args.draws, generator=g)]
        if theirs is not None:
            fns.append(lambda: theirs.rvs(args.draws))
        t_draw = best_of(fns, args.repeat) + ([] if theirs is not None else [math.nan])
        rows.append((name, our_err, their_err, ours.intervals, t_setup[0], t_setup[1], t_draw[0], t_draw[2],
                     t_draw[1]))
        print(f"{name:18s} u-err ours {our_err:.2e} scipy {their_err if isinstance(their_err, str) else f'{their_err:.2e}'}"
              f" | setup ours {1e3 * t_setup[0]:.2f} ms scipy {1e3 * t_setup[1]:.2f} ms"
              f" (x{t_setup[0] / t_setup[1]:.2f})"
              f" | {args.draws:.0e} draws ours {1e3 * t_draw[0]:.0f} ms (backend {_backend(ours)};"
              f" torch ops {1e3 * t_draw[1]:.0f} ms) scipy {1e3 * t_draw[2]:.0f} ms"
              f" -> throughput x{t_draw[2] / t_draw[0]:.2f}", flush=True)
    return rows


def bench_categorical(args, dev):
    out = []
    for B in (16, 1):
        V = 50304
        logits = torch.randn(B, V, generator=torch.Generator().manual_seed(0)).to(dev)
        g = torch.Generator(device=dev).manual_seed(0)
        probs = torch.softmax(logits, -1)
        ours = lambda: sample_categorical(logits, generator=g)  # noqa: E731
        # the object path: a new distribution every step, as a language model makes one
        obj_l = lambda: Categorical(logits=logits).sample(generator=g)  # noqa: E731
        obj_p = lambda: Categorical(probs=probs).sample(generator=g)  # noqa: E731
        mult = lambda: torch.multinomial(torch.softmax(logits, -1), 1, generator=g)  # noqa: E731
        t_o, t_l, t_p, t_m = best_of([ours, obj_l, obj_p, mult], max(args.repeat, 20))
        out.append((B, V, t_o, t_l, t_p, t_m))
        print(f"categorical B={B} V={V}: sample_categorical {1e3 * t_o:.3f} ms, "
              f"Categorical(logits=).sample() {1e3 * t_l:.3f} ms, Categorical(probs=).sample() "
              f"{1e3 * t_p:.3f} ms, torch.multinomial(softmax) {1e3 * t_m:.3f} ms -> x{t_m / t_o:.1f}, "
              f"object x{t_m / t_l:.1f} (logits) x{t_m / t_p:.1f} (probs; softmax not counted)", flush=True)
    return out


def bench_analytic(args, dev):
    g = torch.Generator(device=dev).manual_seed(0)
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=F64, device=dev), torch.tensor(1.0, dtype=F64, device=dev))
    pinv = from_pdf(lambda x: torch.exp(-0.5 * x * x), device=dev)
    wrapped = from_distribution(normal)
    fns = [lambda: normal.icdf(torch.rand(args.draws, dtype=F64, device=dev, generator=g)),
           lambda: wrapped.sample(args.draws, generator=g),
           lambda: pinv.sample(args.draws, generator=g),
           lambda: torch.rand(args.draws, dtype=F64, device=dev, generator=g)]
    t = best_of(fns, args.repeat)
    print(f"analytic path, {args.draws:.0e} draws: Normal.icdf(torch.rand) {1e3 * t[0]:.0f} ms, "
          f"from_distribution(Normal).sample {1e3 * t[1]:.0f} ms, from_pdf(normal).sample {1e3 * t[2]:.0f} ms, "
          f"torch.rand alone {1e3 * t[3]:.0f} ms", flush=True)
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=10_000_000, help="draws per sampling timing (default 1e7)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved repetitions; best is kept (default 5)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads, also the compiled kernel's (default 1: on a shared "
                         "2-core VM more threads stall)")
    ap.add_argument("--device", default="cpu", help="device for rnnforge's side (default cpu)")
    ap.add_argument("--only", choices=["pinv", "categorical", "analytic"], default=None, help="run one part")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"# torch {torch.__version__}, scipy {scipy.__version__}, numpy {np.__version__}, "
          f"{platform.machine()} {platform.processor() or ''}, threads={torch.get_num_threads()}, device={dev}, "
          f"draws={args.draws}, repeat={args.repeat}, load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.only in (None, "pinv"):
        bench_pinv(args, dev)
    if args.only in (None, "categorical"):
        bench_categorical(args, dev)
    if args.only in (None, "analytic"):
        bench_analytic(args, dev)


if __name__ == "__main__":
    main()
