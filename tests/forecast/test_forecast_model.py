"""The recurrent forecaster: training lowers the CRPS, sampling is batched, causal and
reproducible, checkpoints round-trip, every cell and head works."""

import numpy as np
import pytest
import torch

from rnnforge.forecast.series import Series
from rnnforge.forecast import heads as H
from rnnforge.forecast import checkpoint as C
from rnnforge.forecast import trainer as T
from rnnforge.forecast.backtest import rolling_origins
from rnnforge.forecast.metrics import SampleForecast, score
from rnnforge.forecast.model import CELLS, Forecaster, ModelConfig
from synthetic import seasonal_ar


def tiny(cell="lstm", head="gaussian", hidden=16, layers=1):
    torch.manual_seed(0)
    return Forecaster(ModelConfig(cell=cell, head=head, hidden=hidden, layers=layers, dropout=0.0,
                                  features=dict(lags=[1, 2, 12], harmonics=1)))


def crps_of(model, s, context, horizon, windows=4, samples=200):
    origins = rolling_origins(len(s), horizon, windows)
    paths = model.sample_paths([s] * windows, origins, context=context, horizon=horizon,
                               num_samples=samples, generator=torch.Generator().manual_seed(1))
    return score([SampleForecast(p) for p in paths], [s.values[o:o + horizon] for o in origins]).crps


def test_short_training_lowers_crps():
    s = seasonal_ar()
    model = tiny()
    before = crps_of(model, s, 24, 6)
    res = T.fit(model, [s.head(len(s) - 24)], context=24, horizon=6, steps=150, minutes=None,
                batch_size=32, lr=1e-2, seed=0, log=None)
    after = crps_of(model, s, 24, 6)
    assert res.steps == 150 and res.losses[-1] < res.losses[0]
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("head", ["gaussian", "student-t", "mixture"])
def test_every_cell_and_head_samples(cell, head):
    s = seasonal_ar(200)
    model = tiny(cell, head, hidden=5, layers=2)
    paths = model.sample_paths([s, s], [150, 200], context=20, horizon=7, num_samples=9,
                               generator=torch.Generator().manual_seed(0))
    assert paths.shape == (2, 9, 7) and np.isfinite(paths).all()
    assert model.rnn.engine_used is not None


def test_sampling_is_causal_reproducible_and_batched():
    s = seasonal_ar(300)
    model = tiny()
    kw = dict(context=30, horizon=5, num_samples=50)
    a = model.sample_paths([s], [250], generator=torch.Generator().manual_seed(3), **kw)
    b = model.sample_paths([s], [250], generator=torch.Generator().manual_seed(3), **kw)
    np.testing.assert_array_equal(a, b)
    # values at and after the origin are never read
    s2 = Series("toy", s.values.copy(), phase_step=s.phase_step)
    s2.values[250:] = 1e6
    np.testing.assert_array_equal(a, model.sample_paths([s2], [250], generator=torch.Generator().manual_seed(3), **kw))
    # paths differ from each other (they are samples), and the first step's spread is the head's
    assert a[0, :, 0].std() > 0


def test_ppf_and_cdf_are_inverse_for_each_head():
    torch.manual_seed(0)
    for name, cls in H.HEADS.items():
        head = cls()
        raw = torch.randn(64, head.num_params, dtype=torch.float64)
        u = torch.rand(64, dtype=torch.float64).clamp(0.01, 0.99)
        z = head.ppf(raw, u)
        assert (head.cdf(raw, z) - u).abs().max() < 1e-6, name
        loss = head.loss(raw, z)
        assert loss.shape == (64,) and torch.isfinite(loss).all()


def test_unknown_head_and_cell():
    from rnnforge.errors import UserError

    with pytest.raises(UserError, match="unknown head 'poisson'"):
        H.make_head("poisson")
    with pytest.raises(UserError, match="^cell 'tcn' is not a cell; choose one of"):
        Forecaster(ModelConfig(cell="tcn"))


def test_checkpoint_round_trip(tmp_path):
    s = seasonal_ar(200)
    model = tiny("gru", "student-t")
    C.save(tmp_path / "f.safetensors", model, {"data": "toy", "horizon": 4, "context": 12})
    loaded, meta = C.load(tmp_path / "f.safetensors")
    assert meta["model"]["cell"] == "gru" and meta["horizon"] == 4 and meta["kind"] == C.KIND
    kw = dict(context=12, horizon=4, num_samples=20)
    np.testing.assert_array_equal(
        model.sample_paths([s], [200], generator=torch.Generator().manual_seed(0), **kw),
        loaded.sample_paths([s], [200], generator=torch.Generator().manual_seed(0), **kw))


