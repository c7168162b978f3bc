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
This module only parses flags; the work is ``rnnforge.forecast.train | predict |
evaluate``. ``train`` and ``evaluate`` (which trains) refuse an OUT that holds a
forecaster unless ``--force``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..forecast.checkpoint import FILENAME as CHECKPOINT


def _add_data_flags(p, *, from_checkpoint: bool = False, default_data: str | None = "sunspots") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None if from_checkpoint else default_data,
                   help="shipped series (sunspots, co2) or a CSV file: a header row of unique names, one "
                        "series per column, an optional timestamp column (dates, months, quarters such as "
                        "2020-Q1, or years in a column named year), or a long-format CSV of columns item_id "
                        "(or unique_id), timestamp (or ds, date) and target (or y, value), a row per series "
                        "and time in any order (many series train one global model); empty, NA, N/A, NaN and "
                        "null cells are missing values, any other non-number is an error; dates absent from a regular "
                        "daily, business-day, weekly, monthly, quarterly or annual grid are filled in as "
                        "missing values, with a warning saying how many"
                        + ("; default: the checkpoint's" if from_checkpoint else "")
                        + ("; default: the checkpoint's with --checkpoint, else sunspots"
                           if default_data is None and not from_checkpoint else ""))
    g.add_argument("--no-header", dest="header", action="store_false",
                   help="read a CSV without a header row, naming its columns series1..N (a file whose "
                        "first row holds values is refused without this flag)"
                        + ("; default: as the checkpoint's data was read" if from_checkpoint else ""))
    g.add_argument("--delimiter", default=None,
                   help="CSV field delimiter, one character (tab: '\\t' or tab); default: the most "
                        "frequent of comma, semicolon and tab in the first line, else comma")
    g.add_argument("--season", type=int, default=None,
                   help="steps per season; default: from the timestamps (hourly 24, daily 7, business-day "
                        "5, weekly 52, monthly 12, quarterly 4, annual 1; other sub-daily steps: the "
                        "steps of a day, or of an hour for steps under 5 minutes), else none")
    g.add_argument("--horizon", type=int, default=None,
                   help="steps to forecast; default: the checkpoint's, else 6 for annual and 8 for "
                        "quarterly data, else the season length when it is >= 24, else 24; at most a "
                        "tenth of the shortest series")
    g.add_argument("--context", type=int, default=None,
                   help="steps the model conditions on before each forecast (>= 2); default: the "
                        "checkpoint's, else max(120, 2 * horizon), at most a third of the series before "
                        "the evaluation windows")
    if from_checkpoint:
        p.set_defaults(header=None)


