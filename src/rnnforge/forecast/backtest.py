"""Forecasts to files (``write_forecast``), and rolling-origin evaluation of the model against
baselines (``backtest``).

Rolling origin: the last ``windows * horizon`` values of every series are held
out of training; forecasts start at the ``windows`` origins
``n - windows*h, n - (windows-1)*h, ..., n - h`` and each covers the next ``h``
values (the windows tile the held-out tail). Each forecast conditions on the
``context`` values before its origin (actuals, as they would be known then);
the baselines are refitted on everything before each origin. All models are
scored on the same targets with the same metrics (:mod:`.metrics`).

Besides the H-step forecasts, every model that is cheap to refit is asked for the
one-step-ahead forecast from every origin of the evaluation span (the first
origin up to the last value, each conditioning on the actuals before it): their
PIT values are iid U[0, 1] under a correct model, so their KS test
(``pit1_ks_p``) is exact where the pooled multi-step one is not (:mod:`.metrics`).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .series import Series, check_series
from ..errors import check_int
from . import calibration
from .calibration import Recalibration, conformal_interval
from .metrics import QUANTILE_LEVELS, SampleForecast, Scores, ks_uniform, pit_values, score
from .model import Forecaster
from .plots import fan_chart, pit_histogram

#: quantile levels written by ``predict`` (and drawn in fan charts)
CSV_LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
#: fan charts drawn by default: those of the first this many series (a chart costs about 0.2 s,
#: so a global model over thousands of series would spend minutes drawing them)
FAN_CHARTS = 10
#: no recalibration (forecasts as drawn)
OFF = Recalibration()


def check_fan_charts(fan_charts: int | None) -> int | None:
    """How many series get a fan chart: a whole number >= 0, or None for every series."""
    return None if fan_charts is None else check_int("fan_charts", fan_charts, low=0)


def charted(series: list[Series], fan_charts: int | None) -> list[Series]:
    """The series that get a fan chart: the first ``fan_charts`` (None: all)."""
    n = check_fan_charts(fan_charts)
    return list(series) if n is None else list(series)[:n]


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
                   seed: int, out: Path, device: str = "cpu", log=print,
                   recalibration: Recalibration | None = None, fan_charts: int | None = FAN_CHARTS) -> np.ndarray:
    """Forecast ``horizon`` steps past the end of every series (recalibrated when a
    recalibration is given and active): quantile CSV, and fan charts of the first
    ``fan_charts`` series (None: every one)."""
    drawn = len(charted(series, fan_charts))
    gen = torch.Generator(device=device).manual_seed(seed)
    origins = [len(s) for s in series]
    t0 = time.perf_counter()
    paths = model.sample_paths(series, origins, context=context, horizon=horizon, num_samples=samples,
                               generator=gen, device=device)  # (S, N, H)
    paths = (recalibration or OFF).apply(paths)
    log(f"sampled {samples} paths x {horizon} steps for {len(series)} series in "
        f"{time.perf_counter() - t0:.3f}s")
    rows = []
    for i, (s, p) in enumerate(zip(series, paths)):
        f = SampleForecast(p)
        q = dict(zip(CSV_LEVELS, f.quantile(CSV_LEVELS)))
        xs = _x_axis(s, len(s), len(s) + horizon)
        for k in range(horizon):
            rows.append({"series": s.name, "step": k + 1, "timestamp": str(xs[k]),
                         "mean": f"{f.mean[k]:.6g}", **{f"q{l:g}": f"{q[l][k]:.6g}" for l in CSV_LEVELS}})
        if i >= drawn:
            continue
        tail = min(len(s), max(4 * horizon, context))
        fan_chart(out / f"fan-{_safe(s.name)}.png", history_x=_x_axis(s, len(s) - tail, len(s)),
                  history=s.values[-tail:], future_x=xs, quantiles=q,
                  title=f"{s.name}: {samples} sample paths, median and intervals", ylabel=s.name)
    write_quantiles(out / "quantiles.csv", rows)
    charts = ("no fan charts" if not drawn else f"{drawn} fan chart{'s' if drawn > 1 else ''}"
              if drawn == len(series) else f"fan charts of the first {drawn} of {len(series)} series")
    log(f"wrote {out / 'quantiles.csv'}" + (f" and {charts}" if drawn else f" ({charts})"))
    return paths


#: sample paths per one-step forecast are drawn in batches of at most this many
ONE_STEP_BATCH = 200_000
#: the most forecasts a rolling recalibration draws over the whole span (an even random share of
#: the origins beyond this, as for the validation windows of many series)
ROLLING_FORECASTS = 4000


def forecasts_at(model, picks: list[tuple[Series, int]], *, context: int, horizon: int, samples: int,
                 generator: torch.Generator, device: str = "cpu",
                 batch_paths: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """Sample paths (F, N, H) of the model's forecasts from the origins ``picks`` (series, origin), in
    batches of about ``batch_paths`` paths, and their targets (F, H) (NaN past a series' end)."""
    paths, ys = [], []
    chunk = max(1, batch_paths // samples)
    for i in range(0, len(picks), chunk):
        part = picks[i:i + chunk]
        paths.append(model.sample_paths([s for s, _ in part], [o for _, o in part], context=context,
                                        horizon=horizon, num_samples=samples, generator=generator, device=device))
        for s, o in part:
            y = np.full(horizon, np.nan)
            seen = s.values[o:o + horizon]
            y[:seen.size] = seen
            ys.append(y)
    return np.concatenate(paths), np.stack(ys)


@dataclass
class Rolling:
    """Recalibration refitted at the origin of every evaluation window (``recalibrations[k]`` for
    window k), on the model's forecasts from every out-of-sample origin before it, from
    ``start[series name]`` (the first validation origin, or the first held-out one when the
    validation windows were trained on) up to the window's origin, with their targets cut there:
    each window is forecast with only what was known at its origin, as the baselines, refitted at
    every origin, are."""

    recalibrations: list[Recalibration]

    @property
    def forecasts(self) -> list[int]:
        """How many forecasts each window's recalibration was chosen on."""
        return [rc.report.get("forecasts", 0) for rc in self.recalibrations]

    def at(self, s: Series, origin: int, horizon: int) -> Recalibration:
        """The recalibration in force at ``origin`` of series s (its evaluation window's)."""
        W = len(self.recalibrations)
        k = W - 1 - (len(s) - 1 - origin) // horizon
        return self.recalibrations[min(max(k, 0), W - 1)]

    def modes(self) -> list[str]:
        return [rc.mode for rc in self.recalibrations]


def rolling_recalibration(model, series: list[Series], *, context: int, horizon: int, windows: int,
                          start: dict[str, int], samples: int, seed: int, device: str = "cpu") -> Rolling:
    """The recalibration of each evaluation window (:class:`Rolling`): at its origin,
    :func:`calibration.choose` on the forecasts from every origin since ``start`` whose first target
    is known then (steps past the origin masked), each forecast held out with the window of
    ``horizon`` steps it starts in; with the split-conformal margin of the 80% interval from the
    fully observed forecasts that start a window."""
    picks, offsets = [], []  # offsets: steps from the series' first out-of-sample origin
    for s in series:
        first = max(int(start[s.name]), 1)
        last = rolling_origins(len(s), horizon, windows)[-1]
        for o in range(first, last):
            if np.isfinite(s.values[max(0, o - context):o]).any():
                picks.append((s, o))
                offsets.append(o - first)
    if len(picks) > ROLLING_FORECASTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(picks), ROLLING_FORECASTS, replace=False))
        picks, offsets = [picks[i] for i in keep], [offsets[i] for i in keep]
    if not picks:
        return Rolling([Recalibration() for _ in range(windows)])
    offsets = np.asarray(offsets, dtype=np.int64)
    folds, starts = offsets // horizon, offsets % horizon == 0
    origin = np.array([o for _, o in picks], dtype=np.int64)
    end = np.array([len(s) for s, _ in picks], dtype=np.int64)
    gen = torch.Generator(device=device).manual_seed(seed + 2)
    paths, y = forecasts_at(model, picks, context=context, horizon=horizon, samples=samples, generator=gen,
                            device=device)
    out = []
    for k in range(windows):
        cut = end - (windows - k) * horizon  # each series' origin of window k
        yk = np.where(origin[:, None] + np.arange(horizon) < cut[:, None], y, np.nan)
        use = np.isfinite(yk).any(axis=1)
        out.append(calibration.choose(paths[use], yk[use], windows=folds[use], conformal=starts[use])
                   if use.any() else Recalibration())
    return Rolling(out)


