"""The memory experiment's results: one record per run, the summary, the table and the plot."""

from __future__ import annotations

import csv
import os
import statistics
from dataclasses import asdict, dataclass, fields
from typing import Sequence

from .model import CELLS
from .tasks import SOLVED_BELOW, Task


@dataclass
class RunResult:
    """One training run: a cell on a task at length T from one seed."""

    task: str
    cell: str
    T: int
    seed: int
    engine: str
    solved: bool
    test_error: float  # at the last evaluation (the model the run ended with)
    best_error: float  # the lowest over the evaluations
    baseline: float
    steps: int
    steps_to_solve: int | None
    seconds: float  # the budget's clock: CPU time on CPU, wall time on an accelerator
    wall_seconds: float
    stopped: str  # "solved", "steps", "time" or "diverged"


def summarize(results: Sequence[RunResult]) -> list[dict]:
    """One row per (cell, T): seeds run, solved, median/min/max test error, median steps to solve."""
    rows = []
    keys = sorted({(r.cell, r.T) for r in results},
                  key=lambda ct: (list(CELLS).index(ct[0]), ct[1]))
    for cell, T in keys:
        rs = [r for r in results if r.cell == cell and r.T == T]
        errs = [r.test_error for r in rs]
        solve = [r.steps_to_solve for r in rs if r.steps_to_solve is not None]
        rows.append(dict(cell=cell, T=T, runs=len(rs), solved=sum(r.solved for r in rs),
                         median_error=statistics.median(errs), min_error=min(errs),
                         max_error=max(errs),
                         median_steps_to_solve=statistics.median(solve) if solve else None,
                         median_seconds=statistics.median(r.seconds for r in rs),
                         engine=rs[0].engine))
    return rows


def markdown_table(results: Sequence[RunResult], task: Task, config: dict) -> str:
    """Markdown: the config, a cell x T grid of median error (solved/runs), and every run."""
    rows = summarize(results)
    cells = [c for c in CELLS if any(r["cell"] == c for r in rows)]
    lengths = sorted({r["T"] for r in rows})
    lines = [f"# Memory experiment: {task.describe()}", "",
             f"Error: {task.metric}; {task.baseline_label()} = {task.baseline:.4g}; "
             f"solved = error < {SOLVED_BELOW}.", "",
             "Config: " + ", ".join(f"{k}={v}" for k, v in config.items()
                                    if k not in ("description", "metric") and v is not None), "",
             "Median test error over seeds (solved runs / runs); `-` not run. Seconds: CPU "
             "time of the run on CPU, wall time on a GPU.", "",
             "| cell | " + " | ".join(f"T={T}" for T in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    by = {(r["cell"], r["T"]): r for r in rows}
    for c in cells:
        entries = []
        for T in lengths:
            r = by.get((c, T))
            entries.append("-" if r is None else
                           f"{r['median_error']:.4f} ({r['solved']}/{r['runs']})")
        lines.append(f"| {c} | " + " | ".join(entries) + " |")
    lines += ["", "Every run:", "",
              "| cell | T | seed | engine | test error | best | solved | steps | steps to solve | seconds | stopped |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (list(CELLS).index(r.cell), r.T, r.seed)):
        lines.append(f"| {r.cell} | {r.T} | {r.seed} | {r.engine} | {r.test_error:.4g} | "
                     f"{r.best_error:.4g} | {'yes' if r.solved else 'no'} | {r.steps} | "
                     f"{r.steps_to_solve if r.steps_to_solve is not None else '-'} | "
                     f"{r.seconds:.0f} | {r.stopped} |")
    return "\n".join(lines) + "\n"


def write_results(results: Sequence[RunResult], out: str | os.PathLike, task: Task,
                  config: dict) -> dict[str, str]:
    """Write ``results.csv`` (every run), ``results.md`` and ``results.png`` into ``out``."""
    os.makedirs(out, exist_ok=True)
    paths = {ext: os.path.join(out, f"results.{ext}") for ext in ("csv", "md", "png")}
    names = [f.name for f in fields(RunResult)]
    with open(paths["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r))
    with open(paths["md"], "w") as fh:
        fh.write(markdown_table(results, task, config))
    plot_results(results, task, paths["png"])
    return paths


def plot_results(results: Sequence[RunResult], task: Task, path: str) -> None:
    """Test error against T for each cell (log y): median line, each seed a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-4  # a perfect score (error 0) is drawn here, since log y has no 0
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for c in CELLS:
        rs = [r for r in results if r.cell == c]
        if not rs:
            continue
        lengths = sorted({r.T for r in rs})
        med = [max(floor, statistics.median(r.test_error for r in rs if r.T == T)) for T in lengths]
        line, = ax.plot(lengths, med, marker="o", label=c)
        ax.scatter([r.T for r in rs], [max(floor, r.test_error) for r in rs], s=12, alpha=0.35,
                   color=line.get_color())
    ax.axhline(task.baseline, color="gray", ls="--", lw=1, label=task.baseline_label())
    ax.axhline(SOLVED_BELOW, color="black", ls=":", lw=1, label="solved below")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("T")
    ax.set_ylabel(task.metric)
    ax.set_title(task.describe(), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
