"""The three PIT uniformity tests against a random walk with drift, whose predictive distributions
are known in closed form: from origin o (last value y_{o-1}) step k ahead (k = 1..H) is
``N(y_{o-1} + 0.1 k, k)``.

Under that true model the one-step PITs over consecutive origins are iid U[0, 1] and each step's
PITs over non-overlapping windows are iid U[0, 1], but the steps of one window share its path, so
the pooled KS test (which counts them as independent) rejects it for a long horizon.
"""

import json

import numpy as np
import pytest

from rnnforge.forecast.backtest import backtest
from rnnforge.forecast.baselines import seasonal_naive
from rnnforge.forecast.calibration import PitMap, Recalibration
from rnnforge.forecast.metrics import GaussianForecast, ks_steps, pit_values, score
from rnnforge.forecast.series import Series

scipy_stats = pytest.importorskip("scipy.stats")

DRIFT = 0.1


def random_walk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 + np.cumsum(DRIFT + rng.normal(0, 1, n))


def true_forecast(y: np.ndarray, o: int, h: int, spread: float = 1.0) -> GaussianForecast:
    k = np.arange(1, h + 1)
    return GaussianForecast(y[o - 1] + DRIFT * k, spread * np.sqrt(k))


W, H, START = 40, 40, 20


@pytest.fixture(scope="module")
def walk():
    return random_walk(START + W * H, seed=3)


def windows(y, spread=1.0):
    origins = [START + w * H for w in range(W)]
    return [true_forecast(y, o, H, spread) for o in origins], [y[o:o + H] for o in origins]


def one_step(y, spread=1.0, bias=0.0):
    origins = range(START, len(y))
    return ([GaussianForecast([y[o - 1] + DRIFT + bias], [spread]) for o in origins],
            [y[o:o + 1] for o in origins])


SEEDS = range(40)


def test_pooled_ks_rejects_the_true_model_but_the_valid_tests_keep_their_level():
    """The false rejection rate at the 1% level over 40 simulated walks: the valid tests' stays
    near 1% (binomial(40, 0.01) exceeds 3 with probability 8e-4), the pooled test's does not."""
    pooled = steps = one = 0
    for seed in SEEDS:
        y = random_walk(START + W * H, seed)
        sc = score(*windows(y)).with_one_step(pit_values(*one_step(y))[:, 0])
        assert (sc.n, sc.pit_steps_n, sc.pit1_n) == (W * H, W, W * H)
        pooled += sc.pit_ks_p < 0.01
        steps += sc.pit_steps_p < 0.01
        one += sc.pit1_ks_p < 0.01
    assert steps <= 3 and one <= 3, (steps, one)
    # here 28 of 40 (the 1-step test 2, the per-step test 0): the steps of a window share its path
    assert pooled >= 20, pooled
    row = sc.row()
    assert row["pit1_n"] == W * H and row["pit_steps_n"] == W and "pit1_ks_p" in row


def test_the_one_step_pit_is_exactly_the_gaussian_cdf(walk):
    fc, y = one_step(walk)
    u = pit_values(fc, y)[:, 0]
    z = np.array([t[0] for t in y]) - (walk[START - 1:-1] + DRIFT)
    np.testing.assert_allclose(u, scipy_stats.norm.cdf(z), rtol=0, atol=1e-13)
    assert ks_steps(u[:, None])[0] == pytest.approx(scipy_stats.kstest(u, "uniform").pvalue, rel=1e-6)


@pytest.mark.parametrize("spread,bias", [(0.7, 0.0), (1.4, 0.0), (1.0, 0.3)])
def test_a_wrong_one_step_model_fails_the_one_step_test(walk, spread, bias):
    """Too narrow, too wide, biased: 1600 iid PIT values find each (p below 1e-8 on each of
    the 40 walks of the test above)."""
    sc = score(*windows(walk)).with_one_step(pit_values(*one_step(walk, spread, bias))[:, 0])
    assert sc.pit1_ks_p < 1e-4


def test_the_per_step_test_rejects_a_model_much_too_narrow():
    """40 values per step: a spread 0.4 times the truth's is found on 39 of 40 walks at 1%."""
    found = sum(score(*windows(random_walk(START + W * H, seed), spread=0.4)).pit_steps_p < 0.01
                for seed in SEEDS)
    assert found >= 35, found


