"""The memory experiment's runs: train one model, and the sweep over cells, lengths and seeds.

Training: Adam, gradient-norm clipping, a budget of steps and of seconds per
run (CPU seconds of this process on CPU, so that a shared machine's other jobs
do not shrink it; wall seconds on an accelerator), early stop once solved
(checked on a fixed test set every ``eval_every`` steps).
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Sequence

import torch

from ...errors import OptionError, UserError, check_float, check_int
from ...layers import GRU, LSTM
from ...runtime import resolve_device
from ...training import Budget, clipped_step
from .model import CELLS, DEFAULT_CELLS, MemoryNet
from .report import RunResult, write_results
from .tasks import SOLVED_BELOW, Task, make_task

#: the test set's generator is seeded with seed + this, so it never shares a stream with training
TEST_SEED_OFFSET = 1_000_003
#: the largest seed torch.Generator.manual_seed takes, less the test set's offset
MAX_SEED = 2 ** 64 - 1 - TEST_SEED_OFFSET


def train_one(task: Task, cell: str, T: int, seed: int, *, steps: int = 2000,
              seconds: float = 120.0, hidden: int = 32, batch: int = 50, lr: float = 1e-2,
              clip: float = 1.0, eval_every: int = 100, test_size: int = 500,
              device: str | torch.device = "cpu", bias: bool = False, forget_bias: float = 1.0,
              on_eval: Callable[[int, float], None] | None = None) -> RunResult:
    """Train ``cell`` on ``task`` at length ``T`` from ``seed``; stop when solved or out of budget.

    The training batches come from a generator seeded with ``seed``, the test
    set (``test_size`` sequences, the same for every cell) from one seeded with
    ``seed + TEST_SEED_OFFSET``; the model is initialised under ``torch.manual_seed(seed)``.
    ``on_eval(step, error)`` is called after every evaluation.
    """
    _check_budget(steps, seconds, "seconds")
    # Gradients that vanish through time reach float32's denormal range, where x86
    # arithmetic is many times slower: a time budget would then measure that penalty, not
    # learning. Flushing denormals to zero changes no result that matters here.
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
    x_test, y_test = task.sample(T, test_size, torch.Generator().manual_seed(seed + TEST_SEED_OFFSET))
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

    budget = Budget(steps, seconds, clock="cpu" if device.type == "cpu" else "wall")
    errors: list[float] = []
    solved_at, stopped, step = None, "steps", 0
    start, wall_start = budget.now(), time.perf_counter()
    while True:
        x, y = task.sample(T, batch, train_gen)
        loss = task.loss(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clipped_step(opt, model.parameters(), clip)
        step += 1
        if not math.isfinite(loss.item()):
            stopped = "diverged"
            break
        elapsed = budget.now() - start
        done = budget.spent(step, elapsed)
        if step % eval_every == 0 or done:
            errors.append(evaluate())
            if on_eval is not None:
                on_eval(step, errors[-1])
            if errors[-1] < SOLVED_BELOW:
                solved_at, stopped = step, "solved"
                break
        if done:
            stopped = "time" if elapsed >= budget.seconds or step < budget.steps else "steps"
            break
    if stopped == "diverged" or not errors:
        errors.append(evaluate() if stopped != "diverged" else float("nan"))
    finite = [e for e in errors if math.isfinite(e)]
    return RunResult(task=task.name, cell=cell, T=T, seed=seed, engine=str(model.rnn.engine_used),
                     solved=solved_at is not None, test_error=errors[-1],
                     best_error=min(finite) if finite else float("nan"), baseline=task.baseline,
                     steps=step, steps_to_solve=solved_at,
                     seconds=round(budget.now() - start, 2),
                     wall_seconds=round(time.perf_counter() - wall_start, 2), stopped=stopped)


def _check_budget(steps, seconds, seconds_name: str) -> None:
    check_int("steps", steps, low=1)
    check_float(seconds_name, seconds, low=0, low_open=True)


#: gate blocks per layer class: the weights are (gates * H, I + H)
_GATES = {GRU: 3, LSTM: 4}


def _memory_bytes(device: torch.device) -> int | None:
    """The memory of ``device`` (physical memory for the CPU), or None if unknown."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, RuntimeError, AttributeError):
        return None


def _check_size(task: Task, cells, lengths, hidden: int, batch: int, test_size: int,
                device: torch.device) -> None:
    """Refuse a run whose float32 tensors alone would not fit in the device's memory."""
    have = _memory_bytes(device)
    if have is None:
        return
    gates = max(_GATES.get(CELLS[c][0], 1) for c in cells)
    # weights, their gradients and Adam's two moments
    weights = 4 * 4 * gates * hidden * (task.input_size + hidden)
    if weights > have:
        raise OptionError("hidden", f"{hidden} would need about {weights / 2 ** 30:.3g} GiB for the "
                                    f"weights, gradients and Adam's moments; this machine has "
                                    f"{have / 2 ** 30:.3g} GiB")
    L = task.sequence_length(max(lengths))
    # the states and gate activations that backpropagation through time keeps
    acts = 4 * L * max(batch, test_size) * hidden * (gates + 1)
    if weights + acts > have:
        raise UserError(f"T={max(lengths)} with {max(batch, test_size)} sequences and {hidden} hidden "
                        f"units would need about {(weights + acts) / 2 ** 30:.3g} GiB; this machine "
                        f"has {have / 2 ** 30:.3g} GiB")


def check_options(task: str, cells: Sequence[str], lengths: Sequence[int], seeds: Sequence[int],
                  *, steps: int, seconds_per_run: float, hidden: int, batch: int, lr: float,
                  clip: float, eval_every: int, test_size: int, device: str, k: int,
                  symbols: int, alphabet: int, forget_bias: float = 1.0) -> Task:
    """The task, once every option of :func:`run_memory` is checked; else a one-line UserError."""
    the_task = make_task(task, k=k, symbols=symbols, alphabet=alphabet)
    cells, lengths, seeds = list(cells), list(lengths), list(seeds)
    if not cells:
        raise OptionError("cells", "must name at least one cell")
    for c in cells:
        if c not in CELLS:
            raise OptionError("cells", f"names an unknown cell {c!r}; choose from {', '.join(CELLS)}")
    if not lengths:
        raise OptionError("lengths", "must name at least one length T")
    low = the_task.min_length()
    for T in lengths:
        if isinstance(T, bool) or not (isinstance(T, int) and T >= low):
            raise OptionError("lengths", f"must be integers >= {low} for the {task} task, got {T!r}")
    if not seeds:
        raise OptionError("seeds", "must name at least one seed")
    for s in seeds:
        check_int("seeds", s, low=0, high=MAX_SEED)
    _check_budget(steps, seconds_per_run, "seconds_per_run")
    for name, value in (("hidden", hidden), ("batch", batch), ("eval_every", eval_every),
                        ("test_size", test_size)):
        check_int(name, value, low=1)
    for name, value in (("lr", lr), ("clip", clip)):
        check_float(name, value, low=0, low_open=True)
    check_float("forget_bias", forget_bias)
    dev = resolve_device(device)
    _check_size(the_task, cells, lengths, hidden, batch, test_size, dev)
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
                             device=device, k=k, symbols=symbols, alphabet=alphabet,
                             forget_bias=forget_bias)
    cells, lengths, seeds = list(cells), list(lengths), list(seeds)
    dev = resolve_device(device)

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
                                 eval_every=eval_every, test_size=test_size, device=dev,
                                 bias=bias, forget_bias=forget_bias, on_eval=on_eval))
        if out is not None:
            write_results(results, out, the_task, config)
    bar.close()
    return results
