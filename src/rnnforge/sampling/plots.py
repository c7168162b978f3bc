"""PIT histogram (Ex1): a calibrated forecast gives flat PIT counts.

The band is where each bin's count falls with probability ``level`` under
uniformity: bin counts are Binomial(n, 1/bins); the band uses the normal
approximation ``n/bins +- z sqrt(n p (1 - p))`` with z the two-sided ``level``
quantile, pointwise per bin (so about (1 - level) * bins bins are expected
outside it by chance).
"""
from __future__ import annotations

import math

import torch

from ._base import check_u

__all__ = ["pit_histogram"]


def pit_histogram(u, path=None, *, bins: int = 20, level: float = 0.99, title: str | None = None, ax=None):
    """Draw the histogram of PIT values ``u`` with the band expected under
    uniformity; write a PNG to ``path`` when given. Returns the matplotlib Figure.
    Uses the Agg backend when it creates the figure (no display needed)."""
    import matplotlib
    if ax is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    u = check_u(u).reshape(-1).cpu()
    n = u.numel()
    if n == 0:
        raise ValueError("pit_histogram needs at least one PIT value")
    if int(bins) != bins or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    counts = torch.bincount((u * bins).long().clamp_(max=bins - 1), minlength=bins).double()
    p = 1.0 / bins
    z = float(torch.special.ndtri(torch.tensor(0.5 + level / 2.0, dtype=torch.float64)))
    mid, half = n * p, z * math.sqrt(n * p * (1.0 - p))
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    edges = torch.linspace(0, 1, bins + 1)
    ax.bar(edges[:-1].numpy(), counts.numpy(), width=1.0 / bins, align="edge", color="#4c72b0",
           edgecolor="white", label="PIT counts")
    ax.axhspan(max(0.0, mid - half), mid + half, color="grey", alpha=0.25,
               label=f"{level:.0%} band under U[0,1]", zorder=0)
    ax.axhline(mid, color="black", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("PIT value u = F(x)")
    ax.set_ylabel("count")
    ax.set_title(title or f"PIT histogram (n={n})")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