def _add_model_flags(p) -> None:
    from ..forecast.api import CHOSEN_TRANSFORMS
    from ..forecast.features import SCALERS, TRANSFORMS
    from ..forecast.trainer import LOSS_STEPS
    from ..forecast.heads import HEADS
    from ..forecast.model import CELLS

    g = p.add_argument_group("model")
    g.add_argument("--cell", default="auto", choices=("auto",) + CELLS,
                   help="recurrent cell of the notes: rnn (sigmoid), rnn-tanh, gru or lstm; auto: rnn "
                        "below 1000 training values (fewer weights to fit), lstm from there on")
    g.add_argument("--head", default="quantile", choices=sorted(HEADS),
                   help="distribution of the next value: gaussian and student-t (trained by "
                        "likelihood), quantile (learned monotone quantile function, trained by CRPS)")
    g.add_argument("--hidden", type=int, default=40, help="hidden units per layer")
    g.add_argument("--layers", type=int, default=2, help="recurrent layers")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout between recurrent layers")
    g.add_argument("--scaler", default="mean-abs", choices=SCALERS,
                   help="per-window scaling from the context: mean-abs (divided by the mean absolute "
                        "value, not centred, as DeepAR scales), mean (centred on the mean, divided by "
                        "the mean absolute deviation) or robust (median, IQR/1.349)")
    g.add_argument("--transform", default="auto", choices=CHOSEN_TRANSFORMS + TRANSFORMS,
                   help="what the model learns, fitted on values before each origin only: auto (one model "
                        "each of none, diff and drift; kept: the one, or their equal mixture, with the "
                        "lowest CRPS on the validation windows; the mixture where they are too few to "
                        "choose on), mix (always that mixture), none (the levels), diff (first "
                        "differences, paths integrated back by a cumulative sum), "
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
    g.add_argument("--val-windows", default="auto",
                   help="hold out the last N windows of --horizon steps of the training data and keep "
                        "the weights with the lowest loss on them (early stopping); they also estimate the "
                        "recalibration; 0: off; auto: at least 4, enough for 40 outcomes, as the series' "
                        "length allows")
    g.add_argument("--patience", type=int, default=10,
                   help="end training after this many validation checks without a lower validation loss "
                        "(checks every two epochs' worth of steps, 5..50); 0: run the whole budget")
    g.add_argument("--loss-steps", default="window", choices=LOSS_STEPS,
                   help="the steps of each training window the loss covers: window, every step (the "
                        "context's too, as DeepAR trains); horizon, the steps after the context only "
                        "(the context sets the scaling, as in a forecast, so no step in the loss is "
                        "scaled by statistics that include it)")
    g.add_argument("--recalibrate", default="auto", choices=("auto", "off"),
                   help="auto: estimate P(PIT <= u) on the validation windows and draw forecasts as "
                        "F^-1(R^-1(v)), pooled, per horizon step, a width scale only (one, or one per step), "
                        "or not at all, as "
                        "cross-validation on those windows chooses (stored in the checkpoint); off: never")
    g.add_argument("--rollout-steps", type=int, default=0,
                   help="then fine-tune for this many steps on the CRPS of the model's own sample paths "
                        "over each window's horizon (multi-step objective, gradient through the "
                        "sampling); early-stopped on the validation windows like --steps; a step "
                        "budget on top of --steps/--minutes (0: no fine-tuning)")
    g.add_argument("--rollout-paths", type=int, default=8, help="sample paths per window in fine-tuning (>= 2)")
    g.add_argument("--rollout-lr", type=float, default=1e-3, help="peak learning rate of fine-tuning")
    g.add_argument("--series-scaling", action="store_true",
                   help="standardise each series by the mean and mean absolute deviation of its training "
                        "part before training one model over all of them (a global model over series of "
                        "many scales); stored in the checkpoint and undone on the forecasts")
    g.add_argument("--series-embedding", default="0",
                   help="D > 0: learn a D-dimensional vector per training series, appended to the inputs "
                        "at every step (DeepAR's item embedding); the model then forecasts only the "
                        "series it was trained on (by name); 0: off")
    g.add_argument("--refit", action=argparse.BooleanOptionalAction, default=False,
                   help="after early stopping, train each model afresh (same seed and schedule) on all "
                        "the training data, validation windows included, for the step count it chose")


def _add_run_flags(p, *, samples: bool = True, writes_checkpoint: bool = False) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", default="runs/forecast", help="output folder")
    if writes_checkpoint:
        g.add_argument("--force", action="store_true",
                       help="replace the forecaster OUT already holds (forecasting has no resume; "
                            "without --force such an OUT is refused)")
    if samples:
        g.add_argument("--samples", type=int, default=1000, help="sample paths per forecast")
        g.add_argument("--fan-charts", default="10",
                       help="draw the fan charts of the first N series (0: none; all: every series; a "
                            "chart takes about 0.2 s)")
    g.add_argument("--seed", type=int, default=0, help="random seed (0 .. 2^64-1)")
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
    _add_run_flags(t, samples=False, writes_checkpoint=True)
    t.set_defaults(func=run_train)

    r = fsub.add_parser("predict", help="forecast past the end of each series: quantile CSV, fan chart",
                        formatter_class=fmt)
    r.add_argument("--checkpoint", default=None,
                   help="checkpoint file, or the run folder that holds it; default OUT/" + CHECKPOINT)
    _add_data_flags(r, from_checkpoint=True)
    _add_run_flags(r)
    r.set_defaults(func=run_predict)

    e = fsub.add_parser("evaluate", help="rolling-origin evaluation against baselines: report.md",
                        formatter_class=fmt)
    e.add_argument("--checkpoint", default=None,
                   help="evaluate this checkpoint or run folder (trained with --holdout-windows >= --windows); "
                        "default: train one first with the flags below, written to OUT/" + CHECKPOINT)
    _add_data_flags(e, default_data=None)
    _add_model_flags(e)
    e.add_argument("--windows", default="auto",
                   help="evaluation windows at the end of each series; auto: at least 5, enough for 60 "
                        "outcomes, in at most 40%% of the series (with --checkpoint: as many as it held out)")
    e.add_argument("--rolling-recalibration", default="on", choices=("on", "off"),
                   help="on: refit the recalibration (and the split-conformal margin) at every window's "
                        "origin on the model's forecasts known by then, as the baselines are refitted; "
                        "off: the one chosen on the validation windows for every window")
    e.add_argument("--gluonts-epochs", type=int, default=0,
                   help="training epochs (of 50 batches) of the gluonts-deepar baseline; 0: --steps / 50")
    e.add_argument("--baselines", default="seasonal-naive,ets,arima",
                   help="comma-separated baselines (seasonal-naive, ets, arima, gluonts-deepar) or "
                        "'none'; ets/arima need statsmodels, gluonts-deepar needs gluonts[torch]")
    _add_run_flags(e, writes_checkpoint=True)
    e.set_defaults(func=run_evaluate)
    p.set_defaults(func=lambda args: _no_action(p))


def _no_action(p) -> int:
    p.print_help()
    return 2


# -- helpers ------------------------------------------------------------------------------
def _whole_numbers(text: str, dest: str, also: str = "") -> list[int]:
    from ..errors import OptionError

    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise OptionError(dest, f"must be {also}comma-separated whole numbers, got {text!r}") from None


def _auto_int(text: str, dest: str) -> int | None:
    """``auto`` -> None, else a whole number (range checks are the library's)."""
    from ..errors import OptionError

    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise OptionError(dest, f"must be 'auto' or a whole number, got {text!r}") from None


def _fan_charts(text: str) -> int | None:
    """``all`` -> None (every series), else a whole number (range checks are the library's)."""
    from ..errors import OptionError

    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise OptionError("fan_charts", f"must be 'all' or a whole number, got {text!r}") from None


def _whole(text: str, dest: str) -> int:
    """A whole number (range checks are the library's)."""
    from ..errors import OptionError

    try:
        return int(text)
    except ValueError:
        raise OptionError(dest, f"must be a whole number, got {text!r}") from None


def _config(args):
    """The ForecastConfig of the model and training flags."""
    from ..forecast import ForecastConfig

    lags = "auto" if args.lags == "auto" else _whole_numbers(args.lags, "lags", "'auto' or ")
    return ForecastConfig(cell=args.cell, head=args.head, hidden=args.hidden, layers=args.layers,
                          dropout=args.dropout, scaler=args.scaler, transform=args.transform,
                          trend_window=args.trend_window, lags=lags, growth=_whole_numbers(args.growth, "growth"),
                          steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                          ensemble=args.ensemble, val_windows=_auto_int(args.val_windows, "val_windows"),
                          patience=args.patience, loss_steps=args.loss_steps, recalibrate=args.recalibrate,
                          series_scaling=args.series_scaling,
                          series_embedding=_whole(args.series_embedding, "series_embedding"),
                          rollout_steps=args.rollout_steps,
                          rollout_paths=args.rollout_paths, rollout_lr=args.rollout_lr, refit=args.refit,
                          seed=args.seed).validate()


def _data_options(args) -> dict:
    from ..forecast.series import check_delimiter

    return dict(season=args.season, header=args.header, delimiter=check_delimiter(args.delimiter),
                horizon=args.horizon, context=args.context, device=args.device)


def _check_out(out: str, *, writes_checkpoint: bool, force: bool = False) -> Path:
    """OUT as a folder that can be written; one that holds a forecaster is refused without
    --force when the run writes one. Nothing is created here: a run refused later leaves no
    folder behind."""
    import os

    from ..errors import UserError

    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    probe = out_path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"--out {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot create or write files in {probe} (permission denied)")
    ckpt = out_path / CHECKPOINT
    if writes_checkpoint and ckpt.exists():
        if not force:
            raise UserError(f"{out} holds a forecaster ({CHECKPOINT}); forecasting has no --resume: "
                            f"use --force to replace it, or another --out")
        print(f"--force: replacing the forecaster {ckpt} (and the files of its last predict/evaluate "
              f"are overwritten as they are written)")
    return out_path


