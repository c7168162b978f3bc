"""The forecasting library calls, one per action: ``train``, ``predict``, ``evaluate``.

    model, meta = train("sunspots", ForecastConfig(steps=800), horizon=24)
    save("runs/sun/forecaster.safetensors", model, meta)
    paths = predict("runs/sun/forecaster.safetensors", samples=1000, out="runs/sun")
    scores = evaluate("co2", ForecastConfig(minutes=3), windows=5, out="runs/co2-eval")

``ForecastConfig`` holds the model and training options; the data options
(``season``, ``header``, ``delimiter``) and the window sizes (``horizon``,
``context``) are arguments of each call, resolved against the data by
:func:`plan` (and, for ``predict`` and ``evaluate`` of a checkpoint, taken from
the checkpoint when not given). Every message goes through ``log``; errors are
``UserError``/``OptionError`` naming the parameter, never a command-line flag.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import OptionError, check_float, check_int
from ..runtime import resolve_device
from ..training import Budget
from . import backtest
from .baselines import resolve as resolve_baselines
from .checkpoint import load as load_checkpoint
from .features import LONG_FIT, SCALERS, TRANSFORMS, default_lags
from .heads import HEADS
from .model import CELLS, Ensemble, Forecaster, ModelConfig
from .series import Series, check_context, check_horizon, check_series, load
from .trainer import check_objective, fit

#: seeds are unsigned 64-bit integers (torch.manual_seed's range)
SEED_MAX = 2 ** 64 - 1
#: sample paths per forecast beyond this are a typo (1e6 paths of a 100-step horizon are 800 MB)
SAMPLES_MAX = 1_000_000


@dataclass
class ForecastConfig:
    """The model and its training: everything :func:`train` needs besides the data.

    ``lags``: ``"auto"`` (1-4 and s-1, s, s+1, 2s for season s) or whole numbers
    including 1; ``steps`` / ``minutes``: the budget (0: none; the first spent
    ends training; ``minutes`` is shared by the ensemble's members).
    """

    cell: str = "lstm"
    head: str = "quantile"
    hidden: int = 40
    layers: int = 2
    dropout: float = 0.1
    scaler: str = "mean"
    transform: str = "none"
    trend_window: int | None = None
    lags: str | list[int] = "auto"
    growth: list[int] = field(default_factory=list)
    steps: int = 1000
    minutes: float = 0.0
    batch_size: int = 64
    lr: float = 3e-3
    ensemble: int = 1
    val_windows: int = 4
    rollout_steps: int = 0
    rollout_paths: int = 8
    rollout_lr: float = 1e-3
    refit: bool = False
    seed: int = 0

    def validate(self) -> "ForecastConfig":
        """Every option checked on its own (OptionError naming it); returns self."""
        for name, choices in (("cell", CELLS), ("head", sorted(HEADS)), ("scaler", SCALERS),
                              ("transform", TRANSFORMS)):
            if getattr(self, name) not in choices:
                raise OptionError(name, f"{getattr(self, name)!r} is not one of {', '.join(choices)}")
        check_int("hidden", self.hidden, low=1)
        check_int("layers", self.layers, low=1, high=64)
        check_memory(self.hidden, self.layers)
        check_float("dropout", self.dropout, low=0, high=1, high_open=True)
        if self.trend_window is not None:
            if self.transform not in LONG_FIT:
                raise OptionError("trend_window", f"is used by transform drift and deseason only, "
                                                  f"not {self.transform!r}")
            check_int("trend_window", self.trend_window)
            if self.trend_window < 2:
                raise OptionError("trend_window", f"must be >= 2 steps, got {self.trend_window}")
        if self.lags != "auto":
            if not self.lags or any(isinstance(l, bool) or not isinstance(l, int) or l < 1 for l in self.lags) \
                    or 1 not in self.lags:
                raise OptionError("lags", f"must be 'auto' or whole numbers >= 1 that include 1, got {self.lags}")
        for m in self.growth:
            if isinstance(m, bool) or not isinstance(m, int) or m < 1:
                raise OptionError("growth", f"spans must be positive whole numbers of steps, got {list(self.growth)}")
        check_int("steps", self.steps, low=0)
        check_float("minutes", self.minutes, low=0)
        Budget.of(self.steps, self.minutes)
        check_int("batch_size", self.batch_size, low=1, high=1 << 20)
        check_float("lr", self.lr, low=0, low_open=True)
        check_int("ensemble", self.ensemble, low=1, high=1000)
        check_int("val_windows", self.val_windows, low=0)
        check_int("rollout_steps", self.rollout_steps, low=0)
        if self.rollout_steps:
            check_int("rollout_paths", self.rollout_paths)
            check_objective("rollout", self.rollout_paths)
            check_float("rollout_lr", self.rollout_lr, low=0, low_open=True)
        if self.refit and not self.val_windows:
            raise OptionError("refit", "retrains for the step count early stopping chose; it needs val_windows > 0")
        check_seed(self.seed, self.ensemble)
        return self

    def model_config(self, season: int, context: int) -> ModelConfig:
        """The network of this configuration for a season and context (the lags and the
        transform's fit follow from them)."""
        lags = default_lags(season) if self.lags == "auto" else sorted(set(self.lags))
        return ModelConfig(cell=self.cell, hidden=self.hidden, layers=self.layers, dropout=self.dropout,
                           head=self.head, features=dict(lags=lags, growth=sorted(set(self.growth)),
                                                         harmonics=2 if season > 1 else 0, scaler=self.scaler,
                                                         **self.transform_features(season, context)))

    def transform_features(self, season: int, context: int) -> dict:
        """The FeatureSpec fields of the transform; for drift and deseason also their fit:
        ``trend_window`` steps (default 10 seasons, at least the context), up to 3 seasonal
        pairs as the ARIMA baseline has, the level of the last quarter season."""
        if self.transform not in LONG_FIT:
            return dict(transform=self.transform)
        window = max(10 * season, context) if self.trend_window is None else self.trend_window
        return dict(transform=self.transform, trend_window=window,
                    trend_harmonics=min(3, season // 2) if season > 1 else 0,
                    level_window=max(1, season // 4))


def check_seed(seed, count: int = 1) -> int:
    """A seed (and the ``count - 1`` after it, for an ensemble) within torch's unsigned 64 bits."""
    check_int("seed", seed, low=0, high=SEED_MAX)
    if seed + count - 1 > SEED_MAX:
        raise OptionError("seed", f"{seed} + {count - 1} (one seed per ensemble member) is beyond 64 bits")
    return seed


def check_samples(samples) -> int:
    return check_int("samples", samples, low=1, high=SAMPLES_MAX)


def check_memory(hidden: int, layers: int) -> None:
    """Refuse a network whose weights, gradients and Adam's two moments (4 float32 copies)
    would not fit in this machine's memory, saying how much they would need."""
    gates = 4  # the LSTM's, the most of any cell
    inputs = 64  # more than any feature set has
    params = gates * hidden * (inputs + hidden + 2) + (layers - 1) * gates * hidden * (2 * hidden + 2)
    need = 16 * params
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        have = 1 << 40
    if need > have:
        raise OptionError("hidden", f"{hidden} would need about {_bytes(need)} for the weights, gradients and "
                                    f"optimizer state of {layers} layer{'s' if layers > 1 else ''}; this machine "
                                    f"has {_bytes(have)}")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@dataclass
class Plan:
    """The data settings a run resolved from the data and the options given."""

    series: list[Series]
    horizon: int
    context: int

    @property
    def season(self) -> int:
        return max(s.season for s in self.series)

    @property
    def freq(self) -> str | None:
        freqs = {s.freq for s in self.series}
        return freqs.pop() if len(freqs) == 1 else None

    def describe(self) -> str:
        lengths = sorted({len(s) for s in self.series})
        n = f"{lengths[0]}" if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
        names = ", ".join(s.name for s in self.series[:5]) + (", ..." if len(self.series) > 5 else "")
        return (f"data: {len(self.series)} series ({names}) of {n} steps, frequency {self.freq or 'none'}, "
                f"season {self.season}; horizon {self.horizon}, context {self.context}")


def plan(series: list[Series], *, horizon: int | None = None, context: int | None = None) -> Plan:
    """Defaults of the window sizes: the horizon is the season when it is >= 24, else 24;
    the context max(120, 2 * horizon)."""
    if horizon is None:
        m = max(s.season for s in series)
        horizon = m if m >= 24 else 24
    check_horizon(horizon)
    if context is None:
        context = max(120, 2 * horizon)
    check_context(context)
    return Plan(series, horizon, context)


def _series(data, *, season, header, delimiter, log) -> list[Series]:
    if isinstance(data, (str, os.PathLike)):
        return load(str(data), season=season, header=header, delimiter=delimiter, log=log)
    series = list(data)
    if not series or not all(isinstance(s, Series) for s in series):
        raise OptionError("data", "must be a shipped series' name, a CSV path or a list of Series")
    return series


def _device(device) -> str:
    return str(resolve_device(str(device)))


# -- train --------------------------------------------------------------------------------------
def train(data: str | list[Series], config: ForecastConfig | None = None, *, horizon: int | None = None,
          context: int | None = None, holdout_windows: int = 0, season: int | None = None,
          header: bool = True, delimiter: str | None = None, device: str = "cpu",
          log=print) -> tuple[Forecaster | Ensemble, dict]:
    """Build and fit a forecaster (an ensemble of ``config.ensemble``) on all but the last
    ``holdout_windows * horizon`` values of each series; returns the model and the
    checkpoint metadata (data, window sizes, per-member training record).

    Each member trains from seed ``config.seed + k`` with early stopping on the last
    ``val_windows`` windows of its training part, then (``refit``) afresh on all of it
    for the step count that kept, then (``rollout_steps``) fine-tunes on the CRPS of its
    own sample paths.
    """
    config = (config or ForecastConfig()).validate()
    check_int("holdout_windows", holdout_windows, low=0)
    device = _device(device)
    series = _series(data, season=season, header=header, delimiter=delimiter, log=log)
    p = plan(series, horizon=horizon, context=context)
    log(p.describe())
    return _train(p, config, holdout_windows, device, log,
                  data=str(data) if isinstance(data, (str, os.PathLike)) else None,
                  reading=dict(season=season, header=header, delimiter=delimiter))


def _train(p: Plan, config: ForecastConfig, holdout_windows: int, device: str, log, *, data, reading):
    c, horizon, context = config, p.horizon, p.context
    hold = holdout_windows * horizon
    for s in p.series:
        check_series(s, context=context, horizon=horizon, extra=hold + c.val_windows * horizon)
    train_part = [s.head(len(s) - hold) for s in p.series]
    cfg = c.model_config(p.season, context)
    members, results = [], []
    for k in range(c.ensemble):
        if c.ensemble > 1:
            log(f"ensemble member {k + 1}/{c.ensemble} (seed {c.seed + k})")
        torch.manual_seed(c.seed + k)
        model = Forecaster(cfg).to(device)
        res = fit(model, train_part, context=context, horizon=horizon, steps=c.steps or None,
                  minutes=(c.minutes / c.ensemble) if c.minutes else None,
                  batch_size=c.batch_size, lr=c.lr, seed=c.seed + k, device=device,
                  val_windows=c.val_windows, log=log)
        log(f"trained {res.steps} steps in {res.seconds:.1f}s; final loss {res.losses[-1]:.4f}"
            + (f"; kept step {res.best_step} (validation loss {min(res.val_losses):.4f})"
               if res.val_losses else ""))
        if c.refit:
            # the same schedule (res.steps long), stopped where validation stopped it, on data
            # that now reaches up to the evaluation cut
            torch.manual_seed(c.seed + k)
            model = Forecaster(cfg).to(device)
            again = fit(model, train_part, context=context, horizon=horizon, steps=res.steps, minutes=None,
                        batch_size=c.batch_size, lr=c.lr, seed=c.seed + k, device=device,
                        val_windows=0, stop_after=res.best_step, log=None)
            log(f"refitted on all the training data: {again.steps} steps in {again.seconds:.1f}s")
            res.refit_steps = again.steps
        if c.rollout_steps:
            tuned = fit(model, train_part, context=context, horizon=horizon, steps=c.rollout_steps, minutes=None,
                        batch_size=c.batch_size, lr=c.rollout_lr, seed=c.seed + k, device=device,
                        val_windows=c.val_windows, objective="rollout", paths=c.rollout_paths, log=log)
            log(f"fine-tuned on {c.rollout_paths} paths per window for {tuned.steps} steps in "
                f"{tuned.seconds:.1f}s" + (f"; kept step {tuned.best_step} (validation CRPS "
                                           f"{min(tuned.val_losses):.4f})" if tuned.val_losses else ""))
            res.rollout = {"steps": tuned.steps, "seconds": tuned.seconds, "losses": tuned.losses,
                           "val_losses": tuned.val_losses, "best_step": tuned.best_step}
        members.append(model)
        results.append(res)
    model = members[0] if len(members) == 1 else Ensemble(members)
    meta = {"data": data, **reading, "freq": p.freq, "horizon": horizon, "context": context,
            "holdout_steps": hold, "train_end": {s.name: len(t) for s, t in zip(p.series, train_part)},
            "training": {"members": [{"steps": r.steps, "seconds": r.seconds, "losses": r.losses,
                                      "val_losses": r.val_losses, "best_step": r.best_step,
                                      "refit_steps": r.refit_steps, "rollout": r.rollout}
                                     for r in results],
                         **{k: v for k, v in asdict(c).items()
                            if k in ("val_windows", "refit", "seed", "lr", "batch_size", "rollout_paths",
                                     "rollout_lr")}}}
    return model, meta


# -- predict ------------------------------------------------------------------------------------
def _open(checkpoint, device: str):
    """(model, meta) from a checkpoint path or a (model, meta) pair."""
    if isinstance(checkpoint, tuple):
        model, meta = checkpoint
        return model.to(device), meta
    return load_checkpoint(Path(checkpoint), device=device)


def _checkpoint_series(meta: dict, data, season, header, delimiter, log) -> list[Series]:
    """The series to forecast: ``data``, else the checkpoint's, read as it was unless overridden."""
    if data is None and meta.get("data") is None:
        raise OptionError("data", "is needed: the checkpoint was trained on series passed in memory")
    return _series(meta["data"] if data is None else data,
                   season=meta.get("season") if season is None else season,
                   header=meta.get("header", True) if header is None else header,
                   delimiter=meta.get("delimiter") if delimiter is None else delimiter, log=log)


def predict(checkpoint, *, data=None, out: str | Path, samples: int = 1000, seed: int = 0,
            horizon: int | None = None, context: int | None = None, season: int | None = None,
            header: bool | None = None, delimiter: str | None = None, device: str = "cpu",
            log=print) -> np.ndarray:
    """Forecast ``horizon`` steps past the end of every series: sample paths (S, N, H) in data
    units, and OUT/quantiles.csv and OUT/fan-<series>.png.

    ``checkpoint``: a checkpoint file or a (model, meta) pair; the data, its reading options,
    the horizon and the context default to the checkpoint's.
    """
    check_samples(samples)
    check_seed(seed)
    device = _device(device)
    model, meta = _open(checkpoint, device)
    series = _checkpoint_series(meta, data, season, header, delimiter, log)
    p = plan(series, horizon=meta["horizon"] if horizon is None else horizon,
             context=meta["context"] if context is None else context)
    log(p.describe())
    for s in series:
        check_series(s, context=p.context, horizon=1)
    paths = backtest.write_forecast(model, series, context=p.context, horizon=p.horizon, samples=samples,
                                    seed=seed, out=Path(out), device=device, log=log)
    log(f"wrote {Path(out) / 'quantiles.csv'} and fan charts")
    return paths


# -- evaluate -----------------------------------------------------------------------------------
def model_name(model: Forecaster | Ensemble) -> str:
    """``cell/head[/transform][ xK]``: the name the report gives the model."""
    k = len(model.members) if isinstance(model, Ensemble) else 1
    tr = model.spec.transform
    return f"{model.config.cell}/{model.config.head}" + (f"/{tr}" if tr != "none" else "") + \
        (f" x{k}" if k > 1 else "")


def evaluate(data=None, config: ForecastConfig | None = None, *, out: str | Path, checkpoint=None,
             windows: int = 5, baselines=("seasonal-naive", "ets", "arima"), gluonts_epochs: int = 0,
             samples: int = 1000, seed: int = 0, horizon: int | None = None, context: int | None = None,
             season: int | None = None, header: bool | None = None, delimiter: str | None = None,
             device: str = "cpu", save_to: str | Path | None = None, log=print) -> dict:
    """Rolling-origin evaluation of a forecaster against baselines over the last ``windows``
    windows of each series: OUT/report.md, OUT/scores.json, PIT histograms and fan charts.
    Returns ``{model name: metrics.Scores}``.

    With ``checkpoint`` (a file or a (model, meta) pair) that model is scored, and it must
    have been trained without those windows; else one is trained by :func:`train` with
    ``config`` holding them out, and saved to ``save_to`` when given.
    """
    from .checkpoint import save

    check_int("windows", windows, low=1)
    check_samples(samples)
    check_seed(seed)
    check_int("gluonts_epochs", gluonts_epochs, low=0)
    if isinstance(baselines, str):
        raise OptionError("baselines", "must be a list of names")
    if checkpoint is None:
        config = (config or ForecastConfig()).validate()
    steps = config.steps if config is not None else 0
    epochs = gluonts_epochs or (max(1, steps // 50) if steps else 30)
    chosen = resolve_baselines(list(baselines), log=log,
                               gluonts_kwargs={"epochs": epochs, "samples": samples, "seed": seed})
    device = _device(device)
    if checkpoint is not None:
        model, meta = _open(checkpoint, device)
        series = _checkpoint_series(meta, data, season, header, delimiter, log)
        p = plan(series, horizon=meta["horizon"] if horizon is None else horizon,
                 context=meta["context"] if context is None else context)
        log(p.describe())
        where = checkpoint if not isinstance(checkpoint, tuple) else "the checkpoint"
        for s in series:
            end = meta.get("train_end", {}).get(s.name, len(s))
            first = len(s) - windows * p.horizon
            if end > first:
                raise OptionError("holdout_windows", f"of the checkpoint must be >= {windows}, the evaluation "
                                                     f"windows: {where} was trained on series {s.name!r} up to "
                                                     f"step {end}, but the windows start at step {first}, so "
                                                     f"the scores would be in-sample")
    else:
        series = _series("sunspots" if data is None else data, season=season,
                         header=True if header is None else header, delimiter=delimiter, log=log)
        p = plan(series, horizon=horizon, context=context)
        log(p.describe())
        model, meta = _train(p, config, windows, device, log,
                             data=str(data or "sunspots") if not isinstance(data, list) else None,
                             reading=dict(season=season, header=True if header is None else header,
                                          delimiter=delimiter))
        if save_to is not None:
            save(save_to, model, meta)
            log(f"checkpoint: {save_to}")
    name = model_name(model)
    scores = backtest.backtest(model, series, context=p.context, horizon=p.horizon, windows=windows,
                               samples=samples, seed=seed, baselines=chosen, out=Path(out), device=device,
                               model_name=name, log=log)
    for k, sc in scores.items():
        log(f"{k:>20}: CRPS {sc.crps:.4g}  wQL {sc.wql:.4g}  cov80 {sc.coverage[0.8]:.3f}  "
            f"PIT KS p {sc.pit_ks_p:.3g}")
    log(f"report: {Path(out) / 'report.md'}")
    return scores
