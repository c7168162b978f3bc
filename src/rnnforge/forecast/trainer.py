"""Training: random windows of context + horizon steps, teacher forcing, a step or time budget.

Each window is scaled by its context part (as a forecast would be) and the
head's loss is averaged over every observed value of the window. The budget,
the schedule and the clipped step are ``rnnforge.training``'s: the learning
rate follows a cosine from ``lr`` to 0 (no warm-up) over the budget, whichever
of ``steps`` and ``minutes`` runs out first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .series import Series
from ..errors import OptionError, UserError
from ..training import Budget, clipped_step, cosine_lr, set_lr
from .features import (FeatureSpec, growth_inputs, lag_inputs, running_sums, scale_stats, transform,
                       window_inputs)
from .model import Forecaster, _floor, repeat_state, uniforms

class WindowSampler:
    """Random training windows (B, K + C + H) from the training parts of the series.

    A window is cut with R >= K steps before its context (``spec.history``: the lags, and
    the span the ``drift`` transform is fitted to), transformed, and trimmed to its last
    K + C + H columns.
    """

    def __init__(self, series: list[Series], *, context: int, horizon: int, spec: FeatureSpec,
                 rng: np.random.Generator) -> None:
        self.C, self.H, self.K, self.R = context, horizon, spec.max_lag, spec.history(context)
        self.spec, self.rng = spec, rng
        kind = spec.transform
        T = context + horizon
        self.padded, self.phases, self.starts, self.floor = [], [], [], _floor(series, kind=kind)
        for i, s in enumerate(series):
            self.padded.append(np.concatenate([np.full(self.R, np.nan), s.values]))  # a+R <-> values[a]
            self.phases.append(s.phase(-self.R, len(s)))
            ok = np.isfinite(s.values)
            if kind == "diff":  # a difference is observed where both of its values are
                ok = np.concatenate([[False], ok[1:] & ok[:-1]])
            ok = ok.astype(np.int64)
            csum = np.concatenate([[0], np.cumsum(ok)])
            a = np.arange(0, len(s) - T + 1)
            # a window needs >= 2 observed context values and >= 1 observed value to predict
            good = (csum[a + context] - csum[a] >= 2) & (csum[a + T] - csum[a] >= 3)
            self.starts.extend((i, int(x)) for x in a[good])
        if not self.starts:
            raise UserError(f"no training window of context {context} + horizon {horizon} steps "
                            f"has enough observed values; the windows are all (or nearly all) NaN")
        self.starts = np.array(self.starts)

    def batch(self, B: int) -> tuple[np.ndarray, np.ndarray]:
        """Scaled values (B, K + T) and phases (B, T) of B random windows."""
        return self.windows(self.draw(B))

    def draw(self, B: int) -> np.ndarray:
        """B random windows (series index, start), (B, 2)."""
        return self.starts[self.rng.integers(0, len(self.starts), size=B)]

    def windows(self, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled values (B, K + T) and phases (B, T) of the windows (series index, start) in ``pick``,
        in model space (``spec.transform``, fitted before each window's origin as a forecast would be)."""
        K, R, T = self.K, self.R, self.C + self.H
        vals = np.stack([self.padded[i][a:a + R + T] for i, a in pick])  # (B, R+T)
        phase = np.stack([self.phases[i][a:a + R + T] for i, a in pick])  # (B, R+T)
        vals, _ = transform(vals, start=R, context=self.C, phase=phase, **self.spec.transform_kwargs())
        vals = vals[:, R - K:]  # (B, K+T)
        loc, scale = scale_stats(vals[:, K:K + self.C], self.spec.scaler, floor=self.floor[pick[:, 0]])
        return (vals - loc[:, None]) / scale[:, None], phase[:, R:]


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float]  # mean training loss per logging interval
    val_losses: list[float] = field(default_factory=list)  # validation loss at each logging step
    best_step: int | None = None  # the step whose weights were kept (validation), else None
    refit_steps: int | None = None  # steps of the refit on all the data (``ForecastConfig.refit``), else None
    rollout: dict | None = None  # the fine-tuning on the multi-step objective (``ForecastConfig.rollout_steps``), else None
    check_every: int = 0  # steps between validation checks
    stopped_at: int | None = None  # the step where patience ran out (early stop), else None
    budget_steps: int | None = None  # the step budget, when there is one


