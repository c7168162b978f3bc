"""Fan charts of forecast quantiles (matplotlib, written straight to PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: central intervals drawn, widest (lightest) first
FAN = ((0.05, 0.95), (0.1, 0.9), (0.25, 0.75))


def fan_chart(path: str | Path, *, history_x, history, future_x, quantiles: dict[float, np.ndarray],
              actual=None, title: str = "", ylabel: str = "") -> None:
    """History, the median and the 50/80/90% bands of a forecast, and the actuals if known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    ax.plot(history_x, history, color="black", lw=1.0, label="history")
    for (lo, hi), alpha in zip(FAN, (0.18, 0.28, 0.4)):
        if lo in quantiles and hi in quantiles:
            ax.fill_between(future_x, quantiles[lo], quantiles[hi], color="tab:blue", alpha=alpha, lw=0,
                            label=f"{int(round((hi - lo) * 100))}% interval")
    if 0.5 in quantiles:
        ax.plot(future_x, quantiles[0.5], color="tab:blue", lw=1.4, label="median")
    if actual is not None:
        ax.plot(future_x, actual, color="tab:red", lw=1.0, label="actual")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def pit_histogram(pit: np.ndarray, path: str | Path, *, title: str = "") -> None:
    """PIT histogram (``rnnforge.sampling.pit_histogram``, with its band under U[0, 1]),
    titled with n and the KS p-value, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..sampling import pit_histogram as draw
    from .metrics import ks_uniform

    pit = np.asarray(pit, dtype=np.float64)
    _, p = ks_uniform(pit)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig = draw(torch.as_tensor(pit), path, bins=10,
               title=f"{title}\nn = {pit.size}, KS p = {p:.3g}" if title else f"n = {pit.size}, KS p = {p:.3g}")
    plt.close(fig)
