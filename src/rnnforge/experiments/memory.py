"""Do the notes' cells remember in the long and the near term? Tasks and runner.

The notes: "LSTM models have the ability to 'remember' inputs in the long term
and in the near term", and the GRU's update gate ``s`` is "long term", its
reset gate ``r`` "short term". The sigmoid RNN, ``z = σ(alpha x + gamma z_prev)``,
is the cell without gates. This module makes the claim measurable.

Tasks (every batch generated on the fly from a ``torch.Generator``):

``adding`` -- long term (Hochreiter & Schmidhuber 1997; set-up of Le, Jaitly &
    Hinton 2015). Input (T, B, 2): channel 0 a value uniform in [0, 1], channel
    1 a marker that is 1 at exactly two steps, one in the first half
    ``[0, T//2)`` and one in the second ``[T//2, T)``. Target: the sum of the
    two marked values, read from the last state. Error: test MSE. Always
    answering 1 (the mean) gives MSE = Var(U1 + U2) = 1/6 ≈ 0.167. Solved:
    test MSE < 0.01.
``copy`` -- long term, discrete. Input: ``K`` symbols from an alphabet of
    ``A``, then ``T`` blank steps, then ``K`` steps of a "recall" cue, one-hot
    over ``A + 2`` channels (length ``K + T + K``). Target: the ``K`` symbols,
    in order, at the recall steps. Error: fraction of recalled symbols wrong.
    Chance: ``1 - 1/A``. Solved: error < 0.01.
``delay`` -- near term. Input: random bits (T, B, 1). Target at every step
    ``t >= k``: the bit of step ``t - k``. Error: fraction of bits wrong.
    Chance: 0.5. Solved: error < 0.01.
``parity`` -- near term, nonlinear. Target at every step ``t >= k - 1``: the
    parity (XOR) of the last ``k`` bits, steps ``t-k+1 .. t``. Chance 0.5,
    solved: error < 0.01.

Model: one recurrent layer of the chosen cell (``engine="auto"``: the fastest
engine that can run it) and the notes' δ (:class:`rnnforge.Readout`) on the
states the task reads. Training: Adam, gradient-norm clipping, a budget of
steps and of seconds per run (CPU seconds of this process on CPU, so that a
shared machine's other jobs do not shrink it; wall seconds on a GPU), early
stop once solved (checked on a fixed test set every ``eval_every`` steps).

Cells: ``rnn`` (the notes' sigmoid RNN), ``rnn-tanh``, ``gru``, ``lstm`` -- all
without biases, as in the notes (``bias=True`` adds them) -- and
``lstm-fb``: the LSTM with biases and the forget-gate bias started at
``forget_bias`` (1 by default; Gers et al. 2000, Jozefowicz et al. 2015), to
measure the effect of that common initialisation rather than change the task.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..layers import GRU, LSTM, RNN
from ..readout import Readout

#: error below which a run counts as solved, for every task
SOLVED_BELOW = 0.01

#: cell name -> (layer class, keyword arguments, description)
CELLS: dict[str, tuple[type, dict, str]] = {
    "rnn": (RNN, {"nonlinearity": "sigmoid"}, "the notes' RNN, z = σ(alpha x + gamma z_prev)"),
    "rnn-tanh": (RNN, {"nonlinearity": "tanh"}, "Elman RNN with tanh (torch.nn.RNN)"),
    "gru": (GRU, {}, "the notes' GRU"),
    "lstm": (LSTM, {}, "the notes' LSTM (no biases, as the notes)"),
    "lstm-fb": (LSTM, {}, "the notes' LSTM with biases, forget-gate bias b_f started at forget_bias"),
}
DEFAULT_CELLS = ("rnn", "rnn-tanh", "gru", "lstm")


# -- tasks ----------------------------------------------------------------------------------
class Task:
    """A sequence task: what to generate, which states to read, how to score.

    ``sample(T, batch, generator)`` returns ``(x, y)`` with ``x`` (L, B, I)
    float32 (``L`` the sequence length, ``T`` except for ``copy``) and ``y``
    the targets; ``states(out)`` picks the hidden states (N, B, H) or (B, H)
    that the readout maps to predictions for ``y``.
    """

    name: str = ""
    input_size: int = 1
    output_size: int = 2
    metric: str = "error rate"
    long_term: bool = True

    def min_length(self) -> int:
        return 2

    def sequence_length(self, T: int) -> int:
        return T

    def sample(self, T: int, batch: int, generator: torch.Generator):
        raise NotImplementedError

    def states(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def baseline(self) -> float:
        """The error of the best answer that ignores the input."""
        raise NotImplementedError

    def baseline_label(self) -> str:
        return "chance"

    # classification by default: logits (..., C), targets (...)
    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), y.reshape(-1))

    def error(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        return (pred.argmax(-1) != y).float().mean().item()

    def describe(self) -> str:
        return self.name


class AddingTask(Task):
    name = "adding"
    input_size = 2
    output_size = 1
    metric = "test MSE"

    def sample(self, T, batch, generator):
        values = torch.rand(T, batch, generator=generator)  # (T, B)
        first = torch.randint(0, T // 2, (batch,), generator=generator)  # (B,) in the first half
        second = torch.randint(T // 2, T, (batch,), generator=generator)  # (B,) in the second half
        cols = torch.arange(batch)
        markers = torch.zeros(T, batch)
        markers[first, cols] = 1.0
        markers[second, cols] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (T, B, 2)
        y = values[first, cols] + values[second, cols]  # (B,)
        return x, y

    def states(self, out):
        return out[-1]  # (B, H): the last state

    @property
    def baseline(self):
        return 1.0 / 6.0  # Var(U1 + U2), U ~ U[0, 1]: the MSE of always answering 1

    def baseline_label(self):
        return "always 1"

    def loss(self, pred, y):
        return F.mse_loss(pred.squeeze(-1), y)

    def error(self, pred, y):
        return F.mse_loss(pred.squeeze(-1), y).item()

    def describe(self):
        return "adding problem: sum of the two marked values among T, read at the last step"


class CopyTask(Task):
    name = "copy"
    metric = "recall error rate"

    def __init__(self, symbols: int = 5, alphabet: int = 8) -> None:
        self.symbols, self.alphabet = symbols, alphabet
        self.input_size = alphabet + 2  # A symbols, blank (A), recall cue (A + 1)
        self.output_size = alphabet

    def sequence_length(self, T):
        return T + 2 * self.symbols

    def sample(self, T, batch, generator):
        K, A = self.symbols, self.alphabet
        y = torch.randint(0, A, (K, batch), generator=generator)  # (K, B)
        tokens = torch.full((K + T + K, batch), A, dtype=torch.long)  # blanks
        tokens[:K] = y
        tokens[K + T:] = A + 1  # recall cue: "now say the symbols"
        x = F.one_hot(tokens, A + 2).float()  # (K+T+K, B, A+2)
        return x, y

    def states(self, out):
        return out[-self.symbols:]  # (K, B, H): the recall steps

    @property
    def baseline(self):
        return 1.0 - 1.0 / self.alphabet

    def describe(self):
        return (f"copy: recall {self.symbols} symbols of {self.alphabet} after T blank steps")


class DelayTask(Task):
    name = "delay"
    long_term = False
    metric = "error rate"

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def min_length(self):
        return max(2, self.k + 1)

    def sample(self, T, batch, generator):
        bits = torch.randint(0, 2, (T, batch), generator=generator)  # (T, B)
        return bits.float().unsqueeze(-1), bits[:T - self.k]  # y[j] = bit j, read at step j + k

    def states(self, out):
        return out[self.k:]  # (T-k, B, H)

    @property
    def baseline(self):
        return 0.5

    def describe(self):
        return f"delay: at every step, the input bit of {self.k} steps ago"


class ParityTask(Task):
    name = "parity"
    long_term = False
    metric = "error rate"

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def min_length(self):
        return max(2, self.k)

    def sample(self, T, batch, generator):
        bits = torch.randint(0, 2, (T, batch), generator=generator)  # (T, B)
        windows = bits.unfold(0, self.k, 1)  # (T-k+1, B, k): steps t-k+1 .. t
        return bits.float().unsqueeze(-1), windows.sum(-1) % 2

    def states(self, out):
        return out[self.k - 1:]  # (T-k+1, B, H)

    @property
    def baseline(self):
        return 0.5

    def describe(self):
        return f"parity: at every step, the XOR of the last {self.k} input bits"


TASKS: dict[str, Callable[..., Task]] = {
    "adding": lambda **kw: AddingTask(),
    "copy": lambda symbols=5, alphabet=8, **kw: CopyTask(symbols, alphabet),
    "delay": lambda k=3, **kw: DelayTask(k),
    "parity": lambda k=3, **kw: ParityTask(k),
}


def make_task(name: str, *, k: int = 3, symbols: int = 5, alphabet: int = 8) -> Task:
    """The task called ``name``, with its options checked."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    for label, value, low in (("k", k, 1), ("copy symbols", symbols, 1), ("alphabet", alphabet, 2)):
        if not (isinstance(value, int) and value >= low):
            raise UserError(f"{label} must be an integer >= {low}, got {value!r}")
    return TASKS[name](k=k, symbols=symbols, alphabet=alphabet)