def validation_windows(series: list[Series], *, context: int, horizon: int, windows: int,
                       spec: FeatureSpec) -> tuple[list[Series], np.ndarray, np.ndarray]:
    """Split off the last ``windows * horizon`` steps of each series for validation.

    Returns the shortened training series and the validation windows (scaled
    values (V, K + C + H), phases (V, C + H)): the ``windows`` windows whose
    horizons tile each held-out tail, with the context before each.
    """
    hold = windows * horizon
    train = [s.head(len(s) - hold) for s in series]
    vs = WindowSampler.__new__(WindowSampler)
    vs.C, vs.H, vs.K, vs.R, vs.spec = context, horizon, spec.max_lag, spec.history(context), spec
    vs.padded = [np.concatenate([np.full(vs.R, np.nan), s.values]) for s in series]
    vs.phases = [s.phase(-vs.R, len(s)) for s in series]
    vs.floor = _floor(train, kind=spec.transform)
    pick = np.array([(i, len(s) - hold + k * horizon - context)
                     for i, s in enumerate(series) for k in range(windows)])
    if (pick[:, 1] < 0).any():
        raise OptionError("val_windows", f"{windows} is too many: the series are too short for {windows} "
                                         f"validation windows of {horizon} steps after a context of {context}")
    z, phase = vs.windows(pick)
    return train, z, phase


OBJECTIVES = ("teacher", "rollout")