def apply_each(paths: np.ndarray, rcs: list[Recalibration]) -> np.ndarray:
    """Forecasts ``paths`` (F, N, H), forecast i recalibrated by ``rcs[i]``: each distinct
    recalibration applied once, to all its forecasts together."""
    groups: dict[int, list[int]] = {}
    for i, rc in enumerate(rcs):
        if rc.active:
            groups.setdefault(id(rc), []).append(i)
    if not groups:
        return paths
    out = np.array(paths, dtype=np.float64)
    for idx in groups.values():
        out[idx] = rcs[idx[0]].apply(paths[idx])
    return out


def one_step_pit(model, series: list[Series], *, context: int, span: int, samples: int, seed: int,
                 device: str = "cpu", recalibration_at=None) -> tuple[np.ndarray, np.ndarray]:
    """PIT values of the model's one-step-ahead forecasts from the last ``span`` origins of every
    series, recalibrated as the forecasts are (``recalibration_at``: a function of (series, origin)
    giving the Recalibration in force there; None: none), and the same before recalibration: two
    (M,) arrays.
    Origins whose target is missing, or whose context holds no two consecutive observed values
    (which a differencing transform needs), are skipped: a gap in the data leaves out a few
    PIT values instead of failing the evaluation."""
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    keys = one_step_origins(series, context=context, span=span)
    if not keys:
        return np.zeros(0), np.zeros(0)
    raw, y = forecasts_at(model, keys, context=context, horizon=1, samples=samples, generator=gen, device=device,
                          batch_paths=ONE_STEP_BATCH)  # (M, N, 1), (M, 1)
    before = pit_values([SampleForecast(p) for p in raw], y, seed=seed)[:, 0]
    rcs = [(recalibration_at and recalibration_at(s, o)) or OFF for s, o in keys]
    if not any(rc.active for rc in rcs):
        return before, before
    after = pit_values([SampleForecast(p) for p in apply_each(raw, rcs)], y, seed=seed)[:, 0]
    return after, before


