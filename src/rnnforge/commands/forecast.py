"""``rnnforge forecast train | predict | evaluate``: probabilistic forecasting with the notes' cells.

    rnnforge forecast train    --data sunspots --steps 1000 --out runs/sunspots
    rnnforge forecast predict  --out runs/sunspots --samples 1000
    rnnforge forecast evaluate --data co2 --windows 5 --minutes 3 --out runs/co2-eval

``train`` writes OUT/forecaster.safetensors (weights + config + data description);
``predict`` needs nothing but that checkpoint (the data defaults to the series
it was trained on) and writes OUT/quantiles.csv and OUT/fan-<series>.png;
``evaluate`` trains on all but the last ``--windows`` windows (or loads
``--checkpoint``), forecasts each window and scores the model and the
baselines on the same targets: OUT/report.md, OUT/pit-<model>.png, OUT/fan-*.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHECKPOINT = "forecaster.safetensors"


def _add_data_flags(p, *, from_checkpoint: bool = False) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None if from_checkpoint else "sunspots",
                   help="shipped series (sunspots, co2) or a CSV file (header row; one series per "
                        "column; optional date column; empty cells are missing values)"
                        + ("; default: the checkpoint's" if from_checkpoint else ""))
    g.add_argument("--season", type=int, default=None,
                   help="steps per season; default: from the timestamps (monthly 12, weekly 52, "
                        "daily 7), else none")
    g.add_argument("--horizon", type=int, default=None,
                   help="steps to forecast; default: the checkpoint's, else the season "
                        "length when it is >= 24, else 24")
    g.add_argument("--context", type=int, default=None,
                   help="steps the model conditions on before each forecast; default: the "
                        "checkpoint's, else max(120, 2 * horizon)")


def _add_model_flags(p) -> None:
    from ..forecast.features import SCALERS, TRANSFORMS
    from ..forecast.heads import HEADS
    from ..forecast.model import CELLS

    g = p.add_argument_group("model")
    g.add_argument("--cell", default="lstm", choices=CELLS,
                   help="recurrent cell of the notes: rnn (sigmoid), rnn-tanh, gru or lstm")
    g.add_argument("--head", default="quantile", choices=sorted(HEADS),
                   help="distribution of the next value: gaussian and student-t (trained by "
                        "likelihood), quantile (learned monotone quantile function, trained by CRPS)")
    g.add_argument("--hidden", type=int, default=40, help="hidden units per layer")
    g.add_argument("--layers", type=int, default=2, help="recurrent layers")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout between recurrent layers")
    g.add_argument("--scaler", default="mean", choices=SCALERS,
                   help="per-window scaling from the context: mean (mean, mean absolute deviation) "
                        "or robust (median, IQR)")
    g.add_argument("--transform", default="none", choices=TRANSFORMS,
                   help="what the model learns, fitted on values before each origin only: none (the "
                        "levels), diff (first differences, paths integrated back by a cumulative sum), "
                        "detrend (residuals from the context's least-squares line, extrapolated over the "
                        "horizon), drift (residuals from a line and season fitted over --trend-window "
                        "steps, re-anchored to the last quarter season's level) or deseason (the levels "
                        "less the season of that fit)")
    g.add_argument("--trend-window", type=int, default=None,
                   help="with --transform drift or deseason: steps before each origin its line and season are "
                        "fitted to (default: 10 seasons, at least the context)")
    g.add_argument("--lags", default="auto",
                   help="comma-separated lags fed as inputs (must include 1); auto: 1-4 and "
                        "s-1, s, s+1, 2s for season s")
    g.add_argument("--growth", default="",
                   help="comma-separated spans m: for each, the mean of the last m values less the mean "
                        "of the m before them is an input (a smoothed trend; m = the season cancels it); "
                        "default none")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=1000, help="step budget (0: none)")
    g.add_argument("--minutes", type=float, default=0.0,
                   help="wall-clock budget in minutes (0: none); the first budget spent ends training")
    g.add_argument("--batch-size", type=int, default=64, help="windows per step")
    g.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of Adam (cosine decay)")
    g.add_argument("--ensemble", type=int, default=1,
                   help="train K models from seeds seed..seed+K-1 and forecast with their equal "
                        "mixture (a deep ensemble: better calibrated, K times the training)")
    g.add_argument("--val-windows", type=int, default=4,
                   help="hold out the last N windows of --horizon steps of the training data and keep "
                        "the weights with the lowest loss on them (early stopping); 0: off")
    g.add_argument("--rollout-steps", type=int, default=0,
                   help="then fine-tune for this many steps on the CRPS of the model's own sample paths "
                        "over each window's horizon (multi-step objective, gradient through the "
                        "sampling); early-stopped on the validation windows like --steps; a step "
                        "budget on top of --steps/--minutes (0: no fine-tuning)")
    g.add_argument("--rollout-paths", type=int, default=8, help="sample paths per window in fine-tuning (>= 2)")
    g.add_argument("--rollout-lr", type=float, default=1e-3, help="peak learning rate of fine-tuning")
    g.add_argument("--refit", action=argparse.BooleanOptionalAction, default=False,
                   help="after early stopping, train each model afresh (same seed and schedule) on all "
                        "the training data, validation windows included, for the step count it chose")


def _add_run_flags(p, *, samples: bool = True) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", default="runs/forecast", help="output folder")
    if samples:
        g.add_argument("--samples", type=int, default=1000, help="sample paths per forecast")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (0: torch's default); small recurrent models run "
                        "fastest on one")


def register(sub) -> None:
    p = sub.add_parser("forecast", help="probabilistic forecasting: train, predict, evaluate",
                       description="Recurrent probabilistic forecasters (DeepAR-style) on the notes' "
                                   "cells: sample paths by inverse transform, calibration by the PIT.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fsub = p.add_subparsers(dest="action", metavar="ACTION")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    t = fsub.add_parser("train", help="train a forecaster; writes OUT/" + CHECKPOINT, formatter_class=fmt)
    _add_data_flags(t)
    _add_model_flags(t)
    t.add_argument("--holdout-windows", type=int, default=0,
                   help="leave the last N windows of --horizon steps out of training (for evaluate)")
    _add_run_flags(t, samples=False)
    t.set_defaults(func=run_train)

    r = fsub.add_parser("predict", help="forecast past the end of each series: quantile CSV, fan chart",
                        formatter_class=fmt)
    r.add_argument("--checkpoint", default=None, help="checkpoint file; default OUT/" + CHECKPOINT)
    _add_data_flags(r, from_checkpoint=True)
    _add_run_flags(r)
    r.set_defaults(func=run_predict)

    e = fsub.add_parser("evaluate", help="rolling-origin evaluation against baselines: report.md",
                        formatter_class=fmt)
    e.add_argument("--checkpoint", default=None,
                   help="evaluate this checkpoint (trained with --holdout-windows >= --windows); "
                        "default: train one first with the flags below")
    _add_data_flags(e)
    _add_model_flags(e)
    e.add_argument("--windows", type=int, default=5, help="evaluation windows at the end of each series")
    e.add_argument("--gluonts-epochs", type=int, default=0,
                   help="training epochs (of 50 batches) of the gluonts-deepar baseline; 0: --steps / 50")
    e.add_argument("--baselines", default="seasonal-naive,ets,arima",
                   help="comma-separated baselines (seasonal-naive, ets, arima, gluonts-deepar) or "
                        "'none'; ets/arima need statsmodels, gluonts-deepar needs gluonts[torch]")
    _add_run_flags(e)
    e.set_defaults(func=run_evaluate)
    p.set_defaults(func=lambda args: _no_action(p))


def _no_action(p) -> int:
    p.print_help()
    return 2


# -- helpers ------------------------------------------------------------------------------
def _setup(args):
    import torch

    from ..runtime import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    return str(resolve_device(args.device))


def _series(data: str, season):
    from ..forecast.series import load

    return load(data, season=season)


def _defaults(series, horizon, context):
    from ..forecast.series import check_horizon

    if horizon is None:
        m = max(s.season for s in series)
        horizon = m if m >= 24 else 24
    check_horizon(horizon)
    if context is None:
        context = max(120, 2 * horizon)
    return horizon, context


def _lags(text: str, season: int) -> list[int]:
    from ..forecast.features import default_lags

    if text == "auto":
        return default_lags(season)
    return _whole_numbers(text, "--lags", "'auto' or ")


def _whole_numbers(text: str, flag: str, also: str = "") -> list[int]:
    from ..errors import UserError

    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"{flag} must be {also}comma-separated whole numbers, got {text!r}") from None


def _transform_features(args, season: int, context: int) -> dict:
    """The FeatureSpec fields of --transform; for drift and deseason also their fit: --trend-window
    steps, up to 3 seasonal pairs as the ARIMA baseline has, the level of the last quarter season."""
    from ..errors import UserError
    from ..forecast.features import LONG_FIT

    if args.trend_window is not None and args.transform not in LONG_FIT:
        raise UserError(f"--trend-window is used by --transform drift and deseason only, "
                        f"not {args.transform!r}")
    if args.transform not in LONG_FIT:
        return dict(transform=args.transform)
    window = max(10 * season, context) if args.trend_window is None else args.trend_window
    if window < 2:
        raise UserError(f"--trend-window must be >= 2 steps, got {window}")
    return dict(transform=args.transform, trend_window=window,
                trend_harmonics=min(3, season // 2) if season > 1 else 0,
                level_window=max(1, season // 4))


def _train(args, series, horizon, context, holdout_windows, device):
    """Build and fit a model (or an ensemble) on all but the last ``holdout_windows * horizon`` values."""
    import torch

    from ..forecast.series import check_series
    from ..errors import UserError
    from ..forecast.model import Ensemble, Forecaster, ModelConfig
    from ..forecast.train import check_objective, fit

    if holdout_windows < 0:
        raise UserError(f"--holdout-windows must be >= 0, got {holdout_windows}")
    if args.hidden < 1 or args.layers < 1:
        raise UserError("--hidden and --layers must be >= 1")
    if not 0 <= args.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.ensemble < 1:
        raise UserError(f"--ensemble must be >= 1, got {args.ensemble}")
    if args.val_windows < 0:
        raise UserError(f"--val-windows must be >= 0, got {args.val_windows}")
    if args.rollout_steps < 0:
        raise UserError(f"--rollout-steps must be >= 0, got {args.rollout_steps}")
    if args.rollout_steps:
        check_objective("rollout", args.rollout_paths)
    if args.rollout_steps and not args.rollout_lr > 0:
        raise UserError(f"--rollout-lr must be > 0, got {args.rollout_lr}")
    if args.refit and not args.val_windows:
        raise UserError("--refit retrains for the step count early stopping chose; it needs --val-windows > 0")
    hold = holdout_windows * horizon
    for s in series:
        check_series(s, context=context, horizon=horizon, extra=hold + args.val_windows * horizon)
    train_part = [s.head(len(s) - hold) for s in series]
    season = max(s.season for s in series)
    cfg = ModelConfig(cell=args.cell, hidden=args.hidden, layers=args.layers, dropout=args.dropout,
                      head=args.head, features=dict(lags=_lags(args.lags, season),
                                                    growth=_whole_numbers(args.growth, "--growth"),
                                                    harmonics=2 if season > 1 else 0, scaler=args.scaler,
                                                    **_transform_features(args, season, context)))
    members, results = [], []
    for k in range(args.ensemble):
        if args.ensemble > 1:
            print(f"ensemble member {k + 1}/{args.ensemble} (seed {args.seed + k})")
        torch.manual_seed(args.seed + k)
        model = Forecaster(cfg).to(device)
        res = fit(model, train_part, context=context, horizon=horizon, steps=args.steps or None,
                  minutes=(args.minutes / args.ensemble) if args.minutes else None,
                  batch_size=args.batch_size, lr=args.lr, seed=args.seed + k, device=device,
                  val_windows=args.val_windows)
        print(f"trained {res.steps} steps in {res.seconds:.1f}s; final loss {res.losses[-1]:.4f}"
              + (f"; kept step {res.best_step} (validation loss {min(res.val_losses):.4f})"
                 if res.val_losses else ""))
        if args.refit:
            # the same schedule (res.steps long), stopped where validation stopped it, on data
            # that now reaches up to the evaluation cut
            torch.manual_seed(args.seed + k)
            model = Forecaster(cfg).to(device)
            again = fit(model, train_part, context=context, horizon=horizon, steps=res.steps, minutes=None,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed + k, device=device,
                        val_windows=0, stop_after=res.best_step, log=None)
            print(f"refitted on all the training data: {again.steps} steps in {again.seconds:.1f}s")
            res.refit_steps = again.steps
        if args.rollout_steps:
            tuned = fit(model, train_part, context=context, horizon=horizon, steps=args.rollout_steps, minutes=None,
                        batch_size=args.batch_size, lr=args.rollout_lr, seed=args.seed + k, device=device,
                        val_windows=args.val_windows, objective="rollout", paths=args.rollout_paths)
            print(f"fine-tuned on {args.rollout_paths} paths per window for {tuned.steps} steps in "
                  f"{tuned.seconds:.1f}s" + (f"; kept step {tuned.best_step} (validation CRPS "
                                             f"{min(tuned.val_losses):.4f})" if tuned.val_losses else ""))
            res.rollout = {"steps": tuned.steps, "seconds": tuned.seconds, "losses": tuned.losses,
                           "val_losses": tuned.val_losses, "best_step": tuned.best_step}
        members.append(model)
        results.append(res)
    model = members[0] if len(members) == 1 else Ensemble(members)
    meta = {"data": args.data, "season": args.season, "horizon": horizon, "context": context,
            "holdout_steps": hold, "train_end": {s.name: len(t) for s, t in zip(series, train_part)},
            "training": {"members": [{"steps": r.steps, "seconds": r.seconds, "losses": r.losses,
                                      "val_losses": r.val_losses, "best_step": r.best_step,
                                      "refit_steps": r.refit_steps, "rollout": r.rollout}
                                     for r in results],
                         "val_windows": args.val_windows, "refit": args.refit, "seed": args.seed, "lr": args.lr,
                         "batch_size": args.batch_size, "rollout_paths": args.rollout_paths,
                         "rollout_lr": args.rollout_lr}}
    return model, meta


# -- actions ---------------------------------------------------------------------------------
def run_train(args) -> int:
    from ..cli import print_config
    from ..forecast.train import save

    print_config("forecast train", args)
    device = _setup(args)
    series = _series(args.data, args.season)
    horizon, context = _defaults(series, args.horizon, args.context)
    model, meta = _train(args, series, horizon, context, args.holdout_windows, device)
    path = Path(args.out) / CHECKPOINT
    save(path, model, meta)
    print(f"checkpoint: {path}")
    return 0


def _load(args, device):
    from ..forecast.train import load

    path = Path(args.checkpoint) if args.checkpoint else Path(args.out) / CHECKPOINT
    return load(path, device=device)


def run_predict(args) -> int:
    from ..cli import print_config
    from ..forecast.series import check_series
    from ..forecast.evaluate import predict

    print_config("forecast predict", args)
    device = _setup(args)
    model, meta = _load(args, device)
    series = _series(args.data or meta["data"], args.season if args.season is not None else meta["season"])
    horizon = args.horizon if args.horizon is not None else meta["horizon"]
    horizon, context = _defaults(series, horizon, args.context or meta["context"])
    for s in series:
        check_series(s, context=context, horizon=1)
    predict(model, series, context=context, horizon=horizon, samples=args.samples, seed=args.seed,
            out=Path(args.out), device=device)
    print(f"wrote {Path(args.out) / 'quantiles.csv'} and fan charts")
    return 0


def run_evaluate(args) -> int:
    from ..cli import print_config
    from ..errors import UserError
    from ..forecast.baselines import resolve
    from ..forecast.evaluate import evaluate
    from ..forecast.train import save

    print_config("forecast evaluate", args)
    device = _setup(args)
    names = [] if args.baselines.strip() in ("", "none") else [b.strip() for b in args.baselines.split(",")]
    epochs = args.gluonts_epochs or (max(1, args.steps // 50) if args.steps else 30)
    baselines = resolve(names, gluonts_kwargs={"epochs": epochs,
                                               "samples": args.samples, "seed": args.seed})
    if args.windows < 1:
        raise UserError(f"--windows must be >= 1, got {args.windows}")
    if args.checkpoint:
        model, meta = _load(args, device)
        series = _series(args.data or meta["data"], args.season if args.season is not None else meta["season"])
        horizon = args.horizon if args.horizon is not None else meta["horizon"]
        horizon, context = _defaults(series, horizon, args.context or meta["context"])
        for s in series:
            end = meta.get("train_end", {}).get(s.name, len(s))
            first = len(s) - args.windows * horizon
            if end > first:
                raise UserError(f"{args.checkpoint} was trained on series {s.name!r} up to step {end}, "
                                f"but the evaluation windows start at step {first}: the scores would be "
                                f"in-sample; train with --holdout-windows {args.windows} (or more)")
    else:
        series = _series(args.data, args.season)
        horizon, context = _defaults(series, args.horizon, args.context)
        model, meta = _train(args, series, horizon, context, args.windows, device)
        save(Path(args.out) / CHECKPOINT, model, meta)
    k = len(model.members) if hasattr(model, "members") else 1
    tr = model.spec.transform
    name = f"{model.config.cell}/{model.config.head}" + (f"/{tr}" if tr != "none" else "") + (f" x{k}" if k > 1 else "")
    scores = evaluate(model, series, context=context, horizon=horizon, windows=args.windows,
                      samples=args.samples, seed=args.seed, baselines=baselines, out=Path(args.out),
                      device=device, model_name=name)
    for k, sc in scores.items():
        print(f"{k:>20}: CRPS {sc.crps:.4g}  wQL {sc.wql:.4g}  cov80 {sc.coverage[0.8]:.3f}  "
              f"PIT KS p {sc.pit_ks_p:.3g}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0
