"""The multi-step objective (``--rollout-steps``): the sample CRPS against closed forms and
hand-worked numbers, the differentiable paths against ``sample_paths``, gradients by
gradcheck, and a fine-tuning run that lowers the multi-step CRPS."""

import math

import numpy as np
import pytest
import torch

from rnnforge.cli import main
from rnnforge.forecast import heads as H
from rnnforge.forecast import checkpoint as C
from rnnforge.forecast import trainer as T
from rnnforge.forecast.model import CELLS, Forecaster, ModelConfig, uniforms

import synthetic


def seasonal_ar(n=400, seed=0):
    return synthetic.seasonal_ar(n, seed, phi=0.8)


def tiny(cell="lstm", head="gaussian", hidden=6, layers=1, lags=(1, 2, 12), growth=()):
    torch.manual_seed(0)
    return Forecaster(ModelConfig(cell=cell, head=head, hidden=hidden, layers=layers, dropout=0.0,
                                  features=dict(lags=list(lags), harmonics=1, growth=list(growth))))


def windows_of(model, s, starts, context, horizon):
    sampler = T.WindowSampler([s], context=context, horizon=horizon, spec=model.spec,
                              rng=np.random.default_rng(0))
    z, phase = sampler.windows(np.array([(0, a) for a in starts]))
    return torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(phase, dtype=torch.float32)


def test_sample_crps_by_hand():
    # draws {0, 2, 4} at y = 1: mean |x - y| = 5/3, distinct pairs sum to 2 * 8 = 16, / (2*3*2) = 4/3
    x = torch.tensor([[0.0], [2.0], [4.0]])  # (M=3, H=1)
    assert T.sample_crps(x, torch.tensor([1.0])).item() == pytest.approx(1 / 3)
    # two draws {0, 1} at 0: 1/2 - 2/4 = 0
    assert T.sample_crps(torch.tensor([[0.0], [1.0]]), torch.tensor([0.0])).item() == pytest.approx(0.0)
    # batched over leading dims and horizon, NaN where y is NaN
    x = torch.tensor([[[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]]])  # (1, 3, 2)
    got = T.sample_crps(x, torch.tensor([[1.0, float("nan")]]))
    assert got[0, 0].item() == pytest.approx(1 / 3) and torch.isnan(got[0, 1])


def test_sample_crps_is_unbiased_for_the_gaussian_closed_form():
    # CRPS of N(0, 1) at 0 is 1/sqrt(pi) * (sqrt(2) - 1) = 0.23369...; the estimator's mean over
    # many small samples (M = 4, where the biased V-statistic would give 0.375) matches it
    g = torch.Generator().manual_seed(0)
    x = torch.randn((20000, 4, 1), generator=g, dtype=torch.float64)
    est = T.sample_crps(x, torch.zeros(20000, 1, dtype=torch.float64)).mean().item()
    assert est == pytest.approx(0.23369497725510913, abs=0.005)
    assert (math.sqrt(2) - 1) / math.sqrt(math.pi) == pytest.approx(0.23369497725510913)


@pytest.mark.parametrize("cell,head,growth", [(c, "gaussian", ()) for c in CELLS]
                         + [("lstm", "student-t", ()), ("gru", "quantile", ()), ("lstm", "mixture", ()),
                            ("lstm", "gaussian", (3, 12))])
def test_rollout_paths_are_the_paths_sample_paths_draws(cell, head, growth):
    """Same uniforms, same model: the autograd rollout (layer forward, one step at a time) gives the
    paths of ``sample_paths`` (layer.step, the decode engine), in scaled units; with growth inputs
    too, which read the fed-back values over two spans."""
    s = seasonal_ar(300)
    model = tiny(cell, head, hidden=5, layers=2, growth=growth)
    C, H, M, origin = 30, 7, 5, 250
    z, phase = windows_of(model, s, [origin - C], C, H)
    u = uniforms(H, M, generator=torch.Generator().manual_seed(4))
    model.eval()
    with torch.no_grad():
        got = T.rollout_paths(model, z, phase, C, u)[0].double().numpy()  # (M, H)
    want = model.sample_paths([s], [origin], context=C, horizon=H, num_samples=M,
                              generator=torch.Generator().manual_seed(4))[0]
    ctx = s.values[origin - C:origin]
    loc, scale = ctx.mean(), np.abs(ctx - ctx.mean()).mean()  # the mean scaler
    np.testing.assert_allclose(got, (want - loc) / scale, atol=2e-4, rtol=1e-4)


def test_gradients_flow_through_the_fed_back_samples(monkeypatch):
    """gradcheck in float64 of the multi-step CRPS as a function of the readout and the recurrent
    weights, and a check that the fed-back samples carry part of the gradient."""
    s = seasonal_ar(200)
    model = tiny(hidden=3).double()
    C, H = 16, 4
    z, phase = windows_of(model, s, [100, 140], C, H)
    z, phase = z.double(), phase.double()
    u = uniforms(H, 2 * 3, generator=torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    names = ["readout.delta", next(n for n in params if n.startswith("rnn."))]

    def loss(*weights):
        return _with_params(model, dict(zip(names, weights)), lambda: T.rollout_crps(model, z, phase, C, u))

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5)

    full = torch.autograd.grad(T.rollout_crps(model, z, phase, C, u), params["readout.delta"])[0]
    lag_inputs = T.lag_inputs
    monkeypatch.setattr(T, "lag_inputs", lambda lagged, *a: lag_inputs(lagged.detach(), *a))
    detached = torch.autograd.grad(T.rollout_crps(model, z, phase, C, u), params["readout.delta"])[0]
    assert not torch.allclose(full, detached)