# -- model ------------------------------------------------------------------------------------
class MemoryNet(nn.Module):
    """One recurrent layer and the notes' δ readout on the states the task reads."""

    def __init__(self, cell: str, task: Task, hidden: int, *, bias: bool = False,
                 forget_bias: float = 1.0) -> None:
        super().__init__()
        cls, kwargs, _ = CELLS[cell]
        with_bias = bias or cell == "lstm-fb"
        self.rnn = cls(task.input_size, hidden, bias=with_bias, engine="auto", **kwargs)
        if cell == "lstm-fb":
            with torch.no_grad():
                for c in self.rnn.cells:
                    c.b_f.fill_(forget_bias)
        self.readout = Readout(hidden, task.output_size)
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (L, B, H)
        return self.readout(self.task.states(out))


# -- one run ------------------------------------------------------------------------------------
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


def _check_budget(steps, seconds) -> None:
    if not (isinstance(steps, int) and steps >= 1):
        raise UserError(f"the step budget must be a positive integer, got {steps!r}")
    if not (isinstance(seconds, (int, float)) and seconds > 0 and math.isfinite(seconds)):
        raise UserError(f"the time budget per run must be a positive number of seconds, got {seconds!r}")


def train_one(task: Task, cell: str, T: int, seed: int, *, steps: int = 2000,
              seconds: float = 120.0, hidden: int = 32, batch: int = 50, lr: float = 1e-2,
              clip: float = 1.0, eval_every: int = 100, test_size: int = 500,
              device: str | torch.device = "cpu", bias: bool = False, forget_bias: float = 1.0,
              on_eval: Callable[[int, float], None] | None = None) -> RunResult:
    """Train ``cell`` on ``task`` at length ``T`` from ``seed``; stop when solved or out of budget.

    The training batches come from a generator seeded with ``seed``, the test
    set (``test_size`` sequences, the same for every cell) from one seeded with
    ``seed + 1_000_003``; the model is initialised under ``torch.manual_seed(seed)``.
    ``on_eval(step, error)`` is called after every evaluation.
    """
    _check_budget(steps, seconds)
    # Gradients that vanish through time pass through float32's denormal range (< 1.2e-38),
    # where x86 arithmetic is many times slower: measured 3-4x per step at T=400 for every
    # cell here, so a time budget would measure the CPU's denormal penalty instead of
    # learning. Flushing them to zero changes no result that matters.
    flushing = torch.set_flush_denormal(True)
    try:
        return _train(task, cell, T, seed, steps=steps, seconds=seconds, hidden=hidden,
                      batch=batch, lr=lr, clip=clip, eval_every=eval_every, test_size=test_size,
                      device=torch.device(device), bias=bias, forget_bias=forget_bias,
                      on_eval=on_eval)
    finally:
        if flushing:
            torch.set_flush_denormal(False)