def one_step_origins(series: list[Series], *, context: int, span: int) -> list[tuple[Series, int]]:
    """``(series, origin)`` of every one-step forecast scored: the last ``span`` origins of each
    series, less those whose target is missing or whose context holds no two consecutive
    observed values."""
    return [(s, o) for s in series for o in range(len(s) - span, len(s)) if _one_step_ok(s, o, context)]


def _one_step_ok(s: Series, o: int, context: int) -> bool:
    ok = np.isfinite(s.values[max(0, o - context):o])
    return bool(np.isfinite(s.values[o]) and (ok[1:] & ok[:-1]).any())


#: baselines whose one-step forecasts from every origin are cheap enough to score (the others
#: refit a statistical model or run a network per origin)
ONE_STEP_BASELINES = ("seasonal-naive",)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def backtest(model: Forecaster | None, series: list[Series], *, context: int, horizon: int,
             windows: int, samples: int, seed: int, baselines: dict, out: Path,
             device: str = "cpu", model_name: str = "rnn", log=print,
             recalibration: Recalibration | None = None, training: dict | None = None,
             rolling_start: dict[str, int] | None = None, calibration_paths: int = 200,
             fan_charts: int | None = FAN_CHARTS) -> dict[str, Scores]:
    """Score the model and the baselines over the last ``windows`` windows; write the report.

    The model's forecasts are recalibrated when ``recalibration`` is active; its scores
    before recalibration and the coverage of the split-conformal 80% interval (the margin
    in ``recalibration.report``) go into scores.json and the report beside them. With
    ``rolling_start`` (the first out-of-sample origin of each series, by name) the
    recalibration and the margin are instead refitted at every window's origin on the
    forecasts from ``calibration_paths`` paths known by then (:func:`rolling_recalibration`).
    The model's time is ``training["seconds"]`` (training and recalibration) plus the
    sampling and any refitting here. Fan charts: the last window of the first ``fan_charts``
    series (None: every series)."""
    check_int("windows", windows, low=1)
    drawn = charted(series, fan_charts)
    for s in series:
        check_series(s, context=context, horizon=horizon, extra=(windows - 1) * horizon)
    gen = torch.Generator(device=device).manual_seed(seed)
    results: dict[str, tuple[list, list]] = {}
    actuals, keys = [], []
    for s in series:
        for o in rolling_origins(len(s), horizon, windows):
            actuals.append(s.values[o:o + horizon])
            keys.append((s, o))
    timings, extra_rows, notes = {}, {}, []
    rolling = None
    if model is not None:
        t0 = time.perf_counter()
        if rolling_start is not None:
            rolling = rolling_recalibration(model, series, context=context, horizon=horizon, windows=windows,
                                            start=rolling_start, samples=calibration_paths, seed=seed,
                                            device=device)
            at = lambda s, o: rolling.at(s, o, horizon)  # noqa: E731
        else:
            at = lambda s, o: recalibration or OFF  # noqa: E731
        rcs = [at(s, o) for s, o in keys]  # the recalibration of each forecast
        raw = np.concatenate([model.sample_paths([s] * windows, rolling_origins(len(s), horizon, windows),
                                                 context=context, horizon=horizon, num_samples=samples,
                                                 generator=gen, device=device) for s in series])  # in keys' order
        results[model_name] = [SampleForecast(p) for p in apply_each(raw, rcs)]
        timings[model_name] = time.perf_counter() - t0 + float((training or {}).get("seconds") or 0.0)
        if any(rc.active for rc in rcs):
            before = score([SampleForecast(p) for p in raw], actuals, seed=seed)
            extra_rows["before_recalibration"] = {k: v for k, v in before.row().items()}
        margins = [rc.report.get("conformal_margin80") for rc in rcs]
        if all(m is not None for m in margins):
            m = np.asarray(margins, dtype=np.float64)[:, None]  # each forecast's margin
            lo, hi = conformal_interval(raw, m)
            y = np.stack(actuals)
            ok = np.isfinite(y)
            extra_rows["conformal80"] = {"margin": float(m.mean()), "cov80": float(((y >= lo) & (y <= hi))[ok].mean()),
                                         "mean_width": float((hi - lo)[ok].mean())}
        if rolling is not None:
            extra_rows["rolling_recalibration"] = {"modes": rolling.modes(), "forecasts": rolling.forecasts}
        notes = training_notes(training, recalibration, extra_rows, model_name)
    for name, fn in baselines.items():
        t0 = time.perf_counter()
        if getattr(fn, "global_model", False):  # trained once, on the values before the first origin
            fn.fit([s.head(len(s) - windows * horizon) for s in series], context=context, horizon=horizon)
        results[name] = [fn(s, o, horizon) for s, o in keys]
        timings[name] = time.perf_counter() - t0
    scores = {name: score(fc, actuals, seed=seed) for name, fc in results.items()}
    span = windows * horizon
    if model is not None:
        t0 = time.perf_counter()
        after, before = one_step_pit(model, series, context=context, span=span, samples=samples, seed=seed,
                                     device=device, recalibration_at=at)
        scores[model_name].with_one_step(after)
        if "before_recalibration" in extra_rows:
            extra_rows["before_recalibration"].update(
                pit1_ks_p=ks_uniform(before)[1] if before.size >= 2 else float("nan"), pit1_n=int(before.size))
        timings[model_name] += time.perf_counter() - t0
    keys1 = one_step_origins(series, context=context, span=span)
    for name, fn in baselines.items():
        if name in ONE_STEP_BASELINES and keys1:
            scores[name].with_one_step(pit_values([fn(s, o, 1) for s, o in keys1],
                                                  [s.values[o:o + 1] for s, o in keys1], seed=seed)[:, 0])
    where = {}  # series index -> the positions of its windows in keys
    for k, (s, _) in enumerate(keys):
        where.setdefault(id(s), []).append(k)
    per_series = {}
    for name, fc in results.items():
        per_series[name] = {}
        for s in series:
            idx = where[id(s)]
            ok = [k for k in idx if np.isfinite(actuals[k]).any()]
            per_series[name][s.name] = (score([fc[k] for k in ok], [actuals[k] for k in ok], seed=seed).crps
                                        if ok else float("nan"))
    out.mkdir(parents=True, exist_ok=True)
    for name, sc in scores.items():
        pit_histogram(sc.pit, out / f"pit-{_safe(name)}.png",
                                     title=f"PIT of {name} over {windows} windows x {horizon} steps")
    if model is not None:
        for s in drawn:
            o = rolling_origins(len(s), horizon, windows)[-1]
            f = [f for f, k in zip(results[model_name], keys) if k == (s, o)][0]
            q = dict(zip((0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95), f.quantile((0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95))))
            tail = min(o, max(4 * horizon, context))
            fan_chart(out / f"fan-{_safe(s.name)}.png", history_x=_x_axis(s, o - tail, o),
                      history=s.values[o - tail:o], future_x=_x_axis(s, o, o + horizon), quantiles=q,
                      actual=s.values[o:o + horizon],
                      title=f"{s.name}: last evaluation window, {model_name}", ylabel=s.name)
    import json

    with open(out / "windows.csv", "w", newline="") as f:  # per-window CRPS, for paired comparisons
        w = csv.writer(f)
        w.writerow(["model", "series", "origin", "crps", "n"])
        for name, fc in results.items():
            for f_, (s, o), y in zip(fc, keys, actuals):
                ok = np.isfinite(y)
                if ok.any():
                    w.writerow([name, s.name, o, f"{float(f_.crps(y)[ok].mean()):.8g}", int(ok.sum())])
    with open(out / "per_series.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", *per_series])
        for s in series:
            w.writerow([s.name, *(f"{per_series[name][s.name]:.8g}" for name in per_series)])
    rows = {name: {**sc.row(), "seconds": timings.get(name)} for name, sc in scores.items()}
    if model is not None:
        rows[model_name].update(extra_rows)
    (out / "scores.json").write_text(json.dumps(rows, indent=1))
    write_report(out / "report.md", scores, per_series, timings, series=series, context=context,
                 horizon=horizon, windows=windows, samples=samples, model_name=model_name,
                 extra="\n".join(notes), charts=len(drawn) if model is not None else 0)
    return scores


