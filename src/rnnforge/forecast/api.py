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

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import OptionError, UserError, check_float, check_int
from ..runtime import resolve_device
from ..training import Budget
from . import backtest, calibration
from .baselines import resolve as resolve_baselines
from .calibration import Recalibration
from .scaling import Scaled, SeriesScaling
from .checkpoint import load as load_checkpoint
from .features import LONG_FIT, SCALERS, TRANSFORMS, default_lags
from .heads import HEADS
from .model import CELLS, Ensemble, Forecaster, ModelConfig, members_of
from .series import Series, check_context, check_horizon, check_series, freq_words, load
from .trainer import check_loss_steps, check_objective, fit

#: seeds are unsigned 64-bit integers (torch.manual_seed's range)
SEED_MAX = 2 ** 64 - 1
#: sample paths per forecast beyond this are a typo (1e6 paths of a 100-step horizon are 800 MB)
SAMPLES_MAX = 1_000_000
RECALIBRATE = ("auto", "off")
#: default horizons of the frequencies whose season is short (M4's yearly and quarterly horizons)
HORIZONS = {"Y": 6, "Q": 8}
#: forecast outcomes the default evaluation and validation windows aim at
TEST_OUTCOMES, VAL_OUTCOMES = 60, 40
#: sample paths per validation forecast when a recalibration is estimated, and the most forecasts
CALIBRATION_PATHS, CALIBRATION_FORECASTS = 200, 2000
#: steps between the origins of the validation forecasts (overlapping: more PIT values per step)
CALIBRATION_STRIDE = 1
#: the transforms ``transform="auto"`` chooses among, by the CRPS of the validation windows
AUTO_TRANSFORMS = ("none", "diff", "drift")
#: the fewest validation outcomes ``transform="auto"`` chooses on; with fewer it keeps the mixture
#: (on segments of 40-100 values of the held-out suite, 0-20 validation outcomes, the mixture's
#: CRPS was below the choice's; on the suite cut where its test windows start they tied)
AUTO_CHOICE_OUTCOMES = 24
#: the transform options that train every one of AUTO_TRANSFORMS: ``auto`` keeps the best of them
#: or their equal mixture by validation CRPS, ``mix`` always their mixture
CHOSEN_TRANSFORMS = ("auto", "mix")
#: ``cell="auto"``: the notes' sigmoid RNN below this many training values, the LSTM from there on
#: (on the held-out suite's validation windows, 64-612 values, the RNN's CRPS was 7-11% lower
#: over two seeds and its intervals nearer their coverage; the LSTM's capacity pays on long data:
#: docs/forecast.md "Choosing the defaults on the validation windows")
AUTO_CELL_VALUES = 1000
#: series embedding sizes beyond this are a typo (the inputs themselves are a dozen or two)
EMBEDDING_MAX = 1024