def _train(task, cell, T, seed, *, steps, seconds, hidden, batch, lr, clip, eval_every,
           test_size, device, bias, forget_bias, on_eval) -> RunResult:
    train_gen = torch.Generator().manual_seed(seed)
    x_test, y_test = task.sample(T, test_size, torch.Generator().manual_seed(seed + 1_000_003))
    x_test, y_test = x_test.to(device), y_test.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MemoryNet(cell, task, hidden, bias=bias, forget_bias=forget_bias).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            err = task.error(model(x_test), y_test)
        model.train()
        return err

    # The time budget is compute: CPU time of this process on CPU (other jobs on a shared
    # machine then cannot eat it), wall time on an accelerator.
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    errors: list[float] = []
    solved_at, stopped, step = None, "steps", 0
    start, wall_start = clock(), time.perf_counter()
    while step < steps:
        x, y = task.sample(T, batch, train_gen)
        loss = task.loss(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        step += 1
        if not math.isfinite(loss.item()):
            stopped = "diverged"
            break
        out_of_time = clock() - start >= seconds
        if step % eval_every == 0 or step == steps or out_of_time:
            errors.append(evaluate())
            if on_eval is not None:
                on_eval(step, errors[-1])
            if errors[-1] < SOLVED_BELOW:
                solved_at, stopped = step, "solved"
                break
        if out_of_time:
            stopped = "time"
            break
    if stopped == "diverged" or not errors:
        errors.append(evaluate() if stopped != "diverged" else float("nan"))
    finite = [e for e in errors if math.isfinite(e)]
    return RunResult(task=task.name, cell=cell, T=T, seed=seed, engine=str(model.rnn.engine_used),
                     solved=solved_at is not None, test_error=errors[-1],
                     best_error=min(finite) if finite else float("nan"), baseline=task.baseline,
                     steps=step, steps_to_solve=solved_at,
                     seconds=round(clock() - start, 2),
                     wall_seconds=round(time.perf_counter() - wall_start, 2), stopped=stopped)


# -- the experiment ---------------------------------------------------------------------------
def check_options(task: str, cells: Sequence[str], lengths: Sequence[int], seeds: Sequence[int],
                  *, steps: int, seconds_per_run: float, hidden: int, batch: int, lr: float,
                  clip: float, eval_every: int, test_size: int, device: str, k: int,
                  symbols: int, alphabet: int) -> Task:
    """The task, once every option of :func:`run_memory` is checked; else a one-line UserError."""
    the_task = make_task(task, k=k, symbols=symbols, alphabet=alphabet)
    cells, lengths, seeds = list(cells), list(lengths), list(seeds)
    if not cells:
        raise UserError("name at least one cell")
    for c in cells:
        if c not in CELLS:
            raise UserError(f"unknown cell {c!r}; choose from {', '.join(CELLS)}")
    if not lengths:
        raise UserError("name at least one length T")
    low = the_task.min_length()
    for T in lengths:
        if not (isinstance(T, int) and T >= low):
            raise UserError(f"every length T must be an integer >= {low} for the {task} task, got {T!r}")
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise UserError(f"seeds must be non-negative integers, got {seeds!r}")
    _check_budget(steps, seconds_per_run)
    for label, value in (("hidden", hidden), ("batch", batch), ("eval_every", eval_every),
                         ("test_size", test_size)):
        if not (isinstance(value, int) and value >= 1):
            raise UserError(f"{label} must be a positive integer, got {value!r}")
    for label, value in (("lr", lr), ("clip", clip)):
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise UserError(f"{label} must be a positive number, got {value!r}")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"device {device!r} cannot be used: {str(e).splitlines()[0]}") from None
    return the_task


