"""Evaluating a trained sequence VAE: bounds, latent use, Ex1 on the codes, sample quality.

All in bits, per character (the boundary after each line counts as one) and per line:

* the negative ELBO (one draw per line), its reconstruction and KL terms;
* the importance-weighted bound on -log p(x) (Burda et al. 2016) with K draws;
* active units (Burda et al.): dimensions whose ``Var_x E_q[z_j]`` exceeds 0.01;
* the mutual information I(x; z) under the aggregate posterior of the evaluated
  lines, He et al. 2019's estimator: ``E_x E_q[log q(z|x)] - E_z[log q(z)]`` with
  ``q(z)`` the mixture of the lines' posteriors;
* the shuffled-code increase: the reconstruction with each line's code given to
  another line, minus with its own (near 0 when the decoder ignores z);
* the yardstick: the plain CharLM of the same width trained on the same lines with
  the same budget (``objective="lm"``), its -log p(x);
* Ex1: held-out codes ``z ~ q(z|x)`` mapped by the prior's CDF, ``u = Phi(z_j)``,
  and by the fitted aggregate posterior's marginals, KS per dimension; and the
  same for random training lines left out of a fit of the others (the fit's own
  check: independent draws of what was fitted);
* samples decoded from prior codes and from fitted-posterior codes (Ex2), scored by
  the yardstick (bits per character; lower is more like the data), the fraction
  copied verbatim from the training lines, distinct 3- and 4-grams.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from .. import checkpoint
from ..errors import OptionError, UserError, check_float, check_int
from ..runtime import resolve_device
from ..sampling import pit_histogram, uniformity
from .checkpoint import load_lm, load_vae, resolve_checkpoint, store_posterior
from .data import batch, check_lengths, encode_lines, load_lines
from .model import LOG_2PI, log_normal
from .posterior import left_out_pit
from .train import LN2, VAETrainConfig, fit_posterior, lm_nll, train

SPLITS = ("test", "val")


def distinct_ngrams(lines: list[str], n: int) -> float:
    """Distinct character n-grams over all n-grams of ``lines`` (within lines): 1 is all different."""
    grams = [line[i:i + n] for line in lines for i in range(len(line) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def score_lines(lm, vocab, lines: list[str], device) -> float:
    """Bits per character of ``lines`` under the yardstick (boundary included); nan for none."""
    lines = [line for line in lines if line]
    if not lines:
        return float("nan")
    total = chars = 0.0
    for i in range(0, len(lines), 64):
        ids, lengths = batch(encode_lines(vocab, lines[i:i + 64]))
        total += float(lm_nll(lm, ids.to(device), lengths.to(device)).sum())
        chars += float((lengths + 1).sum())
    return total / chars / LN2


def mutual_information(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> float:
    """He et al. 2019: I(x; z) in nats from one draw z_i ~ q(z|x_i) per line (all (n, d))."""
    n, d = mu.shape
    neg_entropy = (-0.5 * d * LOG_2PI - 0.5 * (1 + logvar).sum(1)).mean()
    log_qz = []
    for i in range(0, n, 256):  # log q(z_i | x_m) for every pair, a block of z at a time
        lq = log_normal(z[i:i + 256].unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (b, n)
        log_qz.append(torch.logsumexp(lq, 1) - math.log(n))
    return float(neg_entropy - torch.cat(log_qz).mean())


def _per_dim(u: torch.Tensor) -> list:
    return [uniformity(u[:, j]) for j in range(u.shape[1])]


def check_options(iw_samples, max_lines, samples, temperature, split) -> None:
    check_int("iw_samples", iw_samples, low=1)
    check_int("max_lines", max_lines, low=2)
    check_int("samples", samples, low=1)
    check_float("temperature", temperature, low=0, low_open=True)
    if split not in SPLITS:
        raise OptionError("split", f"{split!r}: choose one of {', '.join(SPLITS)}")


def evaluate(run: str | Path, out: str | Path, *, split: str = "test", iw_samples: int = 100,
             max_lines: int = 500, samples: int = 200, temperature: float = 1.0,
             yardstick: str | Path | None = None, yardstick_steps: int | None = None,
             yardstick_minutes: float | None = None, seed: int = 0, device: str = "cpu",
             log=print) -> dict:
    """Write ``report.md``, ``metrics.csv`` and the PIT PNGs of the VAE in ``run`` into ``out``;
    returns the metrics. The yardstick is loaded from ``yardstick`` or trained into
    ``out/yardstick`` with the VAE's budget (or the one given)."""
    check_options(iw_samples, max_lines, samples, temperature, split)
    t0 = time.perf_counter()
    dev = resolve_device(device)
    path = resolve_checkpoint(run)
    model, vocab, meta, _ = load_vae(path, dev)
    saved = {k: v for k, v in meta.get("train", {}).items() if k in VAETrainConfig.__dataclass_fields__}
    cfg = replace(VAETrainConfig(), **saved)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = load_lines(cfg.data, model.config.max_len)
    held = (lines.test if split == "test" else lines.val)[:max_lines]
    enc = encode_lines(vocab, held)
    train_enc = encode_lines(vocab, lines.train)
    n, d = len(enc), model.config.latent
    log(f"evaluate: {n} {split} lines, {iw_samples} importance samples each, {samples} samples "
        f"from each of prior and posterior")

    post, z_train = fit_posterior(model, train_enc, dev, seed=seed, with_codes=True)
    store_posterior(path, post)

    g = torch.Generator(device=dev).manual_seed(seed)
    t1 = time.perf_counter()
    rec = kl = iw = shuf = chars = 0.0
    zs, mus, lvs = [], [], []
    with torch.no_grad():
        for i in range(0, n, 32):
            ids, lengths = batch(enc[i:i + 32])
            ids, lengths = ids.to(dev), lengths.to(dev)
            o = model(ids, lengths, generator=g)
            rec += float(o["rec"].sum())
            kl += float(o["kl"].sum())
            chars += float((lengths + 1).sum())
            iw += float(model.importance_nll(ids, lengths, iw_samples, generator=g).sum())
            if ids.shape[0] > 1:  # each line decoded from the next line's code
                other = model.reconstruction(ids, lengths, o["z"].roll(1, 0))
                shuf += float((other - o["rec"]).sum())
            if i == 0:
                per = time.perf_counter() - t1
                log(f"evaluate: the bounds take about {per * math.ceil(n / 32):.0f} s "
                    f"(fewer --iw-samples or --max-lines take less)")
            zs.append(o["z"].double().cpu())
            mus.append(o["mu"].double().cpu())
            lvs.append(o["logvar"].double().cpu())
    z, mu, lv = torch.cat(zs), torch.cat(mus), torch.cat(lvs)
    t_bounds = time.perf_counter() - t1

    # the yardstick: the plain character model, same lines, same width, same budget
    if yardstick is None:
        steps = cfg.steps if yardstick_steps is None else yardstick_steps
        minutes = cfg.minutes if yardstick_minutes is None else yardstick_minutes
        lm_cfg = replace(cfg, objective="lm", out=str(out / "yardstick"), force=True, resume=False,
                         progress=False, steps=steps, minutes=minutes, device=str(dev))
        log(f"evaluate: training the yardstick character model ({steps or 'no'} steps, "
            f"{minutes or 'no'} minutes) into {lm_cfg.out}")
        train(lm_cfg, log=lambda *a: None)
        yardstick = out / "yardstick"
    lm, lm_vocab, _ = load_lm(yardstick, dev)
    if lm_vocab.chars != vocab.chars:
        raise UserError(f"{yardstick}: the yardstick's vocabulary differs from the VAE's; "
                        f"train it on the same data")
    lm_bpc = score_lines(lm, vocab, held, dev)

    # Ex1 on the codes: under the prior, and under the fitted aggregate posterior
    prior_u = torch.special.ndtr(z)
    post_u = post.cdf(z)
    prior_ks, post_ks = _per_dim(prior_u), _per_dim(post_u)
    pit_histogram(prior_u.reshape(-1), out / "pit_prior.png",
                  title=f"held-out codes under the N(0, I) prior (n={n}, d={d}, pooled)")
    pit_histogram(post_u.reshape(-1), out / "pit_posterior.png",
                  title=f"held-out codes under the fitted aggregate posterior (n={n}, d={d}, pooled)")
    _ks_plot(prior_ks, post_ks, n, out / "ks_per_dimension.png")
    # the same test of the fit on training lines left out of it: random lines, so independent draws
    # of what was fitted, unlike held-out lines, whose topics (or block of a file) were never trained on
    n_fit = min(n, len(train_enc) // 2)
    fit_ks = _per_dim(left_out_pit(z_train, n_fit, generator=torch.Generator().manual_seed(seed + 2))[0])

    # Ex2: decode codes drawn from the prior and from the fitted posterior
    gs = torch.Generator().manual_seed(seed + 1)
    z_prior = torch.randn(samples, d, generator=gs, dtype=torch.float64)
    z_post = post.sample(samples, generator=gs)
    train_set = set(lines.train)
    quality = {}
    for name, zz in (("prior", z_prior), ("posterior", z_post)):
        got = [vocab.decode(x) for x in model.generate(zz.to(dev, torch.float32), temperature=temperature,
                                                       generator=torch.Generator(device=dev).manual_seed(seed))]
        quality[name] = {"bpc": score_lines(lm, vocab, got, dev),
                         "copied": sum(x in train_set for x in got) / len(got),
                         "distinct3": distinct_ngrams(got, 3), "distinct4": distinct_ngrams(got, 4),
                         "examples": got[:8]}
    elapsed = time.perf_counter() - t0

    per_line = chars / n
    m = {
        "lines": n, "split": split, "chars_per_line": per_line, "iw_samples": iw_samples,
        "nelbo_bpc": (rec + kl) / chars / LN2, "nelbo_bits_line": (rec + kl) / n / LN2,
        "rec_bpc": rec / chars / LN2, "kl_bits_line": kl / n / LN2,
        "iw_nll_bpc": iw / chars / LN2, "iw_nll_bits_line": iw / n / LN2,
        "yardstick_bpc": lm_bpc, "yardstick_bits_line": lm_bpc * per_line,
        "iw_minus_yardstick_bpc": iw / chars / LN2 - lm_bpc,
        "active_units": int((mu.var(0) > 0.01).sum()), "latent": d,
        "mi_bits": mutual_information(z, mu, lv) / LN2,
        "shuffled_increase_bits_line": shuf / n / LN2,
        "prior_ks_max": max(r.ks_statistic for r in prior_ks), "prior_p_min": min(r.ks_pvalue for r in prior_ks),
        "posterior_ks_max": max(r.ks_statistic for r in post_ks),
        "posterior_p_min": min(r.ks_pvalue for r in post_ks), "bonferroni": 0.01 / d,
        "fit_check_lines": n_fit, "fit_check_ks_max": max(r.ks_statistic for r in fit_ks),
        "fit_check_p_min": min(r.ks_pvalue for r in fit_ks),
        "prior_sample_bpc": quality["prior"]["bpc"], "posterior_sample_bpc": quality["posterior"]["bpc"],
        "prior_copied": quality["prior"]["copied"], "posterior_copied": quality["posterior"]["copied"],
        "prior_distinct3": quality["prior"]["distinct3"], "prior_distinct4": quality["prior"]["distinct4"],
        "posterior_distinct3": quality["posterior"]["distinct3"],
        "posterior_distinct4": quality["posterior"]["distinct4"],
        "samples": samples, "temperature": temperature, "seconds": elapsed, "seconds_bounds": t_bounds,
    }
    _write_csv(out / "metrics.csv", m)
    _write_report(out / "report.md", m, prior_ks, post_ks, quality, path, meta)
    log(f"evaluate: wrote report.md, metrics.csv and 3 PNGs to {out} in {elapsed:.0f} s")
    return m


def _write_csv(path: Path, m: dict) -> None:
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "value"])
            for k, v in m.items():
                w.writerow([k, v])
    checkpoint.atomic_write(path, write)