def _with_params(model, replace, fn):
    """fn() with some parameters of ``model`` replaced by the given tensors, so autograd reaches them."""
    saved = {}
    for name, t in replace.items():
        owner, _, attr = name.rpartition(".")
        saved[name] = model.get_submodule(owner)._parameters[attr]
        model.get_submodule(owner)._parameters[attr] = t
    try:
        return fn()
    finally:
        for name, p in saved.items():
            owner, _, attr = name.rpartition(".")
            model.get_submodule(owner)._parameters[attr] = p


def test_fine_tuning_lowers_the_multi_step_crps():
    s = seasonal_ar(500)
    train, held = s.head(400), s
    model = tiny(hidden=8)
    T.fit(model, [train], context=36, horizon=12, steps=150, minutes=None, batch_size=32, lr=1e-2,
          seed=0, log=None)
    starts = np.arange(400 - 36, 500 - 36 - 12 + 1, 4)  # windows whose horizons lie past the training data
    z, phase = windows_of(model, held, starts, 36, 12)
    u = uniforms(12, len(starts) * 64, generator=torch.Generator().manual_seed(9))
    before = T.rollout_loss(model, z, phase, 36, u)
    res = T.fit(model, [train], context=36, horizon=12, steps=60, minutes=None, batch_size=16, lr=3e-3,
                seed=1, log=None, objective="rollout", paths=8, log_every=20)
    after = T.rollout_loss(model, z, phase, 36, u)
    assert res.steps == 60 and res.losses[-1] < res.losses[0]
    assert after < before, (before, after)


def test_rollout_validation_keeps_the_starting_weights_when_nothing_beats_them():
    s = seasonal_ar(300)
    model = tiny()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    # a learning rate this large ruins the model at the first step; the step-0 weights stay
    res = T.fit(model, [s], context=24, horizon=6, steps=4, minutes=None, batch_size=8, lr=50.0, seed=0,
                log=None, val_windows=2, objective="rollout", paths=4, log_every=2)
    assert res.best_step == 0 and len(res.val_losses) == 4  # step 0, 2, 4, and the final check
    for k, v in model.state_dict().items():
        assert torch.equal(v, start[k]), k


def test_bad_objective_and_paths():
    s = seasonal_ar(200)
    with pytest.raises(T.UserError, match="unknown training objective 'beam'"):
        T.fit(tiny(), [s], context=24, horizon=6, steps=1, minutes=None, objective="beam", log=None)
    with pytest.raises(T.UserError, match=r"^rollout_paths must be >= 2 \(the sample CRPS compares paths\), got 1$"):
        T.fit(tiny(), [s], context=24, horizon=6, steps=1, minutes=None, objective="rollout", paths=1, log=None)


def test_cli_fine_tunes_records_it_and_refuses_bad_flags(two_series_csv, tmp_path, capsys):
    out = tmp_path / "ro"
    flags = ["--data", str(two_series_csv), "--context", "24", "--horizon", "6", "--hidden", "6",
             "--layers", "1", "--steps", "30", "--batch-size", "8", "--val-windows", "2", "--head", "gaussian",
             "--lags", "1,2", "--out", str(out)]
    assert main(["forecast", "train", *flags, "--rollout-steps", "10", "--rollout-paths", "4"]) == 0
    assert "fine-tuned on 4 paths per window for 10 steps" in capsys.readouterr().out
    _, meta = C.load(out / "forecaster.safetensors")
    ro = meta["training"]["members"][0]["rollout"]
    assert ro["steps"] == 10 and 0 <= ro["best_step"] <= 10 and len(ro["val_losses"]) >= 2
    assert meta["training"]["rollout_paths"] == 4
    for bad, msg in ((["--rollout-steps", "-1"], "--rollout-steps must be >= 0"),
                     (["--rollout-steps", "5", "--rollout-paths", "1"], "--rollout-paths must be >= 2"),
                     (["--rollout-steps", "5", "--rollout-lr", "0"], "--rollout-lr must be > 0")):
        assert main(["forecast", "train", *flags, "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("head", ["gaussian", "student-t", "quantile", "mixture"])
def test_ppf_gradient_matches_central_differences(head):
    """The reparameterisation gradient d F^{-1}(u) / d raw of every head (for Student-t by the
    implicit function theorem, not through the solver) against central differences in float64."""
    h = H.make_head(head)
    torch.manual_seed(0)
    raw = torch.randn(6, h.num_params, dtype=torch.float64, requires_grad=True)
    u = torch.tensor([1e-6, 0.03, 0.3, 0.5, 0.8, 0.999], dtype=torch.float64)
    got = torch.autograd.grad(h.ppf(raw, u).sum(), raw)[0]
    want = torch.zeros_like(raw)
    # the mixture's quantile is a bisection on a sum of normal CDFs, whose rounding in the far
    # tail (u = 1e-6) moves it by ~1e-12: a wider step keeps that out of the differences
    eps = 1e-4 if head == "mixture" else 1e-6
    with torch.no_grad():
        for j in range(h.num_params):
            step = torch.zeros_like(raw)
            step[:, j] = eps
            want[:, j] = (h.ppf(raw + step, u) - h.ppf(raw - step, u)) / (2 * eps)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
