"""CO2's test windows by horizon band and by origin, for saved evaluation runs, against ARIMA.

    python benchmarks/bench_forecast.py accuracy --series co2 --out ROOT/RUN
    PYTHONPATH=src python benchmarks/co2_bands.py --root ROOT RUN [RUN ...]

reads ROOT/RUN/co2/forecaster.safetensors and prints the CRPS per band of weeks ahead and per
window, and the bias and MAE of the path median in ppm. It samples with evaluate's seed (0), so
the total reproduces the report's CRPS.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rnnforge.forecast.series import load as load_series
from rnnforge.forecast import baselines
from rnnforge.forecast.backtest import rolling_origins
from rnnforge.forecast.metrics import SampleForecast
from rnnforge.forecast.checkpoint import load

HORIZON, WINDOWS = 52, 5
BANDS = ((0, 4), (4, 13), (13, 26), (26, 52))  # weeks ahead 1-4, 5-13, 14-26, 27-52


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders under --root")
    p.add_argument("--root", default="runs/bench-forecast")
    args = p.parse_args()
    torch.set_num_threads(1)
    (s,) = load_series("co2")
    origins = rolling_origins(len(s), HORIZON, WINDOWS)
    actual = [s.values[o:o + HORIZON] for o in origins]
    rows = {}  # name -> (CRPS (W, H), median error (W, H))
    for name in args.runs:
        model, _ = load(f"{args.root}/{name}/co2/forecaster.safetensors")
        paths = model.sample_paths([s] * WINDOWS, origins, context=120, horizon=HORIZON, num_samples=1000,
                                   generator=torch.Generator().manual_seed(0))
        rows[name] = (np.array([SampleForecast(p).crps(y) for p, y in zip(paths, actual)]),
                      np.array([np.median(p, 0) - y for p, y in zip(paths, actual)]))
    arima = [baselines.arima(s, o, HORIZON) for o in origins]
    rows["arima"] = (np.array([f.crps(y) for f, y in zip(arima, actual)]),
                     np.array([f.mean - y for f, y in zip(arima, actual)]))
    print("CRPS by weeks ahead (1-4, 5-13, 14-26, 27-52) and by origin; bias and MAE of the median (ppm)")
    for name, (crps, err) in rows.items():
        bands = " ".join(f"{np.nanmean(crps[:, a:b]):.3f}" for a, b in BANDS)
        windows = " ".join(f"{np.nanmean(c):.3f}" for c in crps)
        print(f"{name:8s} bands {bands} | windows {windows} | all {np.nanmean(crps):.4f} | "
              f"bias {np.nanmean(err):+.2f} MAE {np.nanmean(abs(err)):.3f} | "
              f"27-52 MAE {np.nanmean(abs(err[:, 26:])):.3f}")


if __name__ == "__main__":
    main()