def _ks_plot(prior_ks, post_ks, n: int, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = len(prior_ks)
    fig, ax = plt.subplots(figsize=(max(6, d * 0.25), 3.5), dpi=100)
    x = torch.arange(d).numpy()
    ax.bar(x - 0.2, [r.ks_statistic for r in prior_ks], 0.4, label="under the N(0, 1) prior")
    ax.bar(x + 0.2, [r.ks_statistic for r in post_ks], 0.4, label="under the fitted aggregate posterior")
    # the KS statistic's critical value at the Bonferroni level 0.01/d (large-n approximation)
    crit = math.sqrt(-0.5 * math.log((0.01 / d) / 2)) / math.sqrt(n)
    ax.axhline(crit, color="black", lw=1, ls="--", label=f"critical value at 0.01/{d}")
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KS statistic of the PIT")
    ax.legend(fontsize=8)
    fig.tight_layout()
    checkpoint.atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _write_report(path: Path, m: dict, prior_ks, post_ks, quality, ckpt: Path, meta: dict) -> None:
    def ok(flag: bool) -> str:
        return "met" if flag else "**missed**"

    d = m["latent"]
    rows = [
        ("negative ELBO", f"{m['nelbo_bpc']:.4f}", f"{m['nelbo_bits_line']:.2f}"),
        ("  reconstruction", f"{m['rec_bpc']:.4f}", ""),
        ("  KL", "", f"{m['kl_bits_line']:.2f}"),
        (f"importance-weighted NLL (K={m['iw_samples']})", f"{m['iw_nll_bpc']:.4f}", f"{m['iw_nll_bits_line']:.2f}"),
        ("yardstick CharLM NLL", f"{m['yardstick_bpc']:.4f}", f"{m['yardstick_bits_line']:.2f}"),
        ("shuffled-code increase", "", f"{m['shuffled_increase_bits_line']:.2f}"),
        ("mutual information I(x; z)", "", f"{m['mi_bits']:.2f}"),
    ]
    text = [f"# Sequence VAE evaluation: {ckpt}", "",
            f"{m['lines']} {m['split']} lines ({m['chars_per_line']:.1f} characters each, the boundary "
            f"included), step {meta.get('step')}, model {meta.get('model')}. Took {m['seconds']:.0f} s.", "",
            "| quantity | bits/char | bits/line |", "|---|---|---|"]
    text += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text += ["", f"Active units: {m['active_units']} of {d}.", "",
             "## Targets", "",
             f"- IW NLL within 0.03 bits/char of the yardstick: {m['iw_minus_yardstick_bpc']:+.4f} "
             f"({ok(m['iw_minus_yardstick_bpc'] <= 0.03)})",
             f"- KL at least 8 bits/line: {m['kl_bits_line']:.2f} ({ok(m['kl_bits_line'] >= 8)})",
             f"- at least half the units active: {m['active_units']}/{d} ({ok(m['active_units'] >= d / 2)})",
             f"- shuffled codes at least 8 bits/line worse: {m['shuffled_increase_bits_line']:.2f} "
             f"({ok(m['shuffled_increase_bits_line'] >= 8)})",
             f"- held-out codes uniform under the fitted posterior (smallest KS p-value above 0.01/d = "
             f"{m['bonferroni']:.2g}, n = {m['lines']}): {m['posterior_p_min']:.3g} "
             f"({ok(m['posterior_p_min'] > m['bonferroni'])}); under the prior: {m['prior_p_min']:.3g} "
             f"({'rejected, as expected' if m['prior_p_min'] <= m['bonferroni'] else 'not rejected'})",
             f"- (the fit itself: {m['fit_check_lines']} random training lines left out of a fit of the "
             f"rest, smallest KS p-value {m['fit_check_p_min']:.3g}, largest KS {m['fit_check_ks_max']:.3f}; "
             f"held-out lines come from whole topics (or a block of a file) never trained on, whose "
             f"lines share codes, so their PIT also tests how far those lie from the training lines)",
             f"- posterior samples at least 0.05 bits/char better than prior samples: "
             f"{m['prior_sample_bpc'] - m['posterior_sample_bpc']:+.3f} "
             f"({ok(m['prior_sample_bpc'] - m['posterior_sample_bpc'] >= 0.05)}); copied "
             f"{m['posterior_copied']:.1%} ({ok(m['posterior_copied'] <= 0.05)})",
             "", "## Ex1: PIT of held-out codes, per dimension", "",
             "| dim | prior KS | prior p | posterior KS | posterior p |", "|---|---|---|---|---|"]
    text += [f"| {j} | {a.ks_statistic:.4f} | {a.ks_pvalue:.3g} | {b.ks_statistic:.4f} | {b.ks_pvalue:.3g} |"
             for j, (a, b) in enumerate(zip(prior_ks, post_ks))]
    text += ["", "![prior](pit_prior.png) ![posterior](pit_posterior.png) ![KS](ks_per_dimension.png)", "",
             f"## Samples (temperature {m['temperature']}, {m['samples']} of each)", "",
             "| codes from | yardstick bits/char | copied | distinct 3-grams | distinct 4-grams |",
             "|---|---|---|---|---|"]
    for name in ("prior", "posterior"):
        q = quality[name]
        text.append(f"| {name} | {q['bpc']:.3f} | {q['copied']:.1%} | {q['distinct3']:.3f} | {q['distinct4']:.3f} |")
    for name in ("prior", "posterior"):
        text += ["", f"From the {name}:", "", "```"] + quality[name]["examples"] + ["```"]
    body = "\n".join(text) + "\n"
    checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_text(body, encoding="utf-8"))