def _start(command: str, args) -> None:
    from ..cli import print_config
    from ..runtime import set_threads

    print_config(command, args)
    set_threads(args.threads)


# -- actions ---------------------------------------------------------------------------------
def run_train(args) -> int:
    from ..forecast import save_checkpoint, train

    _start("forecast train", args)
    config = _config(args)
    out = _check_out(args.out, writes_checkpoint=True, force=args.force)
    model, meta = train(args.data, config, holdout_windows=args.holdout_windows, **_data_options(args))
    path = out / CHECKPOINT
    save_checkpoint(path, model, meta)
    print(f"checkpoint: {path}")
    return 0


def run_predict(args) -> int:
    from ..forecast import predict

    _start("forecast predict", args)
    checkpoint = Path(args.checkpoint) if args.checkpoint else Path(args.out) / CHECKPOINT
    _check_out(args.out, writes_checkpoint=False)
    predict(checkpoint, data=args.data, out=args.out, samples=args.samples, seed=args.seed,
            fan_charts=_fan_charts(args.fan_charts), **_data_options(args))
    return 0


def run_evaluate(args) -> int:
    from ..forecast import evaluate

    _start("forecast evaluate", args)
    names = [] if args.baselines.strip() in ("", "none") else [b.strip() for b in args.baselines.split(",")]
    config = None if args.checkpoint else _config(args)
    # without --checkpoint, evaluate trains and writes OUT/forecaster.safetensors
    out = _check_out(args.out, writes_checkpoint=not args.checkpoint, force=args.force)
    evaluate(args.data, config, out=out, checkpoint=args.checkpoint, windows=_auto_int(args.windows, "windows"),
             baselines=names,
             gluonts_epochs=args.gluonts_epochs, samples=args.samples, seed=args.seed,
             save_to=None if args.checkpoint else out / CHECKPOINT,
             rolling_recalibration=args.rolling_recalibration == "on", fan_charts=_fan_charts(args.fan_charts),
             **_data_options(args))
    return 0