def test_ensemble_mixes_members_and_round_trips(tmp_path):
    from rnnforge.forecast.model import Ensemble

    s = seasonal_ar(200)
    torch.manual_seed(0)
    a, b = tiny(), tiny()
    with torch.no_grad():
        b.readout.b.add_(5.0)  # member b forecasts about 5 scaled units higher
    ens = Ensemble([a, b])
    kw = dict(context=12, horizon=3)
    paths = ens.sample_paths([s], [200], num_samples=7, generator=torch.Generator().manual_seed(0), **kw)
    assert paths.shape == (1, 7, 3)
    # the first 4 paths are member a's, the last 3 member b's, drawn from the same generator in turn
    g = torch.Generator().manual_seed(0)
    np.testing.assert_array_equal(paths[:, :4], a.sample_paths([s], [200], num_samples=4, generator=g, **kw))
    np.testing.assert_array_equal(paths[:, 4:], b.sample_paths([s], [200], num_samples=3, generator=g, **kw))
    C.save(tmp_path / "e.safetensors", ens, {"horizon": 3})
    loaded, meta = C.load(tmp_path / "e.safetensors")
    assert isinstance(loaded, Ensemble) and meta["members"] == 2
    np.testing.assert_array_equal(
        paths, loaded.sample_paths([s], [200], num_samples=7, generator=torch.Generator().manual_seed(0), **kw))
    from rnnforge.errors import UserError
    with pytest.raises(UserError, match="fewer than the 2 ensemble members"):
        ens.sample_paths([s], [200], num_samples=1, **kw)


@pytest.mark.parametrize("head", sorted(H.HEADS))
def test_extreme_uniforms_give_finite_values_in_float32(head):
    """u as close to 0 and 1 as sampling draws them must not map to +-inf (float32 models)."""
    h = H.make_head(head)
    raw = torch.zeros(2, h.num_params)
    u = torch.tensor([1e-12, 1 - 1e-12], dtype=torch.float64)
    z = h.ppf(raw, u)
    assert z.dtype == torch.float32 and torch.isfinite(z).all() and z[0] < z[1]


def test_training_that_diverges_stops_naming_the_step(monkeypatch, tmp_path, refused):
    """A NaN loss ends training at once with one line naming the step and the learning rate;
    no checkpoint is written."""
    from rnnforge.forecast import heads as H

    calls = {"n": 0}
    real = H.HEADS["quantile"].loss

    def nan_on_third(self, raw, target):
        calls["n"] += 1
        out = real(self, raw, target)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(H.HEADS["quantile"], "loss", nan_on_third)
    out = tmp_path / "run"
    line = refused(["forecast", "train", "--data", "sunspots", "--steps", "20", "--val-windows", "0",
                    "--out", out])
    assert line == ("rnnforge forecast: error: --lr 0.003 is likely too high: training diverged at step 3 "
                    "(the loss became nan) and stopped; nothing was saved")
    assert not (out / "forecaster.safetensors").exists()


@pytest.mark.parametrize("loss_steps", T.LOSS_STEPS)
def test_the_loss_covers_the_window_or_the_horizon_only(monkeypatch, loss_steps):
    """With "horizon" the loss sees no context step: none of its targets is scaled by statistics
    that include it. Checked on the targets the head is handed: the last H of each window's
    C + H scaled values, recomputed here from the sampler's windows."""
    s = seasonal_ar(200)
    model, seen = tiny(), []
    real_loss = model.head.loss
    monkeypatch.setattr(model.head, "loss", lambda raw, z: seen.append(z.detach().clone()) or real_loss(raw, z))
    C, Hz, B = 24, 6, 8
    T.fit(model, [s], context=C, horizon=Hz, steps=1, minutes=None, batch_size=B, seed=3, log=None,
          loss_steps=loss_steps)
    sampler = T.WindowSampler([s], context=C, horizon=Hz, spec=model.spec, rng=np.random.default_rng(3))
    z, _ = sampler.windows(sampler.draw(B))  # the same draw fit made first
    K = model.spec.max_lag
    want = z[:, K + (C if loss_steps == "horizon" else 0):]
    np.testing.assert_allclose(seen[0].numpy(), want[np.isfinite(want)].astype(np.float32), rtol=1e-6)
    if loss_steps == "window":  # the context's scaled values are centred by construction: the leak
        assert abs(np.nanmean(z[:, K:K + C], axis=1)).max() < 1e-9


def test_an_unknown_loss_span_is_refused():
    from rnnforge.errors import OptionError

    with pytest.raises(OptionError, match="'context' is not one of window, horizon"):
        T.fit(tiny(), [seasonal_ar(100)], context=12, horizon=4, steps=1, minutes=None, log=None, loss_steps="context")
