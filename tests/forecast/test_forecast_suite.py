"""The held-out suite's validation cut and the PIT shape its diagnosis reads (benchmarks/bench_forecast.py)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rnnforge.forecast import plan
from rnnforge.forecast.metrics import pit_shape
from rnnforge.forecast.series import Series

_spec = importlib.util.spec_from_file_location(
    "bench_forecast_suite", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_forecast.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_validation_cut_ends_where_the_test_windows_start():
    # a 100-value annual series: test windows 6 x 6 (plan), so the cut is 100 - 36 = 64, and the
    # 64 values give int(0.4 * 64) // 6 = 4 windows of 6 (fewer than the test's 6)
    p = plan([Series("y", np.arange(100.0), freq="Y")], windows=None)
    assert (p.horizon, p.windows) == (6, 6)
    assert bench.validation_cut(100, 6, 6) == (64, 4)
    # a long series keeps the test's window count: 612 values, int(0.4 * 612) // 24 = 10 >= 5
    assert bench.validation_cut(732, 24, 5) == (612, 5)
    # the validation windows lie inside the cut: the last one ends exactly at it
    cut, w = bench.validation_cut(203, 8, 8)
    assert (cut, w) == (139, 6) and cut - w * 8 >= 0


def _pit(scale: float, shift: float = 0.0, n: int = 200001) -> np.ndarray:
    """PIT values of N(shift, scale^2) forecasts for N(0, 1) outcomes, at the outcomes' quantiles."""
    z = stats.norm.ppf((np.arange(n) + 0.5) / n)
    return stats.norm.cdf((z - shift) / scale)


def test_pit_shape_matches_the_closed_form():
    # too narrow, N(0, 0.5^2) for N(0, 1): P(PIT < 0.1) = Phi(Phi^-1(0.1) * 0.5) = 0.2602 per tail
    s = pit_shape(_pit(0.5))
    tail = stats.norm.cdf(stats.norm.ppf(0.1) * 0.5)
    assert s["pit_below10"] == pytest.approx(tail, abs=1e-4) and s["pit_above90"] == pytest.approx(tail, abs=1e-4)
    assert s["pit_mean"] == pytest.approx(0.5, abs=1e-6)
    assert bench.pit_shape_word(s["pit_below10"], s["pit_above90"], s["pit_mean"]) == "U (too narrow)"
    # too wide, N(0, 2^2): Phi(2 Phi^-1(0.1)) = 0.0052 per tail
    s = pit_shape(_pit(2.0))
    assert s["pit_below10"] == pytest.approx(stats.norm.cdf(2 * stats.norm.ppf(0.1)), abs=1e-4)
    assert bench.pit_shape_word(s["pit_below10"], s["pit_above90"], s["pit_mean"]) == "hump (too wide)"
    # biased low by one sd: outcomes above, P(PIT > 0.9) = 1 - Phi(Phi^-1(0.9) - 1) = 0.3891
    s = pit_shape(_pit(1.0, shift=-1.0))
    assert s["pit_above90"] == pytest.approx(1 - stats.norm.cdf(stats.norm.ppf(0.9) - 1), abs=1e-4)
    assert s["pit_mean"] > 0.5
    assert bench.pit_shape_word(s["pit_below10"], s["pit_above90"], s["pit_mean"]) == \
        "slope: outcomes above the forecasts"
    # calibrated: 0.1 in each outer tenth
    s = pit_shape(_pit(1.0))
    assert s["pit_below10"] == pytest.approx(0.1, abs=1e-4)
    assert bench.pit_shape_word(s["pit_below10"], s["pit_above90"], s["pit_mean"]) == "flat"


def test_calibrated_reads_the_band_and_the_chosen_tests():
    row = {"cov80": 0.80, "pit_ks_p": 1e-6, "pit_steps_p": 0.3, "pit1_ks_p": 0.2}
    assert not bench.calibrated(row) and bench.calibrated(row, valid=True)
    assert not bench.calibrated({**row, "pit1_ks_p": 0.005}, valid=True)
    assert not bench.calibrated({**row, "pit_steps_p": None}, valid=True)  # not computed: not passed
    assert not bench.calibrated({**row, "cov80": 0.72, "pit_ks_p": 0.5}) and bench.calibrated({**row, "pit_ks_p": 0.5})


def test_the_baselines_calibration_is_counted_by_the_same_rule():
    def row(**cal):
        return {"baseline_calibration": {k: {"cov80": c, "pit_ks_p": p} for k, (c, p) in cal.items()}}

    real = [row(ets=(0.80, 0.5), arima=(0.72, 0.5)),   # ets calibrated; arima out of the band
            row(ets=(0.80, 0.005), arima=(0.86, 0.02)),  # ets rejected; arima calibrated
            row(ets=(0.75, 0.2))]                        # arima not run on this series
    assert bench.baseline_calibration(real) == [
        "Baselines calibrated by the pooled rule on the same real series: arima 1/3, ets 2/3."]
    assert bench.baseline_calibration([{"series": "x"}]) == []


def test_a_synthetic_row_states_its_gap_to_the_truth_with_the_windows_interval():
    true = {"crps": 2.0, "cov80": 0.8, "pit_ks_p": 0.5, "pit_steps_p": 0.5, "pit1_ks_p": 0.5, "pit1_n": 120,
            "diff": 0.2, "diff_ci": (-0.1, 0.5), "windows": 5}
    row = {"series": "rw", "kind": "synthetic", "freq": "B", "n": 400, "outcomes": 120, "crps": 2.2,
           "best_baseline": "ets", "best_crps": 2.1, "cov80": 0.8, "pit_ks_p": 0.5, "pit_steps_p": 0.5,
           "pit_steps_n": 5, "pit1_ks_p": 0.5, "pit1_n": 120, "seconds": 1.0, "true": true}
    text = bench.suite_table([row], steps=10, samples=10)
    # +10% of the truth's CRPS, the interval -0.1..0.5 of 2.0 as a share: -5%..+25%
    assert "**no** (true 2, +10.0% [-5%, +25%])" in text
    assert "per window +0.2 [90% bootstrap over the 5 windows: -0.1, +0.5]" in text
    # rows written before the paired difference was recorded still render
    old = {**row, "true": {k: v for k, v in true.items() if k not in ("diff", "diff_ci", "windows")}}
    assert "(true 2, +10.0%)" in bench.suite_table([old], steps=10, samples=10)
