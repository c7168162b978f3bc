"""``units.csv`` (one row per layer, quantity and unit) and ``report.md`` (the summary)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .features import FEATURES
from .record import MEMORY_GATE, Recording
from .stats import Analysis

#: a unit "tracks" a feature when |r| exceeds this
TRACKS = 0.7


def _fmt(x, digits: int = 4) -> str:
    x = float(x)
    return "" if not math.isfinite(x) else f"{x:.{digits}g}"


def write_units_csv(path, rec: Recording, an: Analysis) -> Path:
    """layer, quantity, unit, mean, std, left/right saturation (gates), time constant,
    look-back, term (long / near) and r with every feature."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["layer", "quantity", "unit", "mean", "std", "left_saturated", "right_saturated",
                    "time_constant", "look_back", "term", *[f"r_{n}" for n in FEATURES]])
        for l in range(rec.num_layers):
            tau = an.time_constants[l]
            lb = an.look_back_of(l)
            term = an.term(l)
            for q in rec.quantities:
                v = rec[l, q].double()
                mean, std = v.mean(0).numpy(), v.std(0, correction=0).numpy()
                sat = an.saturation.get((l, q))
                r = an.correlations[l, q]
                for m in range(rec.hidden_size):
                    w.writerow([l, q, m, _fmt(mean[m]), _fmt(std[m]),
                                _fmt(sat[0][m]) if sat else "", _fmt(sat[1][m]) if sat else "",
                                _fmt(tau[m]) if tau is not None else "", _fmt(lb[m]), term[m],
                                *[_fmt(x) for x in r[:, m]]])
    return path


def _quantiles(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    if not v.size:
        return "n/a | n/a | n/a"
    return " | ".join(f"{x:.1f}" for x in np.quantile(v, [0.1, 0.5, 0.9]))


def write_report(path, rec: Recording, an: Analysis, *, title: str, source: str, seconds: float | None = None,
                 files: dict[str, str] | None = None, page: str = "index.html") -> Path:
    """The summary in Markdown, with links into the page."""
    L, H = rec.num_layers, rec.hidden_size
    lines = [f"# rnnforge inspect: {title}", ""]
    took = f", recorded and analysed in {seconds:.1f} s" if seconds is not None else ""
    lines.append(f"{rec.mode}, {L} layer(s) x {H} units; {rec.steps} characters of {source}{took}.")
    if rec.check is not None:
        lines.append(f"The recorded top-layer output and final states agree with the layer's own forward "
                     f"(engine `{rec.engine}`) to {rec.check:.1e} (largest difference / max(1, largest value)).")
    lines += ["", "## Units that track text features", "",
              "Best unit per feature over every layer and quantity (Pearson r over the text).", "",
              "| feature | layer | quantity | unit | r | view |", "|---|---|---|---|---|---|"]
    tracked = []
    for b in an.best:
        link = f"[open]({page}#layer={b['layer']}&q={b['quantity']}&unit={b['unit']}&rank={b['feature']})"
        lines.append(f"| {b['feature']} | {b['layer']} | {b['quantity']} | {b['unit']} | {b['r']:+.3f} | {link} |")
        if abs(b["r"]) > TRACKS:
            tracked.append(f"{b['feature']} ({b['r']:+.2f})")
    missing = [n for n in FEATURES if not any(b["feature"] == n for b in an.best)]
    lines.append("")
    lines.append(f"Features some unit tracks above |r| = {TRACKS}: " + (", ".join(tracked) or "none") + ".")
    if missing:
        lines.append(f"Constant on this text (no correlation): {', '.join(missing)}.")

    if rec.gates:
        lines += ["", "## Gate saturation", "",
                  "Fraction of steps a gate spends below 0.1 (left) or above 0.9 (right), averaged over "
                  "units; a unit 'mostly' saturated spends more than half the steps there.", "",
                  "| layer | gate | mean left | mean right | units mostly left | units mostly right |",
                  "|---|---|---|---|---|---|"]
        for l in range(L):
            for g in rec.gates:
                left, right = an.saturation[l, g]
                lines.append(f"| {l} | {g} | {left.mean():.3f} | {right.mean():.3f} | "
                             f"{int((left > 0.5).sum())} | {int((right > 0.5).sum())} |")

    gate = MEMORY_GATE[rec.mode]
    lines += ["", "## Memory: time constants and look-back", ""]
    if gate:
        lines += [f"Time constant of a unit: 1 / (1 - mean {gate}) in characters. Long-term: above "
                  f"{an.long_term:g} characters.", "",
                  "| layer | 10% | median | 90% | long-term units | near-term units |", "|---|---|---|---|---|---|"]
        for l in range(L):
            tau = an.time_constants[l]
            lines.append(f"| {l} | {_quantiles(tau)} | {int((tau > an.long_term).sum())} | "
                         f"{int((tau <= an.long_term).sum())} |")
        lines.append("")
    else:
        lines += [f"The {rec.mode} cell has no gate, so no time constant; its units are split by look-back.", ""]
    if any(lb is not None for lb in an.look_back):
        ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k < next(lb for lb in an.look_back if lb).profile.shape[1]]
        lines += ["Look-back: |d z(t) / d x(t-k)| averaged over sampled steps t; the estimate is the "
                  "gradient-weighted mean distance over k = 1..K (at most K). Mean profile relative to k = 1:", "",
                  "| layer | units sampled | steps | 10% | median | 90% | long-term | near-term | "
                  + " | ".join(f"k={k}" for k in ks) + " |",
                  "|---|---|---|---|---|---|---|---|" + "---|" * len(ks)]
        for l, lb in enumerate(an.look_back):
            if lb is None:
                continue
            mean = lb.profile.mean(0)
            rel = " | ".join(f"{mean[k] / mean[1]:.3g}" if mean[1] > 0 else "n/a" for k in ks)
            lines.append(f"| {l} | {len(lb.units)} | {lb.positions} | {_quantiles(lb.estimate)} | "
                         f"{int((lb.estimate > an.long_term).sum())} | {int((lb.estimate <= an.long_term).sum())} | "
                         f"{rel} |")
    if files:
        lines += ["", "## Files", ""] + [f"- `{name}`: {what}" for name, what in files.items()]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