def check_objective(objective: str, paths: int) -> None:
    """A UserError unless ``fit`` can train by ``objective`` with ``paths`` paths per window
    (the command line asks before the teacher-forced training, not after it)."""
    if objective not in OBJECTIVES:
        raise UserError(f"unknown training objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if objective == "rollout" and paths < 2:
        raise OptionError("rollout_paths", f"must be >= 2 (the sample CRPS compares paths), got {paths}")


#: the window steps the teacher-forced loss covers. ``window``: every step, the context's too, as
#: DeepAR trains; but each window is scaled by its context's statistics (features.scale_stats), so
#: the context's scaled values are constrained by construction: with a centring scaler (mean,
#: robust) they average 0, and a model that learns from them learns a pull back to the context's
#: mean that no future value obeys (forecasts too narrow on a trending or wandering series); with
#: mean-abs only their mean absolute value is fixed, a weaker constraint. ``horizon``: the steps
#: after the context only, scaled as a forecast scales them.
LOSS_STEPS = ("window", "horizon")


def check_loss_steps(loss_steps: str) -> None:
    if loss_steps not in LOSS_STEPS:
        raise OptionError("loss_steps", f"{loss_steps!r} is not one of {', '.join(LOSS_STEPS)}")


def fit(model: Forecaster, series: list[Series], *, context: int, horizon: int, steps: int | None,
        minutes: float | None, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
        device: str = "cpu", log_every: int | None = None, val_windows: int = 0, log=print,
        stop_after: int | None = None, objective: str = "teacher", paths: int = 8,
        patience: int = 0, loss_steps: str = "window") -> TrainResult:
    """Train ``model`` in place on random windows until the step or time budget runs out.

    ``objective``: ``teacher`` (the head's loss, teacher forced, on the observed values of
    each window: every step with ``loss_steps="window"``, the horizon's only with
    ``"horizon"``; see LOSS_STEPS) or ``rollout`` (the CRPS of ``paths`` ancestral sample
    paths per window over its horizon, ``rollout_crps``: what a forecast is scored
    on, for fine-tuning a model trained by teacher forcing).

    With ``val_windows > 0`` the last ``val_windows * horizon`` steps of each
    series are held out; every ``log_every`` steps the model is scored on their
    horizons (teacher forced, given the context before each, by the training
    loss; or for ``rollout`` by ``rollout_crps`` with fixed uniforms, also before
    the first step, as fine-tuning starts from trained weights), and the weights
    with the lowest score are kept (early stopping). ``log_every`` None: every
    two epochs' worth of steps (training windows / batch size), within 5..50, so
    that tiny data is checked before it is overfitted. ``patience`` > 0: training
    ends after that many checks without a lower validation score.
    ``stop_after``: end after that many steps of the schedule the budget sets
    (how ``ForecastConfig.refit`` replays an early-stopped run on all the data).
    """
    budget = Budget.of(steps, minutes)
    check_objective(objective, paths)
    check_loss_steps(loss_steps)
    first = context if loss_steps == "horizon" else 0  # the first window step in the loss
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    K = model.spec.max_lag
    val = None
    # each series' embedding row (None without an embedding), indexed by position in ``series``
    sid = model.series_ids(series, device)
    vids = None if sid is None else sid.repeat_interleave(val_windows)  # validation: windows per series
    if val_windows:
        series, vz, vphase = validation_windows(series, context=context, horizon=horizon,
                                                windows=val_windows, spec=model.spec)
    sampler = WindowSampler(series, context=context, horizon=horizon, spec=model.spec, rng=rng)
    if log_every is None:
        log_every = check_interval(len(sampler.starts), batch_size)
    model.to(device).train()
    dtype = model.readout.delta.dtype
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if val_windows:
        val = (torch.as_tensor(vz, dtype=dtype, device=device), torch.as_tensor(vphase, dtype=dtype, device=device))
        if objective == "rollout":
            gen = torch.Generator(device=device).manual_seed(seed)
            val = (*val, uniforms(horizon, len(vz) * VAL_PATHS, generator=gen, device=device))

    def score_val() -> float:
        if objective == "rollout":
            return rollout_loss(model, val[0], val[1], context, val[2], ids=vids)
        return horizon_loss(model, val[0], val[1], context, ids=vids)

    best, best_state, best_step, val_losses = math.inf, None, None, []
    if val is not None and objective == "rollout":  # the trained weights fine-tuning starts from
        best, best_step = score_val(), 0
        best_state = _snapshot(model)
        val_losses.append(best)
    t0, step, losses, acc, n_acc = budget.now(), 0, [], 0.0, 0
    stale, stopped_at = 0, None
    while True:
        frac = budget.progress(step, budget.now() - t0)
        if frac >= 1 or stop_after is not None and step >= stop_after:
            break
        if patience and val is not None and stale >= patience:
            stopped_at = step
            if log:
                log(f"stopped at step {step}: no lower validation score in the last {patience} checks "
                    f"(every {log_every} steps)")
            break
        set_lr(opt, cosine_lr(lr, step, frac))
        pick = sampler.draw(batch_size)
        z_np, ph_np = sampler.windows(pick)
        z = torch.as_tensor(z_np, dtype=dtype, device=device)  # (B, K+T)
        phase = torch.as_tensor(ph_np, dtype=dtype, device=device)  # (B, T)
        ids = None if sid is None else sid[torch.as_tensor(pick[:, 0], device=device)]  # (B,)
        if objective == "rollout":
            loss = rollout_crps(model, z, phase, context, uniforms(horizon, batch_size * paths, device=device),
                                ids=ids)
        else:
            x = window_inputs(z, phase, model.spec)  # (B, T, I)
            target = z[:, K + first:]  # (B, T - first)
            observed = torch.isfinite(target)
            raw = model(x, ids)[:, first:]  # (B, T - first, P)
            loss = model.head.loss(raw[observed], target[observed]).mean()
        value = loss.item()
        if not math.isfinite(value):  # stop at once: a NaN would only be averaged into the log
            raise OptionError("rollout_lr" if objective == "rollout" else "lr",
                              f"{lr:g} is likely too high: training diverged at step {step + 1} (the loss "
                              f"became {value}) and stopped; nothing was saved")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clipped_step(opt, model.parameters(), 10.0)
        step += 1
        acc += value
        n_acc += 1
        if step % log_every == 0:
            losses.append(acc / n_acc)
            msg = ""
            if val is not None:
                v = score_val()
                val_losses.append(v)
                if v < best:
                    best, best_step, stale = v, step, 0
                    best_state = _snapshot(model)
                else:
                    stale += 1
                msg = f"  val {v:.4f}{' *' if best_step == step else ''}"
            if log:
                log(f"{'rollout ' if objective == 'rollout' else ''}step {step:6d}  loss {acc / n_acc:.4f}{msg}"
                    f"  lr {opt.param_groups[0]['lr']:.2e}  {budget.now() - t0:6.1f}s")
            acc, n_acc = 0.0, 0
    if n_acc:
        losses.append(acc / n_acc)
    if val is not None:
        if stopped_at is None:  # the last weights are a candidate too
            v = score_val()
            val_losses.append(v)
            if v < best or best_state is None:
                best, best_step, best_state = v, step, None
        if best_state is not None:
            model.load_state_dict(best_state)
        if log:
            log(f"kept the weights of step {best_step} (validation {'CRPS' if objective == 'rollout' else 'loss'} "
                f"{best:.4f})")
    model.eval()
    return TrainResult(step, budget.now() - t0, losses, val_losses, best_step, check_every=log_every,
                       stopped_at=stopped_at, budget_steps=steps)


def check_interval(windows: int, batch_size: int) -> int:
    """Steps between validation checks: two epochs' worth (``windows`` training windows per
    epoch), at least 5 and at most 50."""
    return int(max(5, min(50, math.ceil(2 * windows / batch_size))))


def _snapshot(model: Forecaster) -> dict:
    """A copy of the weights, to restore the best ones after early stopping."""
    return {k: t.detach().clone() for k, t in model.state_dict().items()}


@torch.no_grad()
def horizon_loss(model: Forecaster, z: torch.Tensor, phase: torch.Tensor, context: int,
                 ids: torch.Tensor | None = None) -> float:
    """Mean head loss over the observed horizon steps of windows (teacher forced); ``ids`` (V,)
    the windows' series embedding rows, when the model has an embedding."""
    was = model.training
    model.eval()
    K = model.spec.max_lag
    raw = model(window_inputs(z, phase, model.spec), ids)[:, context:]  # (V, H, P)
    target = z[:, K + context:]  # (V, H)
    ok = torch.isfinite(target)
    model.train(was)
    return model.head.loss(raw[ok], target[ok]).mean().item()


# -- multi-step objective -----------------------------------------------------------------------
VAL_PATHS = 32  # paths per validation window when the rollout objective is validated


def rollout_paths(model: Forecaster, z: torch.Tensor, phase: torch.Tensor, context: int,
                  u: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """The model's own sample paths (B, M, H) over the horizons of windows, differentiable.

    ``z`` (B, K + C + H) scaled values (only the K + C before each origin are read),
    ``phase`` (B, C + H), ``u`` (H, B * M): paths are drawn as ``sample_paths`` draws
    them, ``z = F^{-1}(u)`` fed back as the next lags, but through the layer's autograd
    forward, so the gradient flows through F^{-1} and the fed-back values
    (reparameterisation). Paths of a window are adjacent in ``u``'s columns.
    """
    spec, K, C = model.spec, model.spec.max_lag, context
    B, H = z.shape[0], u.shape[0]
    M = u.shape[1] // B
    _, state = model.rnn(model.with_embedding(window_inputs(z[:, :K + C], phase[:, :C], spec), ids))
    state = repeat_state(state, M)  # (L, B*M, Hd)
    ids_m = None if ids is None else ids.repeat_interleave(M)  # (B*M,)
    before = z[:, C:K + C].repeat_interleave(M, dim=0)  # (B*M, K) the K values before the origin
    cols = list(before.unbind(1))
    phase_f = phase[:, C:C + H].repeat_interleave(M, dim=0)  # (B*M, H)
    if spec.growth:  # running sums, extended by each drawn value (drawn values are never NaN)
        sums, counts = (list(t.unbind(1)) for t in running_sums(before))
        ones = torch.ones_like(counts[0])
    for k in range(H):
        growth = None
        if spec.growth:
            growth = growth_inputs(lambda back: (sums[-1 - back], counts[-1 - back]), spec)
        xk = model.with_embedding(lag_inputs(torch.stack([cols[-l] for l in spec.lags], dim=1), phase_f[:, k],
                                             spec, growth), ids_m)
        out, state = model.rnn(xk[:, None], state)  # (B*M, 1, Hd)
        cols.append(model.head.ppf(model.readout(out[:, 0]), u[k]))
        if spec.growth:
            sums.append(sums[-1] + cols[-1])
            counts.append(counts[-1] + ones)
    return torch.stack(cols[K:], dim=1).reshape(B, M, H)


def sample_crps(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased CRPS estimate from M >= 2 draws ``x`` (…, M, H) of each of the values ``y`` (…, H):
    ``mean_i |x_i - y| - sum_{i,j} |x_i - x_j| / (2 M (M - 1))`` (Gneiting & Raftery 2007's
    energy form, with the pair term over distinct draws). NaN where y is NaN."""
    M = x.shape[-2]
    spread = (x.unsqueeze(-2) - x.unsqueeze(-3)).abs().sum(dim=(-3, -2)) / (2 * M * (M - 1))
    return (x - y.unsqueeze(-2)).abs().mean(dim=-2) - spread


def rollout_crps(model: Forecaster, z: torch.Tensor, phase: torch.Tensor, context: int,
                 u: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``sample_crps`` of ``rollout_paths`` over the observed horizon values of windows
    (scaled units): the multi-step training objective."""
    y = z[:, model.spec.max_lag + context:]  # (B, H)
    crps = sample_crps(rollout_paths(model, z, phase, context, u, ids), y)
    return crps[torch.isfinite(y)].mean()


@torch.no_grad()
def rollout_loss(model: Forecaster, z: torch.Tensor, phase: torch.Tensor, context: int,
                 u: torch.Tensor, ids: torch.Tensor | None = None) -> float:
    """``rollout_crps`` in eval mode (validation)."""
    was = model.training
    model.eval()
    v = rollout_crps(model, z, phase, context, u, ids).item()
    model.train(was)
    return v