@dataclass
class ForecastConfig:
    """The model and its training: everything :func:`train` needs besides the data.

    ``lags``: ``"auto"`` (1-4 and s-1, s, s+1, 2s for season s) or whole numbers
    including 1; ``steps`` / ``minutes``: the budget (0: none; the first spent
    ends training; ``minutes`` is shared by the ensemble's members);
    ``val_windows``: None resolves it from the data (:func:`plan`);
    ``transform``: ``"auto"`` (one model each of AUTO_TRANSFORMS; kept: the one, or their equal
    mixture, whose forecasts of the validation windows have the lowest CRPS; the mixture where
    they hold fewer than AUTO_CHOICE_OUTCOMES outcomes, or none, or refit trains on them),
    ``"mix"`` (always that mixture) or one of :data:`.features.TRANSFORMS`;
    ``patience``: validation checks without improvement that end training (0: never);
    ``recalibrate``: ``auto`` (a PIT map chosen on the validation windows, see
    :mod:`.calibration`) or ``off``; ``series_scaling``: standardise each series by
    its own training statistics first (a global model over series of many scales,
    :mod:`.scaling`); ``series_embedding`` D > 0: a learned D-vector per training series
    appended to the inputs at every step (DeepAR's item embedding; a model with one forecasts
    only the series it was trained on, by name).
    """

    cell: str = "auto"
    head: str = "quantile"
    hidden: int = 40
    layers: int = 2
    dropout: float = 0.1
    scaler: str = "mean-abs"
    transform: str = "auto"
    trend_window: int | None = None
    lags: str | list[int] = "auto"
    growth: list[int] = field(default_factory=list)
    steps: int = 1000
    minutes: float = 0.0
    batch_size: int = 64
    lr: float = 3e-3
    ensemble: int = 1
    val_windows: int | None = None
    patience: int = 10
    loss_steps: str = "window"
    recalibrate: str = "auto"
    series_scaling: bool = False
    series_embedding: int = 0
    rollout_steps: int = 0
    rollout_paths: int = 8
    rollout_lr: float = 1e-3
    refit: bool = False
    seed: int = 0

    def validate(self) -> "ForecastConfig":
        """Every option checked on its own (OptionError naming it); returns self."""
        for name, choices in (("cell", ("auto",) + CELLS), ("head", sorted(HEADS)), ("scaler", SCALERS),
                              ("transform", CHOSEN_TRANSFORMS + TRANSFORMS)):
            if getattr(self, name) not in choices:
                raise OptionError(name, f"{getattr(self, name)!r} is not one of {', '.join(choices)}")
        check_int("hidden", self.hidden, low=1)
        check_int("layers", self.layers, low=1, high=64)
        check_memory(self.hidden, self.layers)
        check_float("dropout", self.dropout, low=0, high=1, high_open=True)
        if self.trend_window is not None:
            if self.transform not in LONG_FIT + CHOSEN_TRANSFORMS:
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
        if self.val_windows is not None:
            check_int("val_windows", self.val_windows, low=0)
        check_int("patience", self.patience, low=0)
        check_loss_steps(self.loss_steps)
        check_int("series_embedding", self.series_embedding, low=0, high=EMBEDDING_MAX)
        if self.recalibrate not in RECALIBRATE:
            raise OptionError("recalibrate", f"{self.recalibrate!r} is not one of {', '.join(RECALIBRATE)}")
        check_int("rollout_steps", self.rollout_steps, low=0)
        if self.rollout_steps:
            check_int("rollout_paths", self.rollout_paths)
            check_objective("rollout", self.rollout_paths)
            check_float("rollout_lr", self.rollout_lr, low=0, low_open=True)
        if self.refit and self.val_windows == 0:
            raise OptionError("refit", "retrains for the step count early stopping chose; it needs val_windows > 0")
        check_seed(self.seed, self.ensemble)
        return self

    def lags_for(self, season: int, span: int | None = None) -> list[int]:
        """The lags: ``default_lags`` of the season (those the fitted ``span`` can show, when
        given) for ``auto``, else the ones named."""
        return default_lags(season, span) if self.lags == "auto" else sorted(set(self.lags))

    def model_config(self, season: int, context: int, series_names: list[str] = (), *,
                     span: int | None = None) -> ModelConfig:
        """The network of this configuration for a season and context (the lags and the
        transform's fit follow from them) and, with a series embedding, the training series'
        names (one embedding row each, in this order); ``span``: the longest series' part the
        network is fitted on (automatic lags beyond what it can show are left out).
        ``transform="auto"`` is resolved by :func:`train` (a model per candidate); here a
        transform must be named."""
        if self.transform in CHOSEN_TRANSFORMS:
            raise OptionError("transform", f"{self.transform!r} trains a network per transform; name one of "
                                           f"{', '.join(TRANSFORMS)} for a single network")
        if self.cell == "auto":
            raise OptionError("cell", "'auto' is resolved from the training data (Plan.cell); name one of "
                                      f"{', '.join(CELLS)} for a single network")
        lags = self.lags_for(season, span)
        return ModelConfig(cell=self.cell, hidden=self.hidden, layers=self.layers, dropout=self.dropout,
                           head=self.head, features=dict(lags=lags, growth=sorted(set(self.growth)),
                                                         harmonics=2 if season > 1 else 0, scaler=self.scaler,
                                                         **self.transform_features(season, context)),
                           series_embedding=self.series_embedding,
                           series_names=[str(n) for n in series_names] if self.series_embedding else [])

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
    windows: int = 0  # evaluation windows held out at the end of each series
    val_windows: int | None = None  # validation windows before them (None: the config's)

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
        short = min(self.series, key=len)
        sizes = (f" (the defaults follow the shortest series, {short.name!r}: every series must hold the "
                 f"windows)" if len(lengths) > 1 else "")
        return (f"data: {len(self.series)} series ({names}) of {n} steps, frequency {self.freq or 'none'}, "
                f"season {self.season}; horizon {self.horizon}, context {self.context}{sizes}")

    def training_values(self) -> int:
        """Observed values before the evaluation windows, over all series (what a model trains
        and validates on)."""
        hold = self.windows * self.horizon
        return int(sum(np.isfinite(s.values[:max(0, len(s) - hold)]).sum() for s in self.series))

    def fit_span(self) -> int:
        """The length of the longest series' part the network is fitted on: before the
        evaluation and the validation windows."""
        return max(len(s) for s in self.series) - (self.windows + (self.val_windows or 0)) * self.horizon

    def cell(self, config: "ForecastConfig") -> str:
        """``config.cell``, or for ``auto`` the notes' sigmoid RNN (``rnn``) below AUTO_CELL_VALUES
        training values and the LSTM from there on."""
        if config.cell != "auto":
            return config.cell
        return "rnn" if self.training_values() < AUTO_CELL_VALUES else "lstm"

    def resolved(self, config: "ForecastConfig | None" = None) -> str:
        """One line of everything resolved from the data: cell, season, lags, context, horizon, windows."""
        parts = [f"season {self.season}"]
        if config is not None and config.cell == "auto":
            n = self.training_values()
            parts.insert(0, f"cell {self.cell(config)} ({n} training values, "
                            f"{'<' if n < AUTO_CELL_VALUES else '>='} {AUTO_CELL_VALUES})")
        if config is not None:
            span, every = self.fit_span(), default_lags(self.season)
            lags = config.lags_for(self.season, span)
            parts.append(f"lags {','.join(map(str, lags))}")
            if config.lags == "auto" and lags != every:
                parts[-1] += f" (not {','.join(str(l) for l in every if l not in lags)}: too far back for the " \
                             f"{span} values fitted on)"
        parts += [f"context {self.context}", f"horizon {self.horizon}"]
        if self.val_windows is not None:
            parts.append(f"validation windows {self.val_windows} x {self.horizon}")
        if self.windows:
            outcomes = self.windows * self.horizon * len(self.series)
            parts.append(f"evaluation windows {self.windows} x {self.horizon} ({outcomes} outcomes)")
        return "resolved: " + ", ".join(parts)