def run_memory(task: str = "adding", cells: Sequence[str] = DEFAULT_CELLS,
               lengths: Sequence[int] = (50, 100, 200, 400, 1000), seeds: Sequence[int] = (0, 1, 2),
               *, steps: int = 2000, seconds_per_run: float = 120.0, hidden: int = 32,
               batch: int = 50, lr: float = 1e-2, clip: float = 1.0, eval_every: int = 100,
               test_size: int = 500, device: str = "cpu", bias: bool = False,
               forget_bias: float = 1.0, k: int = 3, symbols: int = 5, alphabet: int = 8,
               out: str | os.PathLike | None = None, progress: bool = True) -> list[RunResult]:
    """Every cell x length x seed on ``task``; results in ``out`` (table .md, .csv, plot .png).

    Runs go shortest T first, so an interrupted run still leaves complete
    short-T results; the files in ``out`` are rewritten after every run.
    """
    the_task = check_options(task, cells, lengths, seeds, steps=steps,
                             seconds_per_run=seconds_per_run, hidden=hidden, batch=batch, lr=lr,
                             clip=clip, eval_every=eval_every, test_size=test_size,
                             device=device, k=k, symbols=symbols, alphabet=alphabet)
    cells, lengths, seeds = list(cells), list(lengths), list(seeds)

    from tqdm import tqdm

    plan = [(T, c, s) for T in sorted(lengths) for c in cells for s in seeds]
    config = dict(task=task, description=the_task.describe(), metric=the_task.metric,
                  steps=steps, seconds_per_run=seconds_per_run, hidden=hidden, batch=batch,
                  lr=lr, clip=clip, eval_every=eval_every, test_size=test_size, device=device,
                  bias=bias, forget_bias=forget_bias if "lstm-fb" in cells else None,
                  k=k if task in ("delay", "parity") else None,
                  symbols=symbols if task == "copy" else None,
                  alphabet=alphabet if task == "copy" else None,
                  torch=torch.__version__, threads=torch.get_num_threads())
    results: list[RunResult] = []
    bar = tqdm(plan, desc=f"memory/{task}", unit="run", disable=not progress, dynamic_ncols=True)
    for T, c, s in bar:
        bar.set_postfix_str(f"{c} T={T} seed={s}")

        def on_eval(step, err, c=c, T=T, s=s):
            bar.set_postfix_str(f"{c} T={T} seed={s} step={step} err={err:.4g}")

        results.append(train_one(the_task, c, T, s, steps=steps, seconds=seconds_per_run,
                                 hidden=hidden, batch=batch, lr=lr, clip=clip,
                                 eval_every=eval_every, test_size=test_size, device=device,
                                 bias=bias, forget_bias=forget_bias, on_eval=on_eval))
        if out is not None:
            write_results(results, out, the_task, config)
    bar.close()
    return results


# -- reporting ----------------------------------------------------------------------------------
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