def interpolate(run: str | Path, a: str, b: str, steps: int = 5, *, greedy: bool = True,
                temperature: float = 1.0, seed: int = 0, device: str = "cpu") -> list[str]:
    """Bowman et al.'s homotopy: decode ``(1 - t) mu(a) + t mu(b)`` for ``steps`` values of t in [0, 1]."""
    check_int("steps", steps, low=2)
    check_float("temperature", temperature, low=0, low_open=True)
    model, vocab, _, _ = load_vae(run, resolve_device(device))
    for which, line in (("first", a), ("second", b)):
        if not line:
            raise UserError(f"the {which} line is empty; give a line of text")
        check_lengths([(which, line)], model.config.max_len, "the line given")
        bad = vocab.unknown(line)
        if bad:
            raise UserError(f"the {which} line holds characters outside the model's vocabulary: "
                            f"{', '.join(repr(c) for c in bad)}")
    dev = next(model.parameters()).device
    ids, lengths = batch([vocab.encode(a), vocab.encode(b)])
    with torch.no_grad():
        mu, _ = model.encode(ids.to(dev), lengths.to(dev))
    t = torch.linspace(0, 1, steps, device=dev).unsqueeze(1)
    z = (1 - t) * mu[0] + t * mu[1]  # (steps, d)
    g = torch.Generator(device=dev).manual_seed(seed)
    return [vocab.decode(x) for x in model.generate(z, greedy=greedy, temperature=temperature, generator=g)]