def training_notes(training: dict | None, rc: Recalibration | None, rows: dict, name: str) -> list[str]:
    """The report's lines on how the model was trained (where early stopping stopped each member)
    and recalibrated (validation PIT before and after; test scores before; split conformal)."""
    lines = []
    if training:
        lines += [f"Training of {name} (its time in the table includes training, recalibration and sampling):", ""]
        for k, m in enumerate(training.get("members", [])):
            budget = m.get("budget_steps")
            where = (f"stopped early at step {m['stopped_at']} (patience {training.get('patience')} checks of "
                     f"{m.get('check_every')} steps)" if m.get("stopped_at") is not None
                     else f"ran its budget ({m['steps']} steps)" if budget else f"ran {m['steps']} steps")
            kept = f", kept the weights of step {m['best_step']}" if m.get("best_step") is not None else ""
            what = f" ({m['transform']})" if training.get("transform") == "mix" and m.get("transform") else ""
            lines.append(f"- member {k + 1}{what}: {where}{kept}; {m['seconds']:.1f} s")
    if rc is not None and rc.report:
        r = rc.report
        b, a = r["before"], r["after"]
        if r["windows"] < 2:
            head = (f"Recalibration off: {r['windows']} validation window, and choosing a map takes "
                    f"cross-validation over at least 2.")
            table = [f"| validation | {_fmt(b['pit_ks_p'])} | {b['cov80']:.3f} |"]
        else:
            head = (f"Recalibration (`{rc.mode}`, chosen by the cross-validated CRPS on {r['windows']} validation "
                    f"windows: " + ", ".join(f"{m} {v:.4g}" for m, v in r["cv_crps"].items()) + ").")
            table = [f"| validation, before | {_fmt(b['pit_ks_p'])} | {b['cov80']:.3f} |",
                     f"| validation, after (cross-validated) | {_fmt(a['pit_ks_p'])} | {a['cov80']:.3f} |"]
        lines += ["", head, "", "| | PIT KS p | cov 80% |", "|---|---|---|", *table]
        if "before_recalibration" in rows:
            t = rows["before_recalibration"]
            lines.append(f"| test windows, before (CRPS {_fmt(t['crps'])}) | {_fmt(t['pit_ks_p'])} | {t['cov80']:.3f} |")
    if "rolling_recalibration" in rows:
        r = rows["rolling_recalibration"]
        lines += ["", f"Rolling recalibration: refitted at the origin of each of the {len(r['modes'])} test windows "
                      f"on the forecasts known by then (from every origin since the first validation one); "
                      f"modes chosen, window by window: {', '.join(r['modes'])}; forecasts they were chosen "
                      f"on: {', '.join(str(n) for n in r['forecasts'])}."]
    if "conformal80" in rows:
        c = rows["conformal80"]
        where = ("refitted at each window's origin, mean" if "rolling_recalibration" in rows
                 else "from the validation windows")
        lines += ["", f"Split-conformal 80% interval (margin {c['margin']:.3g} interval widths, {where}): "
                      f"coverage {c['cov80']:.3f} on the test windows, mean width {_fmt(c['mean_width'])}."]
    return lines