def warn_short(series: list[Series], log, *, windows_flag: str = "--windows") -> None:
    """Say so when one series is under half the median length: the window sizes of every series
    follow the shortest (:func:`plan`). ``windows_flag``: the command's option for the windows."""
    short = min(series, key=len)
    median = float(np.median([len(s) for s in series]))
    if len(short) < median / 2:
        log(f"warning: series {short.name!r} has {len(short)} steps against a median of {median:g}, and the "
            f"horizon, context and windows of every series are sized to it; leave it out, or set --horizon, "
            f"--context and {windows_flag}")


def default_horizon(series: list[Series]) -> int:
    """The season when it is >= 24, else 24; 6 for annual and 8 for quarterly data; at most a
    tenth of the shortest series."""
    m = max(s.season for s in series)
    freqs = {s.freq for s in series}
    h = HORIZONS[freqs.pop()] if len(freqs) == 1 and next(iter(freqs)) in HORIZONS else (m if m >= 24 else 24)
    return max(1, min(h, min(len(s) for s in series) // 10))


def default_windows(n: int, horizon: int) -> int:
    """Evaluation windows: at least 5, enough for TEST_OUTCOMES outcomes, in at most 40% of n."""
    want = max(5, math.ceil(TEST_OUTCOMES / horizon))
    return max(1, min(want, int(0.4 * n) // horizon))


def default_context(n_train: int, horizon: int) -> int:
    """max(120, 2 * horizon), at most a third of the training part (at least 2)."""
    return max(2, min(max(120, 2 * horizon), n_train // 3))


def default_val_windows(n_train: int, context: int, horizon: int) -> int:
    """At least 4, enough for VAL_OUTCOMES outcomes, leaving context + horizon + 10 steps of
    training windows (0 when even one does not fit)."""
    room = (n_train - context - horizon - 10) // horizon
    return max(0, min(max(4, math.ceil(VAL_OUTCOMES / horizon)), room))


def plan(series: list[Series], *, horizon: int | None = None, context: int | None = None,
         windows: int | None = 0, val_windows: int | None = None) -> Plan:
    """The window sizes, defaults scaled to the data (``n``: the shortest series):

    horizon  ``default_horizon``; windows (evaluation, None: default) ``default_windows``;
    context  ``default_context`` of the part before the evaluation windows;
    val_windows (None: default) ``default_valid_windows`` of that part.
    """
    if horizon is None:
        horizon = default_horizon(series)
    check_horizon(horizon)
    n = min(len(s) for s in series)
    if windows is None:
        windows = default_windows(n, horizon)
    check_int("windows", windows, low=0)
    n_train = n - windows * horizon
    if context is None:
        context = default_context(n_train, horizon)
    check_context(context)
    if val_windows is None:
        val_windows = default_val_windows(n_train, context, horizon)
    return Plan(series, horizon, context, windows, val_windows)


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
    checkpoint metadata (data, window sizes, per-member training record, recalibration).

    Each member trains from seed ``config.seed + k`` with early stopping on the last
    ``val_windows`` windows of its training part, then (``refit``) afresh on all of it
    for the step count that kept, then (``rollout_steps``) fine-tunes on the CRPS of its
    own sample paths. Then (``recalibrate``) the PIT map of the model's forecasts of the
    validation windows is estimated (:mod:`.calibration`) and stored in the metadata.
    """
    config = (config or ForecastConfig()).validate()
    check_int("holdout_windows", holdout_windows, low=0)
    device = _device(device)
    series = _series(data, season=season, header=header, delimiter=delimiter, log=log)
    p = plan(series, horizon=horizon, context=context, windows=holdout_windows, val_windows=config.val_windows)
    log(p.describe())
    warn_short(series, log, windows_flag="--holdout-windows")
    log(p.resolved(config))
    return _train(p, config, holdout_windows, device, log,
                  data=str(data) if isinstance(data, (str, os.PathLike)) else None,
                  reading=dict(season=season, header=header, delimiter=delimiter))


def _fit_members(c: ForecastConfig, cfg: ModelConfig, train_part: list[Series], *, context: int, horizon: int,
                 val_windows: int, device: str, log) -> tuple[Forecaster | Ensemble, list]:
    """The ensemble of ``c.ensemble`` members of network ``cfg`` trained (early-stopped on the last
    ``val_windows`` windows, refitted and fine-tuned as ``c`` says) and their training records."""
    members, results = [], []
    for k in range(c.ensemble):
        if c.ensemble > 1:
            log(f"ensemble member {k + 1}/{c.ensemble} (seed {c.seed + k})")
        torch.manual_seed(c.seed + k)
        model = Forecaster(cfg).to(device)
        res = fit(model, train_part, context=context, horizon=horizon, steps=c.steps or None,
                  minutes=(c.minutes / c.ensemble) if c.minutes else None,
                  batch_size=c.batch_size, lr=c.lr, seed=c.seed + k, device=device,
                  val_windows=val_windows, patience=c.patience, loss_steps=c.loss_steps, log=log)
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
                        val_windows=0, stop_after=res.best_step, log_every=res.check_every,
                        loss_steps=c.loss_steps, log=None)
            log(f"refitted on all the training data: {again.steps} steps in {again.seconds:.1f}s")
            res.refit_steps = again.steps
            res.seconds += again.seconds
        if c.rollout_steps:
            tuned = fit(model, train_part, context=context, horizon=horizon, steps=c.rollout_steps, minutes=None,
                        batch_size=c.batch_size, lr=c.rollout_lr, seed=c.seed + k, device=device,
                        val_windows=val_windows, objective="rollout", paths=c.rollout_paths,
                        patience=c.patience, log=log)
            log(f"fine-tuned on {c.rollout_paths} paths per window for {tuned.steps} steps in "
                f"{tuned.seconds:.1f}s" + (f"; kept step {tuned.best_step} (validation CRPS "
                                           f"{min(tuned.val_losses):.4f})" if tuned.val_losses else ""))
            res.rollout = {"steps": tuned.steps, "seconds": tuned.seconds, "losses": tuned.losses,
                           "val_losses": tuned.val_losses, "best_step": tuned.best_step,
                           "stopped_at": tuned.stopped_at}
            res.seconds += tuned.seconds
        members.append(model)
        results.append(res)
    return (members[0] if len(members) == 1 else Ensemble(members)), results


def _train(p: Plan, config: ForecastConfig, holdout_windows: int, device: str, log, *, data, reading):
    c, horizon, context = replace(config, cell=p.cell(config)), p.horizon, p.context
    val_windows = p.val_windows if c.val_windows is None else c.val_windows
    if c.refit and not val_windows:
        raise OptionError("refit", "retrains for the step count early stopping chose; it needs val_windows > 0")
    hold = holdout_windows * horizon
    for s in p.series:
        check_series(s, context=context, horizon=horizon, extra=hold + val_windows * horizon)
    train_part = [s.head(len(s) - hold) for s in p.series]
    scaling = SeriesScaling.fit(train_part) if c.series_scaling else None
    data_part = train_part
    if scaling is not None:
        train_part = scaling.scale(train_part)
    if c.series_embedding:
        seen = set()
        for s in p.series:
            if s.name in seen:
                raise UserError(f"two series are named {s.name!r}; a series embedding learns one vector per "
                                f"series name, so the names must be distinct")
            seen.add(s.name)
    names = [s.name for s in p.series]
    span = p.fit_span()
    unseen = [l for l in c.lags_for(p.season, span) if l >= span]
    if unseen:  # only named lags: automatic ones beyond the span are left out
        one = len(unseen) == 1
        log(f"warning: the {span} values fitted on are too few for lag{'' if one else 's'} "
            f"{','.join(map(str, unseen))}: {'its weight' if one else 'their weights'} never train"
            f"{'s' if one else ''}; leave {'it' if one else 'them'} out of --lags")
    in_data = (lambda m: m) if scaling is None else (lambda m: Scaled(m, scaling))  # noqa: E731
    # the validation windows' forecasts are out of sample unless refit trained on them
    honest = bool(val_windows) and not c.refit
    candidates = list(AUTO_TRANSFORMS) if c.transform in CHOSEN_TRANSFORMS else [c.transform]
    outcomes = val_windows * horizon * len(p.series)
    choose = c.transform == "auto" and honest and outcomes >= AUTO_CHOICE_OUTCOMES
    if c.transform == "auto" and not choose:
        # nothing (or too little) to choose on: the mixture of the transforms (docs/forecast.md,
        # eighth and ninth rounds: on short segments of the suite it beat the levels and the choice)
        why = ("there are none" if not val_windows else "refit trains on them" if c.refit
               else f"they hold {outcomes} outcomes, fewer than {AUTO_CHOICE_OUTCOMES} to choose on")
        log(f"transform: mix (auto chooses on the validation windows; {why})")
    # seconds: what training spent beyond the kept members' own fits (which their results record):
    # the validation forecasts that chose the transform and the fits set aside
    fitted, selection, seconds = {}, {}, 0.0
    for transform in candidates:
        if len(candidates) > 1:
            log(f"transform {transform}:")
        cfg = replace(c, transform=transform).model_config(p.season, context, names, span=span)
        model, results = _fit_members(c, cfg, train_part, context=context, horizon=horizon,
                                      val_windows=val_windows, device=device, log=log)
        val = None
        if choose:
            t0 = time.perf_counter()
            val = validation_forecasts(in_data(model), data_part, context=context, horizon=horizon,
                                       windows=val_windows, seed=c.seed, device=device)
            seconds += time.perf_counter() - t0
            selection[transform] = val.crps()
            log(f"transform {transform}: validation CRPS {selection[transform]:.4g}")
        fitted[transform] = (model, results, val)
    if len(fitted) > 1:
        # the equal mixture of the candidates (a CRPS convex in the forecast: never worse than
        # their mean, and wider where they disagree, as the transforms do on a changing series)
        parts = list(fitted.values())
        val = ValidationForecasts.mixture([v for _, _, v in parts]) if selection else None
        fitted["mix"] = (Ensemble([m for model, _, _ in parts for m in members_of(model)]),
                         [r for _, results, _ in parts for r in results], val)
        if val is not None:
            selection["mix"] = val.crps()
            log(f"transform mix: validation CRPS {selection['mix']:.4g}")
    chosen = min(selection, key=selection.get) if selection else list(fitted)[-1]
    model, results, val = fitted[chosen]
    seconds += sum(r.seconds for t, (_, rs, _) in fitted.items() if t != "mix" for r in rs) \
        - sum(r.seconds for r in results)  # the fits set aside
    if selection:
        log(f"transform: {chosen} (the lowest CRPS on the validation windows of "
            + ", ".join(f"{t} {v:.4g}" for t, v in selection.items()) + ")")
    recal = Recalibration()
    if c.recalibrate == "auto":
        if not val_windows:
            log("recalibration: off (no validation windows)")
        elif c.refit:
            log("recalibration: off (--refit trains on the validation windows, so their PIT is in-sample)")
        else:
            t0 = time.perf_counter()
            if val is None:
                val = validation_forecasts(in_data(model), data_part, context=context, horizon=horizon,
                                           windows=val_windows, seed=c.seed, device=device)
            recal = val.recalibration()
            spent = time.perf_counter() - t0
            seconds += spent
            log(describe_recalibration(recal) + f" ({spent:.1f}s)")
    meta = {"data": data, **reading, "freq": p.freq, "series_seasons": sorted({s.season for s in p.series}),
            "horizon": horizon, "context": context,
            "holdout_steps": hold, "train_end": {s.name: len(t) for s, t in zip(p.series, train_part)},
            "recalibration": recal.to_dict(),
            "series_scaling": scaling.to_dict() if scaling is not None else None,
            "training": {"members": [{"transform": m.spec.transform, "steps": r.steps, "seconds": r.seconds,
                                      "losses": r.losses, "val_losses": r.val_losses, "best_step": r.best_step,
                                      "refit_steps": r.refit_steps, "rollout": r.rollout,
                                      "check_every": r.check_every, "stopped_at": r.stopped_at,
                                      "budget_steps": r.budget_steps}
                                     for m, r in zip(members_of(model), results)],
                         "seconds": sum(r.seconds for r in results) + seconds,
                         "val_windows": val_windows,
                         "transform": transform_of(model),
                         "transform_selection": selection or None,
                         **{k: v for k, v in asdict(c).items()
                            if k in ("refit", "seed", "lr", "batch_size", "rollout_paths", "loss_steps",
                                     "rollout_lr", "patience", "recalibrate", "series_scaling",
                                     "series_embedding")}}}
    return model, meta


@dataclass
class ValidationForecasts:
    """A model's forecasts of the validation windows: ``paths`` (F, N, H) from the origins
    ``picks`` (series, origin), their targets ``y`` (F, H) and ``folds`` (F,): the window each
    origin falls in, and ``first`` (F,): whether it starts one (the non-overlapping forecasts)."""

    paths: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    first: np.ndarray

    def crps(self) -> float:
        """Mean CRPS over the observed targets of every forecast."""
        from .metrics import crps_samples

        c = crps_samples(np.moveaxis(self.paths, 1, 0), self.y)
        return float(np.nanmean(np.where(np.isfinite(self.y), c, np.nan)))

    @classmethod
    def mixture(cls, parts: list["ValidationForecasts"]) -> "ValidationForecasts":
        """The forecasts of the equal mixture of the models whose forecasts of the same origins
        ``parts`` hold: every len(parts)-th path of each, so the mixture has as many paths as one
        part (a fair CRPS comparison) and draws evenly from each part's ensemble members."""
        n = len(parts)
        return cls(np.concatenate([v.paths[:, k::n] for k, v in enumerate(parts)], axis=1),
                   parts[0].y, parts[0].folds, parts[0].first)

    def recalibration(self) -> Recalibration:
        """The recalibration chosen by cross-validation over the windows (:func:`calibration.choose`),
        with the split-conformal margin of the 80% interval (non-overlapping forecasts) in its report."""
        return calibration.choose(self.paths, self.y, windows=self.folds, conformal=self.first)


def validation_origins(n: int, horizon: int, windows: int, stride: int = 1) -> list[int]:
    """Origins every ``stride`` steps whose whole horizon lies in the last ``windows`` windows of a
    series of n values: ``(windows - 1) * horizon // stride + 1`` of them for a stride dividing the
    horizon (the first at ``n - windows * horizon``, the last at ``n - horizon``)."""
    start = n - windows * horizon
    return list(range(start, n - horizon + 1, stride))


def validation_forecasts(model, series: list[Series], *, context: int, horizon: int, windows: int, seed: int = 0,
                         samples: int = CALIBRATION_PATHS, device: str = "cpu") -> ValidationForecasts:
    """``model``'s forecasts of the last ``windows`` windows of ``series`` (the validation windows:
    never trained on) from every step (``validation_origins`` with stride 1: overlapping forecasts,
    so many more PIT values per horizon step than the windows alone give), at most
    CALIBRATION_FORECASTS of them (drawn evenly at random when there are more)."""
    picks, folds = [], []
    for s in series:
        start = len(s) - windows * horizon
        for o in validation_origins(len(s), horizon, windows, CALIBRATION_STRIDE):
            if np.isfinite(s.values[max(0, o - context):o]).any():
                picks.append((s, o))
                folds.append((o - start) // horizon)
    if len(picks) > CALIBRATION_FORECASTS:  # many series: an even random share of them is enough
        keep = np.sort(np.random.default_rng(seed).choice(len(picks), CALIBRATION_FORECASTS, replace=False))
        picks, folds = [picks[i] for i in keep], [folds[i] for i in keep]
    gen = torch.Generator(device=device).manual_seed(seed)
    paths, y = backtest.forecasts_at(model, picks, context=context, horizon=horizon, samples=samples,
                                     generator=gen, device=device)
    first = np.array([(o - (len(s) - windows * horizon)) % horizon == 0 for s, o in picks])
    return ValidationForecasts(paths, y, np.asarray(folds), first)


def recalibrate(model, series: list[Series], *, context: int, horizon: int, windows: int, seed: int = 0,
                samples: int = CALIBRATION_PATHS, device: str = "cpu") -> Recalibration:
    """The recalibration of ``model`` chosen on its forecasts of the last ``windows`` windows of
    ``series`` (:func:`validation_forecasts`), each held out with its window in the
    cross-validation that chooses the mode; the report also holds the split-conformal margin
    of the 80% interval."""
    return validation_forecasts(model, series, context=context, horizon=horizon, windows=windows, seed=seed,
                                samples=samples, device=device).recalibration()


def rolling_start(meta: dict, series: list[Series]) -> dict[str, int] | None:
    """The first origin of each series whose forecast the model was not trained on: the first
    validation origin (its training cut less the validation windows), or the cut itself when
    the validation windows were trained on (``refit``); None when the model was trained with
    ``recalibrate="off"``."""
    t = meta.get("training") or {}
    if t.get("recalibrate", "auto") == "off":
        return None
    ends = meta.get("train_end") or {}
    back = 0 if t.get("refit") else int(t.get("val_windows") or 0) * int(meta["horizon"])
    return {s.name: max(0, int(ends.get(s.name, len(s))) - back) for s in series}


def describe_recalibration(rc: Recalibration) -> str:
    r = rc.report
    b, a = r["before"], r["after"]
    if r["windows"] < 2:
        return (f"recalibration: off ({r['windows']} validation window: choosing a map takes cross-validation "
                f"over at least 2); validation PIT: KS p {b['pit_ks_p']:.3g}, 80% coverage {b['cov80']:.3f}")
    return (f"recalibration: {rc.mode} (chosen by the CRPS of {r['windows']}-fold cross-validation over the "
            f"validation windows: " + ", ".join(f"{m} {v:.4g}" for m, v in r["cv_crps"].items())
            + f"); validation PIT before: KS p {b['pit_ks_p']:.3g}, 80% coverage {b['cov80']:.3f}; after "
              f"(cross-validated): KS p {a['pit_ks_p']:.3g}, 80% coverage {a['cov80']:.3f}; "
              + (f"split-conformal 80% margin {r['conformal_margin80']:.3g} interval widths"
                 if r.get("conformal_margin80") is not None else "too few windows for a split-conformal 80% margin"))


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
    series = _series(meta["data"] if data is None else data,
                     season=meta.get("season") if season is None else season,
                     header=meta.get("header", True) if header is None else header,
                     delimiter=meta.get("delimiter") if delimiter is None else delimiter, log=log)
    trained, seasons = meta.get("freq"), meta.get("series_seasons")
    other = next((s for s in series if trained and s.freq and s.freq != trained), None)
    if other is not None:
        raise UserError(f"series {other.name!r} is {freq_words(other.freq)} but the checkpoint was trained on "
                        f"{freq_words(trained)} data: its lags and seasonal inputs would be read at the wrong "
                        f"period; train a model on {freq_words(other.freq)} data to forecast it")
    other = next((s for s in series if seasons and s.season not in seasons), None)
    if other is not None:  # no timestamps to tell the frequency by: the seasons must agree
        named = " or ".join(map(str, seasons))
        raise UserError(f"series {other.name!r} has season {other.season}"
                        + (" (no timestamps)" if other.freq is None else "")
                        + f" but the checkpoint was trained on season {named}"
                        + (f" ({freq_words(trained)} data)" if trained else "")
                        + f"; give the data its timestamp column, or --season {seasons[-1]}")
    return series


def predict(checkpoint, *, data=None, out: str | Path, samples: int = 1000, seed: int = 0,
            horizon: int | None = None, context: int | None = None, season: int | None = None,
            header: bool | None = None, delimiter: str | None = None, device: str = "cpu",
            fan_charts: int | None = backtest.FAN_CHARTS, log=print) -> np.ndarray:
    """Forecast ``horizon`` steps past the end of every series: sample paths (S, N, H) in data
    units, and OUT/quantiles.csv and OUT/fan-<series>.png for the first ``fan_charts`` series
    (None: all).

    ``checkpoint``: a checkpoint file or a (model, meta) pair; the data, its reading options,
    the horizon and the context default to the checkpoint's.
    """
    check_samples(samples)
    check_seed(seed)
    backtest.check_fan_charts(fan_charts)
    device = _device(device)
    model, meta = _open(checkpoint, device)
    series = _checkpoint_series(meta, data, season, header, delimiter, log)
    p = plan(series, horizon=meta["horizon"] if horizon is None else horizon,
             context=meta["context"] if context is None else context)
    log(p.describe())
    for s in series:
        check_series(s, context=p.context, horizon=1)
    paths = backtest.write_forecast(_scaled(model, meta), series, context=p.context, horizon=p.horizon, samples=samples,
                                    seed=seed, out=Path(out), device=device, log=log,
                                    recalibration=_recalibration(meta), fan_charts=fan_charts)
    return paths


def _scaled(model, meta: dict):
    """The model in data units: wrapped by the checkpoint's per-series scaling when it has one."""
    scaling = SeriesScaling.from_dict(meta.get("series_scaling"))
    return model if scaling is None else Scaled(model, scaling)


def _recalibration(meta: dict) -> Recalibration:
    try:
        return Recalibration.from_dict(meta.get("recalibration"))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"the checkpoint's recalibration is unusable ({e})") from None


def transform_of(model) -> str:
    """The transform a model's members learn, or ``mix`` when they differ."""
    kinds = {m.spec.transform for m in members_of(getattr(model, "model", model))}
    return kinds.pop() if len(kinds) == 1 else "mix"


# -- evaluate -----------------------------------------------------------------------------------
def model_name(model: Forecaster | Ensemble) -> str:
    """``cell/head[/transform][ xK]``: the name the report gives the model."""
    k = len(model.members) if isinstance(model, Ensemble) else 1
    tr = transform_of(model)
    return f"{model.config.cell}/{model.config.head}" + (f"/{tr}" if tr != "none" else "") + \
        (f" x{k}" if k > 1 else "")


def evaluate(data=None, config: ForecastConfig | None = None, *, out: str | Path, checkpoint=None,
             windows: int | None = None, baselines=("seasonal-naive", "ets", "arima"), gluonts_epochs: int = 0,
             samples: int = 1000, seed: int = 0, horizon: int | None = None, context: int | None = None,
             season: int | None = None, header: bool | None = None, delimiter: str | None = None,
             device: str = "cpu", save_to: str | Path | None = None, rolling_recalibration: bool = True,
             fan_charts: int | None = backtest.FAN_CHARTS, log=print) -> dict:
    """Rolling-origin evaluation of a forecaster against baselines over the last ``windows``
    windows of each series (None: ``default_windows`` of the data): OUT/report.md,
    OUT/scores.json, PIT histograms and fan charts. Returns ``{model name: metrics.Scores}``
    (the model's as forecast, recalibrated when its checkpoint holds a recalibration; its
    scores before recalibration and with the split-conformal interval are in scores.json).

    With ``checkpoint`` (a file or a (model, meta) pair) that model is scored, and it must
    have been trained without those windows; else one is trained by :func:`train` with
    ``config`` holding them out, and saved to ``save_to`` when given.

    ``rolling_recalibration``: refit the recalibration at every window's origin on the
    forecasts known by then (:func:`.backtest.rolling_recalibration`), as the baselines are
    refitted; False applies the checkpoint's one recalibration to every window.
    """
    from .checkpoint import save

    if windows is not None:
        check_int("windows", windows, low=1)
    check_samples(samples)
    check_seed(seed)
    check_int("gluonts_epochs", gluonts_epochs, low=0)
    if not isinstance(rolling_recalibration, bool):
        raise OptionError("rolling_recalibration", f"must be True or False, not {rolling_recalibration!r}")
    backtest.check_fan_charts(fan_charts)
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
        h = meta["horizon"] if horizon is None else horizon
        if windows is None:  # as many as the checkpoint held out
            windows = max(1, min(meta.get("holdout_steps", 0) // h if h else 0,
                                 default_windows(min(len(s) for s in series), h)))
        p = plan(series, horizon=h, context=meta["context"] if context is None else context, windows=windows)
        log(p.describe())
        log(p.resolved())
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
        p = plan(series, horizon=horizon, context=context, windows=windows, val_windows=config.val_windows)
        windows = p.windows
        log(p.describe())
        warn_short(series, log)
        log(p.resolved(config))
        model, meta = _train(p, config, windows, device, log,
                             data=str(data or "sunspots") if not isinstance(data, list) else None,
                             reading=dict(season=season, header=True if header is None else header,
                                          delimiter=delimiter))
        if save_to is not None:
            save(save_to, model, meta)
            log(f"checkpoint: {save_to}")
    name = model_name(model)
    start = rolling_start(meta, series) if rolling_recalibration else None
    if rolling_recalibration and start is None:
        log("rolling recalibration: off (the model was trained with --recalibrate off)")
    scores = backtest.backtest(_scaled(model, meta), series, context=p.context, horizon=p.horizon, windows=windows,
                               samples=samples, seed=seed, baselines=chosen, out=Path(out), device=device,
                               model_name=name, log=log, recalibration=_recalibration(meta),
                               training=meta.get("training"), rolling_start=start,
                               calibration_paths=CALIBRATION_PATHS, fan_charts=fan_charts)
    for k, sc in scores.items():
        log(f"{k:>20}: CRPS {sc.crps:.4g}  wQL {sc.wql:.4g}  cov80 {sc.coverage[0.8]:.3f}  "
            f"PIT KS p {sc.pit_ks_p:.3g} (per step {sc.pit_steps_p:.3g}"
            + (f", 1-step {sc.pit1_ks_p:.3g})" if sc.pit1_n else ")"))
    log(f"report: {Path(out) / 'report.md'}")
    return scores