def sample(run: str | Path, n: int = 10, *, source: str = "prior", temperature: float = 1.0,
           greedy: bool = False, seed: int | None = None, device: str = "cpu") -> list[str]:
    """``n`` lines decoded from codes drawn from the prior N(0, I) or the fitted aggregate posterior."""
    check_int("n", n, low=1)
    check_float("temperature", temperature, low=0, low_open=True)
    if source not in ("prior", "posterior"):
        raise OptionError("source", f"{source!r}: choose prior or posterior")
    if seed is not None:
        check_int("seed", seed, low=0, high=2**63 - 1)
    model, vocab, _, post = load_vae(run, resolve_device(device))
    if source == "posterior" and post is None:
        raise UserError(f"{resolve_checkpoint(run)} holds no fitted aggregate posterior; "
                        f"run evaluate on it, or sample from the prior")
    g = torch.Generator()
    g.manual_seed(seed) if seed is not None else g.seed()
    d = model.config.latent
    z = torch.randn(n, d, generator=g, dtype=torch.float64) if source == "prior" else post.sample(n, generator=g)
    dev = next(model.parameters()).device
    gd = torch.Generator(device=dev).manual_seed(int(torch.randint(2**62, (1,), generator=g)))
    return [vocab.decode(x) for x in model.generate(z.to(dev, torch.float32), temperature=temperature,
                                                    greedy=greedy, generator=gd)]
