"""What every trainer shares: the budget, the learning-rate schedule and the clipped step.

A :class:`Budget` is a step count, a time limit or both (the first one spent
ends the run); time is wall-clock, or this process's CPU time, which a busy
shared machine does not eat. Progress through the budget drives the schedule:
linear warm-up, then cosine decay to ``min_ratio`` of the peak, so a run on a
time budget still ends at its lowest rate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .errors import OptionError, check_float, check_int
from .runtime import MAX_THREADS

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
NO_BUDGET = "are both 0: give a step budget, a time budget, or both"


@dataclass(frozen=True)
class Budget:
    """``steps`` (0: none) and ``seconds`` (0: none) on ``clock``; at least one must be set."""

    steps: int = 0
    seconds: float = 0.0
    clock: str = "wall"

    def __post_init__(self) -> None:
        check_int("steps", self.steps, low=0)
        check_float("seconds", self.seconds, low=0)
        if self.clock not in CLOCKS:
            raise OptionError("clock", f"must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        if not self.steps and not self.seconds:
            raise OptionError(("steps", "seconds"), NO_BUDGET)

    @classmethod
    def of(cls, steps: int | None = 0, minutes: float | None = 0.0, clock: str = "wall") -> "Budget":
        """A budget of ``steps`` and ``minutes`` (each 0 or None: no limit of that kind)."""
        check_int("steps", steps or 0, low=0)
        minutes = check_float("minutes", minutes or 0.0, low=0)
        if not steps and not minutes:
            raise OptionError(("steps", "minutes"), NO_BUDGET)
        return cls(steps or 0, minutes * 60.0, clock)

    def now(self) -> float:
        return CLOCKS[self.clock]()

    def progress(self, step: int, elapsed: float) -> float:
        """The larger of the step and time fractions spent (>= 1: the budget is spent)."""
        frac = 0.0
        if self.steps:
            frac = step / self.steps
        if self.seconds:
            frac = max(frac, elapsed / self.seconds)
        return frac

    def spent(self, step: int, elapsed: float) -> bool:
        return self.progress(step, elapsed) >= 1.0


#: the largest learning rate accepted: far above any useful one, below where AdamW's step
#: overflows float32 before the loss can show divergence
MAX_LR = 1000


def check_schedule(cfg) -> None:
    """The options every trainer with a warm-up + cosine AdamW schedule shares: ``steps``,
    ``minutes`` (not both 0), ``warmup``, ``lr``, ``min_lr_ratio``, ``weight_decay``, ``clip``."""
    check_int("steps", cfg.steps, low=0)
    check_float("minutes", cfg.minutes, low=0)
    if cfg.steps == 0 and cfg.minutes == 0:
        raise OptionError(("steps", "minutes"), NO_BUDGET)
    check_int("warmup", cfg.warmup, low=0)
    check_float("lr", cfg.lr, low=0, high=MAX_LR, low_open=True)
    check_float("min_lr_ratio", cfg.min_lr_ratio, low=0, high=1)
    check_float("weight_decay", cfg.weight_decay, low=0)
    check_float("clip", cfg.clip, low=0)


RESUME_AND_FORCE = "starts a run over, which contradicts resuming it; choose one"


@dataclass(kw_only=True)
class RunOptions:
    """The options of a training run that every trainer shares: the budget, the AdamW
    schedule, evaluation, seed, device, the run folder and its guards, threads, output.

    A trainer's config subclasses this and adds its data and model options (which keep
    their positions; these are keyword-only). A subclass sets its own default for one of
    these by declaring the field again after a ``KW_ONLY`` marker (so that it stays
    keyword-only), and its ``validate`` checks its own options and calls :meth:`check_run`.
    """

    steps: int = 0
    minutes: float = 0.0
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup: int = 50
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 200
    seed: int = 1337
    device: str = "auto"
    out: str = "runs/run"
    resume: bool = False
    force: bool = False
    threads: int = 0
    progress: bool = True
    tensorboard: bool = True

    #: the largest seed the trainer's generators take
    MAX_SEED = 2**63 - 1

    def budget(self) -> Budget:
        return Budget.of(self.steps, self.minutes)

    def check_run(self) -> None:
        """Every shared option checked, each error naming its option."""
        check_schedule(self)
        check_int("eval_every", self.eval_every, low=1)
        check_int("seed", self.seed, low=0, high=self.MAX_SEED)
        check_int("threads", self.threads, low=0, high=MAX_THREADS)
        if self.resume and self.force:
            raise OptionError("force", RESUME_AND_FORCE)


def cosine_lr(peak: float, step: int, progress: float, *, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``peak`` to ``min_ratio * peak``.

    ``progress`` in [0, 1] is the budget's fraction spent (:meth:`Budget.progress`);
    the cosine runs over what remains after the warm-up when the budget is steps.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, max(0.0, progress))
    lo = peak * min_ratio
    return lo + (peak - lo) * 0.5 * (1 + math.cos(math.pi * p))


def warmup_progress(budget: Budget, step: int, elapsed: float, warmup: int) -> float:
    """Schedule progress that starts after ``warmup`` steps on a step budget (time runs throughout)."""
    frac = 0.0
    if budget.steps:
        frac = (step - warmup) / max(1, budget.steps - warmup)
    if budget.seconds:
        frac = max(frac, elapsed / budget.seconds)
    return frac


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def clipped_step(opt: torch.optim.Optimizer, params, clip: float, scaler=None) -> float:
    """Unscale (with a GradScaler), clip the gradient norm to ``clip`` (0: no clipping), step.

    Returns the gradient norm before clipping; a non-finite norm skips the step
    (the GradScaler does the same for float16), so one bad batch does not write
    NaN into the weights, and the caller can tell divergence from noise.
    """
    params = [p for p in params if p.grad is not None]
    if scaler is not None:
        scaler.unscale_(opt)
    if clip:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])) if params \
            else torch.zeros(())
    norm = float(norm)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    elif math.isfinite(norm):
        opt.step()
    return norm