def _charts_note(charts: int | None, n: int) -> str:
    if charts is None or charts >= n:
        return ""
    if charts == 0:
        return "; none drawn: `--fan-charts 0`"
    return f"; drawn for the first {charts} of the {n} series: `--fan-charts N` or `all` for more"


def _fmt(v: float) -> str:
    if v != v:
        return "n/a"
    return f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.2e}"


#: the report shows a table of CRPS per series up to this many series (per_series.csv has all)
PER_SERIES_SHOWN = 10


def write_report(path: Path, scores: dict[str, Scores], per_series: dict, timings: dict, *,
                 series: list[Series], context: int, horizon: int, windows: int, samples: int,
                 model_name: str, extra: str = "", charts: int | None = None) -> None:
    best = min(scores, key=lambda k: scores[k].crps)
    lines = [
        "# Forecast evaluation",
        "",
        f"Rolling origin over the last {windows} windows of {horizon} steps of "
        f"{len(series)} series ({', '.join(s.name for s in series)}); context {context}; "
        f"{samples} sample paths per forecast for sample-based models. Every model is scored on the "
        f"same {next(iter(scores.values())).n} observed targets. Lower is better for CRPS, wCRPS, "
        f"wQL and MAE; coverage should match its nominal level; the PIT p-values should not be "
        f"small (a calibrated forecaster has uniform PIT values). Three tests of that: *pooled* is "
        f"the KS test of the PIT values of all steps of all windows together, which counts them as "
        f"independent although the steps of one window share its path, so it rejects even a "
        f"correct model when the horizon is long (a guide, not an exact test); *per step* tests "
        f"each horizon step over the windows (independent under a correct model) and takes the "
        f"smallest p-value times the {horizon} steps (Bonferroni; n: values per step); *1-step* "
        f"tests the one-step-ahead forecasts from every origin of the evaluated span (iid "
        f"U[0, 1] under a correct model; n: origins; n/a: not computed for that model, as it "
        f"refits per origin).",
        "",
        "| model | CRPS | wCRPS | wQL | MAE (median) | cov 50% | cov 80% | cov 95% | PIT KS p pooled | "
        "PIT p per step (n) | PIT 1-step KS p (n) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, sc in scores.items():
        mark = " **(best CRPS)**" if name == best else ""
        c = sc.coverage
        lines.append(f"| {name}{mark} | {_fmt(sc.crps)} | {_fmt(sc.wcrps)} | {_fmt(sc.wql)} | "
                     f"{_fmt(sc.mae)} | {c[0.5]:.3f} | {c[0.8]:.3f} | {c[0.95]:.3f} | "
                     f"{_fmt(sc.pit_ks_p)} | {_fmt(sc.pit_steps_p)} ({sc.pit_steps_n}) | "
                     + (f"{_fmt(sc.pit1_ks_p)} ({sc.pit1_n})" if sc.pit1_n else "n/a")
                     + f" | {timings.get(name, float('nan')):.1f} |")
    if 1 < len(series) <= PER_SERIES_SHOWN:
        lines += ["", "CRPS per series:", "", "| model | " + " | ".join(s.name for s in series) + " |",
                  "|---|" + "---|" * len(series)]
        for name, d in per_series.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(d[s.name]) for s in series) + " |")
    elif len(series) > PER_SERIES_SHOWN:
        lines += ["", f"CRPS per series: `per_series.csv` ({len(series)} series); here the share of series on "
                      f"which each model has the lowest CRPS:", ""]
        wins = {name: 0 for name in per_series}
        for s in series:
            crps = {name: d[s.name] for name, d in per_series.items() if d[s.name] == d[s.name]}
            if crps:
                wins[min(crps, key=crps.get)] += 1
        lines += [f"- {name}: {w / len(series):.1%}" for name, w in wins.items()]
    lines += ["", "Definitions: CRPS in the series' units (closed form for Gaussian forecasts, energy "
              "form of the sample otherwise); wCRPS = sum CRPS / sum |y|; wQL = mean over levels "
              f"{', '.join(f'{q:g}' for q in QUANTILE_LEVELS)} of 2 sum pinball / sum |y|; coverage = "
              "share of targets inside the central interval.", "",
              "Files: `pit-<model>.png` (PIT histograms with KS p-value), `fan-<series>.png` (last "
              "window of the recurrent model" + _charts_note(charts, len(series)) + ")."]
    if extra:
        lines += ["", extra]
    path.write_text("\n".join(lines) + "\n")
