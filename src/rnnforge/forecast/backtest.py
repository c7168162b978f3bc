"""Forecasts to files (``write_forecast``), and rolling-origin evaluation of the model against
baselines (``backtest``).

Rolling origin: the last ``windows * horizon`` values of every series are held
out of training; forecasts start at the ``windows`` origins
``n - windows*h, n - (windows-1)*h, ..., n - h`` and each covers the next ``h``
values (the windows tile the held-out tail). Each forecast conditions on the
``context`` values before its origin (actuals, as they would be known then);
the baselines are refitted on everything before each origin. All models are
scored on the same targets with the same metrics (:mod:`.metrics`).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch

from .series import Series, check_series
from ..errors import check_int
from .metrics import QUANTILE_LEVELS, SampleForecast, Scores, score
from .model import Forecaster
from .plots import fan_chart, pit_histogram

#: quantile levels written by ``predict`` (and drawn in fan charts)
CSV_LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def rolling_origins(n: int, horizon: int, windows: int) -> list[int]:
    return [n - (windows - k) * horizon for k in range(windows)]


def _x_axis(s: Series, start: int, stop: int):
    """Timestamps of steps start..stop-1 (extrapolated past the end), else step numbers."""
    if s.timestamps is None or s.future_timestamps(1) is None:
        return np.arange(start, stop)
    n = len(s)
    inside = s.timestamps[max(start, 0):min(stop, n)]
    if stop <= n:
        return inside
    return np.concatenate([inside, s.future_timestamps(stop - n)[max(0, start - n):]])


def write_quantiles(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_forecast(model: Forecaster, series: list[Series], *, context: int, horizon: int, samples: int,
                   seed: int, out: Path, device: str = "cpu", log=print) -> np.ndarray:
    """Forecast ``horizon`` steps past the end of every series: quantile CSV and fan charts."""
    gen = torch.Generator(device=device).manual_seed(seed)
    origins = [len(s) for s in series]
    t0 = time.perf_counter()
    paths = model.sample_paths(series, origins, context=context, horizon=horizon, num_samples=samples,
                               generator=gen, device=device)  # (S, N, H)
    log(f"sampled {samples} paths x {horizon} steps for {len(series)} series in "
        f"{time.perf_counter() - t0:.3f}s")
    rows = []
    for s, p in zip(series, paths):
        f = SampleForecast(p)
        q = dict(zip(CSV_LEVELS, f.quantile(CSV_LEVELS)))
        xs = _x_axis(s, len(s), len(s) + horizon)
        for k in range(horizon):
            rows.append({"series": s.name, "step": k + 1, "timestamp": str(xs[k]),
                         "mean": f"{f.mean[k]:.6g}", **{f"q{l:g}": f"{q[l][k]:.6g}" for l in CSV_LEVELS}})
        tail = min(len(s), max(4 * horizon, context))
        fan_chart(out / f"fan-{_safe(s.name)}.png", history_x=_x_axis(s, len(s) - tail, len(s)),
                  history=s.values[-tail:], future_x=xs, quantiles=q,
                  title=f"{s.name}: {samples} sample paths, median and intervals", ylabel=s.name)
    write_quantiles(out / "quantiles.csv", rows)
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def backtest(model: Forecaster | None, series: list[Series], *, context: int, horizon: int,
             windows: int, samples: int, seed: int, baselines: dict, out: Path,
             device: str = "cpu", model_name: str = "rnn", log=print) -> dict[str, Scores]:
    """Score the model and the baselines over the last ``windows`` windows; write the report."""
    check_int("windows", windows, low=1)
    for s in series:
        check_series(s, context=context, horizon=horizon, extra=(windows - 1) * horizon)
    gen = torch.Generator(device=device).manual_seed(seed)
    results: dict[str, tuple[list, list]] = {}
    actuals, keys = [], []
    for s in series:
        for o in rolling_origins(len(s), horizon, windows):
            actuals.append(s.values[o:o + horizon])
            keys.append((s, o))
    timings = {}
    if model is not None:
        t0 = time.perf_counter()
        fc = []
        for s in series:
            origins = rolling_origins(len(s), horizon, windows)
            paths = model.sample_paths([s] * windows, origins, context=context, horizon=horizon,
                                       num_samples=samples, generator=gen, device=device)  # (W, N, H)
            fc.extend(SampleForecast(p) for p in paths)
        timings[model_name] = time.perf_counter() - t0
        results[model_name] = fc
    for name, fn in baselines.items():
        t0 = time.perf_counter()
        if getattr(fn, "global_model", False):  # trained once, on the values before the first origin
            fn.fit([s.head(len(s) - windows * horizon) for s in series], context=context, horizon=horizon)
        results[name] = [fn(s, o, horizon) for s, o in keys]
        timings[name] = time.perf_counter() - t0
    scores = {name: score(fc, actuals, seed=seed) for name, fc in results.items()}
    per_series = {name: {s.name: score([f for f, (t, _) in zip(fc, keys) if t is s],
                                       [a for a, (t, _) in zip(actuals, keys) if t is s], seed=seed).crps
                         for s in series}
                  for name, fc in results.items()}
    out.mkdir(parents=True, exist_ok=True)
    for name, sc in scores.items():
        pit_histogram(sc.pit, out / f"pit-{_safe(name)}.png",
                                     title=f"PIT of {name} over {windows} windows x {horizon} steps")
    if model is not None:
        for s in series:
            o = rolling_origins(len(s), horizon, windows)[-1]
            f = [f for f, k in zip(results[model_name], keys) if k == (s, o)][0]
            q = dict(zip((0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95), f.quantile((0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95))))
            tail = min(o, max(4 * horizon, context))
            fan_chart(out / f"fan-{_safe(s.name)}.png", history_x=_x_axis(s, o - tail, o),
                      history=s.values[o - tail:o], future_x=_x_axis(s, o, o + horizon), quantiles=q,
                      actual=s.values[o:o + horizon],
                      title=f"{s.name}: last evaluation window, {model_name}", ylabel=s.name)
    import json

    (out / "scores.json").write_text(json.dumps(
        {name: {**sc.row(), "seconds": timings.get(name)} for name, sc in scores.items()}, indent=1))
    write_report(out / "report.md", scores, per_series, timings, series=series, context=context,
                 horizon=horizon, windows=windows, samples=samples, model_name=model_name)
    return scores


def _fmt(v: float) -> str:
    if v != v:
        return "n/a"
    return f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def write_report(path: Path, scores: dict[str, Scores], per_series: dict, timings: dict, *,
                 series: list[Series], context: int, horizon: int, windows: int, samples: int,
                 model_name: str, extra: str = "") -> None:
    best = min(scores, key=lambda k: scores[k].crps)
    lines = [
        "# Forecast evaluation",
        "",
        f"Rolling origin over the last {windows} windows of {horizon} steps of "
        f"{len(series)} series ({', '.join(s.name for s in series)}); context {context}; "
        f"{samples} sample paths per forecast for sample-based models. Every model is scored on the "
        f"same {next(iter(scores.values())).n} observed targets. Lower is better for CRPS, wCRPS, "
        f"wQL and MAE; coverage should match its nominal level; the PIT KS p-value should not be "
        f"small (a calibrated forecaster has uniform PIT values; note that PIT values within a "
        f"window are dependent, so the p-value is a guide, not an exact test).",
        "",
        "| model | CRPS | wCRPS | wQL | MAE (median) | cov 50% | cov 80% | cov 95% | PIT KS p | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, sc in scores.items():
        mark = " **(best CRPS)**" if name == best else ""
        c = sc.coverage
        lines.append(f"| {name}{mark} | {_fmt(sc.crps)} | {_fmt(sc.wcrps)} | {_fmt(sc.wql)} | "
                     f"{_fmt(sc.mae)} | {c[0.5]:.3f} | {c[0.8]:.3f} | {c[0.95]:.3f} | "
                     f"{_fmt(sc.pit_ks_p)} | {timings.get(name, float('nan')):.1f} |")
    if len(series) > 1:
        lines += ["", "CRPS per series:", "", "| model | " + " | ".join(s.name for s in series) + " |",
                  "|---|" + "---|" * len(series)]
        for name, d in per_series.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(d[s.name]) for s in series) + " |")
    lines += ["", "Definitions: CRPS in the series' units (closed form for Gaussian forecasts, energy "
              "form of the sample otherwise); wCRPS = sum CRPS / sum |y|; wQL = mean over levels "
              f"{', '.join(f'{q:g}' for q in QUANTILE_LEVELS)} of 2 sum pinball / sum |y|; coverage = "
              "share of targets inside the central interval.", "",
              "Files: `pit-<model>.png` (PIT histograms with KS p-value), `fan-<series>.png` (last "
              "window of the recurrent model)."]
    if extra:
        lines += ["", extra]
    path.write_text("\n".join(lines) + "\n")
