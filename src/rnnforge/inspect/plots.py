"""The PNGs: a heatmap of text x top units, gate saturation (Karpathy et al. 2015,
Fig. 3) and the histogram of memory time constants and look-back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .record import Recording
from .stats import Analysis


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(path, rec: Recording, an: Analysis, *, start: int = 0, length: int = 100,
            extra: tuple[int, str, int] | None = None) -> Path:
    """A stretch of the text (columns) x the best unit of each feature (rows), coloured by value.

    ``extra`` (layer, quantity, unit) adds the unit the page opens on as the first row.
    """
    plt = _pyplot()
    stop = min(rec.steps, start + length)
    rows, labels = [], []
    picks = ([extra] if extra else []) + [(b["layer"], b["quantity"], b["unit"]) for b in an.best]
    for l, q, m in picks:
        if any(l == r[0] and q == r[1] and m == r[2] for r in rows):
            continue
        rows.append((l, q, m))
    for l, q, m in rows:
        feats = [b["feature"] for b in an.best if (b["layer"], b["quantity"], b["unit"]) == (l, q, m)]
        labels.append(f"L{l} {q} #{m}" + (f" ({', '.join(feats)})" if feats else ""))
    values = np.stack([rec[l, q][start:stop, m].double().numpy() for l, q, m in rows])  # (rows, chars)
    # each row from its own minimum (blue) to its maximum (red): units of any range side by side
    lo, hi = values.min(1, keepdims=True), values.max(1, keepdims=True)
    scaled = 2 * (values - lo) / np.maximum(hi - lo, 1e-12) - 1
    width, height = max(8, 0.13 * (stop - start)) + 3, 0.3 * len(rows) + 1.2
    fig, ax = plt.subplots(figsize=(width, height))
    # fixed margins (room for the row labels on the left): tight_layout would draw the figure twice
    fig.subplots_adjust(left=3 / width, right=1 - 0.2 / width, bottom=0.5 / height, top=1 - 0.4 / height)
    ax.imshow(scaled, aspect="auto", cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest")
    chars = rec.text[start:stop] if rec.text else ""
    ax.set_xticks(range(len(chars)))
    ax.set_xticklabels(["\u00b7" if c == " " else c if c.isprintable() else repr(c)[1:-1] for c in chars],
                       fontsize=7, family="monospace")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_title(f"characters {start}..{stop - 1} x the best unit per feature (each row from its minimum, blue, to its maximum, red)",
                 fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def saturation_plot(path, rec: Recording, an: Analysis) -> Path | None:
    """Per gate, each unit's left- vs right-saturated fraction, one colour per layer."""
    gates = rec.gates
    if not gates:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(gates), figsize=(3.6 * len(gates), 3.6), squeeze=False)
    for ax, g in zip(axes[0], gates):
        for l in range(rec.num_layers):
            left, right = an.saturation[l, g]
            ax.scatter(left, right, s=8, alpha=0.6, label=f"layer {l}")
        ax.plot([0, 1], [1, 0], color="0.8", lw=0.8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("fraction left-saturated (< 0.1)")
        ax.set_ylabel("fraction right-saturated (> 0.9)")
        ax.set_title(f"gate {g}")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("gate saturation per unit (Karpathy, Johnson & Fei-Fei 2015, Fig. 3)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def time_constant_plot(path, rec: Recording, an: Analysis) -> Path:
    """Histogram over units of the time constant 1 / (1 - mean gate) and of the look-back, log bins."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    values = []
    for l in range(rec.num_layers):
        tau = an.time_constants[l]
        if tau is not None:
            values.append((f"time constant, layer {l}", tau[np.isfinite(tau)]))
        lb = an.look_back[l]
        if lb is not None:
            values.append((f"look-back, layer {l} ({len(lb.units)} units)", lb.estimate[np.isfinite(lb.estimate)]))
    every = np.concatenate([v for _, v in values]) if values else np.array([1.0])
    hi = max(every.max() if every.size else 1.0, an.long_term) * 1.5
    bins = np.geomspace(1.0, max(hi, 2.0), 40)
    for label, v in values:
        ax.hist(np.clip(v, 1.0, None), bins=bins, alpha=0.55, label=label)
    ax.axvline(an.long_term, color="k", ls="--", lw=1, label=f"long-term above {an.long_term:g} characters")
    ax.set_xscale("log")
    ax.set_xlabel("characters")
    ax.set_ylabel("units")
    gate = {"lstm": "f", "gru": "s"}.get(rec.mode)
    ax.set_title(f"memory time constant 1/(1 - mean {gate})" if gate else "look-back (the RNN has no gate)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