def test_per_step_p_is_the_bonferroni_bound_of_scipys_ks_tests():
    rng = np.random.default_rng(0)
    pit = rng.random((30, 5))
    pit[:, 2] = pit[:, 2] ** 1.5  # one step off
    pit[4, 1] = np.nan  # a missing target
    ps = [scipy_stats.kstest(c[np.isfinite(c)], "uniform").pvalue for c in pit.T]
    p, n = ks_steps(pit)
    assert n == 29
    assert p == pytest.approx(min(1.0, 5 * min(ps)), rel=1e-6)


class Walker:
    """A stand-in forecaster that samples the walk's true predictive distribution (times
    ``spread``) and records the origins and horizons it was asked for; it reads only the
    value before each origin."""

    def __init__(self, spread: float = 1.0) -> None:
        self.spread, self.calls = spread, []

    def sample_paths(self, series, origins, *, context, horizon, num_samples, generator=None, device="cpu"):
        rng = np.random.default_rng(len(self.calls))
        self.calls.append((list(origins), horizon))
        last = np.array([s.values[o - 1] for s, o in zip(series, origins)])
        steps = DRIFT + self.spread * rng.normal(0, 1, (len(origins), num_samples, horizon))
        return last[:, None, None] + np.cumsum(steps, axis=2)


def run(tmp_path, model, recalibration=None, windows=8, horizon=10):
    y = random_walk(300, seed=5)
    s = Series("walk", y)
    backtest(model, [s], context=30, horizon=horizon, windows=windows, samples=400, seed=0,
             baselines={"seasonal-naive": seasonal_naive}, out=tmp_path, log=lambda *_: None,
             recalibration=recalibration)
    return json.loads((tmp_path / "scores.json").read_text()), (tmp_path / "report.md").read_text()


def test_evaluate_scores_one_step_pits_from_every_origin_of_the_span(tmp_path):
    model = Walker()
    rows, report = run(tmp_path, model)
    one = [c for c in model.calls if c[1] == 1]
    assert sorted(o for c in one for o in c[0]) == list(range(300 - 80, 300))
    for name in ("rnn", "seasonal-naive"):  # the naive forecast is the walk's truth but for the drift
        assert rows[name]["pit1_n"] == 80
        assert rows[name]["pit1_ks_p"] > 0.01
        assert rows[name]["pit_steps_n"] == 8
    assert "PIT 1-step KS p (n)" in report
    line = next(l for l in report.splitlines() if l.startswith("| rnn"))
    assert "(80) |" in line and "(8) |" in line


def test_one_step_pits_of_a_narrow_model_fail_and_its_recalibration_is_applied(tmp_path):
    rows, _ = run(tmp_path / "narrow", Walker(spread=0.5), windows=20, horizon=10)
    assert rows["rnn"]["pit1_ks_p"] < 1e-4
    # the map of a forecaster half as wide as the truth: R(u) = Phi(0.5 Phi^-1(u)) (r(w) = 0.5 w)
    x = np.linspace(-10, 10, 81)
    rc = Recalibration("pooled", [PitMap(x, 0.5 * x)])
    rows, report = run(tmp_path / "recal", Walker(spread=0.5), recalibration=rc, windows=20, horizon=10)
    assert rows["rnn"]["pit1_n"] == 200
    assert rows["rnn"]["pit1_ks_p"] > 0.01
    assert rows["rnn"]["before_recalibration"]["pit1_ks_p"] < 1e-4


def test_a_gap_in_the_span_leaves_out_its_one_step_pits(tmp_path):
    """A differencing model (untrained) and a gap longer than the context inside the evaluated span:
    the one-step origins with a missing target or no two consecutive observed context values are
    skipped, the rest scored (the H-step windows do not start in the gap)."""
    import torch

    from rnnforge.forecast.model import Forecaster, ModelConfig

    torch.manual_seed(0)
    model = Forecaster(ModelConfig(cell="gru", hidden=6, layers=1, dropout=0.0, head="gaussian",
                                   features=dict(lags=[1, 2], harmonics=1, transform="diff"))).eval()
    y = random_walk(200, seed=1)
    y[161:172] = np.nan  # the span is 200 - 4 x 10 = 160..199, the context 12
    s = Series("gappy", y)
    backtest(model, [s], context=12, horizon=10, windows=4, samples=50, seed=0,
             baselines={"seasonal-naive": seasonal_naive}, out=tmp_path, log=lambda *_: None)
    rows = json.loads((tmp_path / "scores.json").read_text())
    # origins 161..171: targets missing; 172 (context 160..171) and 173 (161..172): one observed
    # value, no pair; the other 40 - 13 = 27 are scored
    assert rows["rnn"]["pit1_n"] == 27
    assert rows["seasonal-naive"]["pit1_n"] == 27
