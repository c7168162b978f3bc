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


def test_short_table_reads_geometric_means_and_counts():
    # two real runs (ratios 2 and 0.5 for none: geometric mean 1; the mixture's 1 and 0.25: 0.5)
    # and one synthetic run; the mixture over the levels per run: 0.5 and 0.5, lower on both
    def run(series, kind, none, mix):
        return dict(series=series, kind=kind, none=dict(crps=none, ratio=none, cov80=0.5),
                    mix=dict(crps=mix, ratio=mix, cov80=0.75))
    rows = [run("a", "real", 2.0, 1.0), run("b", "real", 0.5, 0.25), run("c", "synthetic", 1.5, 3.0)]
    lines = bench.short_table(rows, ["none", "mix"], steps=3, seed=0, length=40).splitlines()
    assert lines[4] == "| real (2) | 1.000, 1, 0.50 | 0.500, 2, 0.75 | 0.500 (2) |"
    assert lines[5] == "| synthetic (1) | 1.500, 0, 0.50 | 3.000, 0, 0.75 | 2.000 (0) |"
    assert [ln.split(" |")[0] for ln in lines[6:]] == ["| a (1)", "| b (1)", "| c (1)"]


def test_short_variants_set_config_fields_of_their_types():
    c = bench.variant_config("mix/recalibrate=off/hidden=16/dropout=0.25", seed=3, steps=7)
    assert (c.transform, c.recalibrate, c.hidden, c.dropout, c.seed, c.steps) == ("mix", "off", 16, 0.25, 3, 7)
    assert bench.variant_config("none", seed=0, steps=1).transform == "none"
    for bad in ("mix/hidden", "mix/width=3"):
        with pytest.raises(SystemExit, match="is not FIELD=VALUE of a ForecastConfig field"):
            bench.variant_config(bad, seed=0, steps=1)


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


def test_bootstrap_interval_of_a_mean_matches_the_normal_closed_form():
    # 400 paired differences N(0.3, 1): the mean's 90% interval is 0.3 +- 1.645 / 20 (the sample's own
    # mean and sd stand in for the truth's, as a percentile bootstrap's do)
    d = np.random.default_rng(1).normal(0.3, 1.0, 400)
    lo, hi = bench._bootstrap(d, np.random.default_rng(2), reps=20000)
    half = stats.norm.ppf(0.95) * d.std() / np.sqrt(d.size)
    assert lo == pytest.approx(d.mean() - half, abs=0.01) and hi == pytest.approx(d.mean() + half, abs=0.01)
    assert bench._bootstrap(np.full(5, 0.7), np.random.default_rng(0)) == pytest.approx((0.7, 0.7))


def test_ks_critical_value_matches_scipy():
    # the statistic at which the exact KS p-value falls to 1%: scipy's kstwo quantile
    for n in (5, 36, 120):
        assert bench._ks_critical(n) == pytest.approx(stats.kstwo.ppf(0.99, n), abs=1e-6)


def test_pass_rates_of_independent_pit_match_the_binomial():
    # independent uniform PIT values: cov80 is Binomial(n, 0.8) / n, so the band 0.73..0.87 of
    # n = 60 holds 44..52 of them; the KS and per-step tests reject about 1% and at most 1%
    rng = np.random.default_rng(0)
    rates = bench._pass_rates(rng.random((40000, 6, 10)))
    band = stats.binom.cdf(52, 60, 0.8) - stats.binom.cdf(43, 60, 0.8)
    assert rates["band"] == pytest.approx(band, abs=0.006)
    assert rates["cov80_sd"] == pytest.approx(np.sqrt(0.16 / 60), rel=0.02)
    assert band * 0.985 - 0.006 < rates["pooled"] < band
    assert band * 0.985 - 0.006 < rates["valid"] <= rates["band"]


def test_linear_pit_is_uniform_per_step_and_dependent_along_a_window():
    rng = np.random.default_rng(1)
    # white noise (psi = 1, 0, 0, ...): independent uniforms
    u = bench._linear_pit(np.r_[1.0, np.zeros(7)], 5000, 2, rng)
    assert abs(np.corrcoef(u[:, 0, 2], u[:, 0, 3])[0, 1]) < 0.04
    # a random walk (psi all 1): each step uniform, step k and k + 1 correlated as in the closed
    # form of the normal scores, corr(e_k, e_k+1) = sqrt(k / (k + 1)) (k counted from 1)
    u = bench._linear_pit(np.ones(8), 20000, 2, rng)
    for k in (0, 7):
        assert stats.kstest(u[:, 1, k], "uniform").pvalue > 1e-3
    z = stats.norm.ppf(u[:, 0])
    assert np.corrcoef(z[:, 3], z[:, 4])[0, 1] == pytest.approx(np.sqrt(4 / 5), abs=0.01)
    # separate windows are independent
    assert abs(np.corrcoef(z[:, 0], stats.norm.ppf(u[:, 1, 0]))[0, 1]) < 0.03
    # the dependence widens the spread of cov80 over test sets past the binomial's
    assert bench._pass_rates(bench._linear_pit(np.ones(24), 4000, 5, rng))["cov80_sd"] > 2 * np.sqrt(0.16 / 120)
