"""The growth inputs (``--growth``): hand-worked values with missing data, the same numbers for
teacher forcing (running sums over a window) and for sampling (one step's buffer), and the
command line."""

import numpy as np
import pytest
import torch

from rnnforge.cli import main
from rnnforge.errors import UserError
from rnnforge.forecast.features import FeatureSpec, step_inputs, window_inputs

nan = float("nan")


def test_growth_by_hand_with_missing_values():
    # growth span 2 reaches 4 steps back; inputs are [z_{t-1}, observed, g_2] (no harmonics)
    spec = FeatureSpec(lags=[1], harmonics=0, growth=[2])
    assert spec.max_lag == 4 and spec.num_inputs == 3
    z = torch.tensor([[1.0, nan, 3.0, 5.0, 6.0, 10.0],
                      [nan, nan, 3.0, 5.0, 6.0, 10.0],
                      [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])  # (B=3, K+T=6): steps t = 0, 1
    want = [[(3 + 5) / 2 - 1, (5 + 6) / 2 - 3],    # t=0: mean(3, 5) - mean(1, NaN); t=1: mean(5, 6) - mean(NaN, 3)
            [0.0, (5 + 6) / 2 - 3],                # t=0: the older span has no observed value
            [2.0, 2.0]]                            # a ramp rises by 2 between spans 2 apart
    x = window_inputs(z, torch.zeros(3, 2), spec)  # (B, T, I)
    np.testing.assert_allclose(x[..., 2].numpy(), want, rtol=1e-6)
    for t in range(2):  # the sampling path builds each step's inputs from its buffer alone
        np.testing.assert_allclose(step_inputs(z, 4 + t, torch.zeros(3), spec).numpy(), x[:, t].numpy(),
                                   rtol=1e-6)


def test_window_and_step_inputs_agree_on_a_long_series():
    """Running sums (teacher forcing) against per-step slices (sampling) over a long noisy series
    with gaps, for two spans and the other inputs around them."""
    g = torch.Generator().manual_seed(0)
    spec = FeatureSpec(lags=[1, 2, 52], harmonics=2, growth=[13, 52])
    K, T = spec.max_lag, 300
    z = torch.randn(2, K + T, generator=g, dtype=torch.float64).cumsum(1) / 10
    z[0, 50:90] = nan
    z[1, ::7] = nan
    phase = torch.rand(2, T, generator=g, dtype=torch.float64)
    x = window_inputs(z, phase, spec)
    for t in (0, 1, 77, 150, T - 1):
        torch.testing.assert_close(step_inputs(z, K + t, phase[:, t], spec), x[:, t], rtol=0, atol=1e-10)


def test_bad_growth_spans(two_series_csv, tmp_path, capsys):
    with pytest.raises(UserError, match=r"^growth spans must be positive whole numbers of steps, got \[0\]$"):
        FeatureSpec(growth=[0])
    for flag, msg in (("0", "--growth spans must be positive"), ("4,x", "--growth must be comma-separated whole")):
        code = main(["forecast", "train", "--data", str(two_series_csv), "--horizon", "4", "--context", "12",
                     "--steps", "2", "--growth", flag, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and msg in err, err
    assert main(["forecast", "train", "--data", str(two_series_csv), "--horizon", "4", "--context", "12",
                 "--steps", "3", "--growth", "4", "--hidden", "4", "--layers", "1", "--val-windows", "1",
                 "--out", str(tmp_path / "ok")]) == 0
