"""The optional series embedding of the global model (DeepAR's item embedding): it reaches the
network, survives the checkpoint, refuses series it has no vector for, and its flag is checked."""

import numpy as np
import pytest
import torch

from rnnforge.errors import UserError
from rnnforge.forecast import ForecastConfig, load_checkpoint, train
from rnnforge.forecast import checkpoint as fcheckpoint
from rnnforge.forecast import calibration as C
from rnnforge.forecast.model import Ensemble, Forecaster, ModelConfig
from rnnforge.forecast.series import Series

SEASON = 6


def seasonal(name, level, amp, n=90, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return Series(name, level + amp * np.sin(2 * np.pi * t / SEASON) + rng.normal(0, 0.3, n))


def paths(model, series, seed=0, n=16):
    return model.sample_paths(series, [len(s) for s in series], context=18, horizon=3, num_samples=n,
                              generator=torch.Generator().manual_seed(seed))


def small_model(D=2, names=("a", "b")):
    torch.manual_seed(0)
    cfg = ModelConfig(cell="gru", hidden=6, layers=1, dropout=0.0, head="gaussian",
                      features=dict(lags=[1, 2], harmonics=1), series_embedding=D, series_names=list(names))
    return Forecaster(cfg).eval()


def test_a_hand_set_embedding_changes_the_forecast_and_only_it():
    model = small_model()
    s = seasonal("x", 10, 2)
    as_a, as_b = Series("a", s.values), Series("b", s.values)  # the same values under both names
    with torch.no_grad():
        model.series_embed.weight[:] = torch.tensor([[0.0, 0.0], [3.0, -2.0]])
    pa, pb = paths(model, [as_a]), paths(model, [as_b])
    assert not np.allclose(pa, pb)
    with torch.no_grad():  # swapping the rows swaps the forecasts
        model.series_embed.weight[:] = torch.tensor([[3.0, -2.0], [0.0, 0.0]])
    assert np.array_equal(paths(model, [as_a]), pb) and np.array_equal(paths(model, [as_b]), pa)
    with torch.no_grad():  # equal rows: the same forecast
        model.series_embed.weight[1] = model.series_embed.weight[0]
    assert np.array_equal(paths(model, [as_a]), paths(model, [as_b]))


def test_the_embedding_enters_the_first_layer_as_an_input():
    """With a zero embedding the network is the one without (its extra input columns multiply
    zeros); a row e then acts as inputs appended to x at every step."""
    model = small_model()
    plain = Forecaster(ModelConfig(**{**model.config.to_dict(), "series_embedding": 0, "series_names": []}))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("series_embed")}
    I = plain.spec.num_inputs
    for k, v in state.items():
        if v.dim() == 2 and v.shape[1] == I + 2:  # a first-layer input weight: drop the embedding columns
            state[k] = v[:, :I]
    plain.load_state_dict(state)
    plain.eval()
    x = torch.randn(2, 5, I)
    with torch.no_grad():
        model.series_embed.weight.zero_()
        assert torch.allclose(model(x, torch.tensor([0, 1])), plain(x), atol=1e-6)
        model.series_embed.weight[1] = torch.tensor([0.5, -1.0])
        e = torch.tensor([0.5, -1.0]).expand(2, 5, 2)
        assert torch.allclose(model(x, torch.tensor([1, 1])), model.readout(
            model.rnn(torch.cat([x, e], -1))[0]), atol=1e-6)
    with pytest.raises(ValueError, match="give each window's series ids"):
        model(x)


def test_training_moves_each_series_embedding_apart():
    """Two series with the same shape after scaling but different noise: training reaches the
    embedding (its rows change), and the trained model forecasts the same values differently
    under the two names."""
    a, b = seasonal("a", 0, 2, seed=1), seasonal("b", 0, 2, seed=2)
    b.values[:] = b.values + np.random.default_rng(3).normal(0, 2.0, len(b))  # much noisier
    cfg = ForecastConfig(cell="gru", head="gaussian", hidden=8, layers=1, dropout=0.0, steps=200, batch_size=16,
                         transform="none",
                         lr=1e-2, series_embedding=2, val_windows=0, recalibrate="off", patience=0)
    torch.manual_seed(0)
    init = Forecaster(cfg.model_config(SEASON, 18, ["a", "b"])).series_embed.weight.detach().clone()
    model, meta = train([a, b], cfg, horizon=3, context=18, log=lambda *_: None)
    assert model.config.series_names == ["a", "b"] and meta["training"]["series_embedding"] == 2
    assert not torch.allclose(model.series_embed.weight, init)
    same = a.values
    pa, pb = paths(model, [Series("a", same)], n=400), paths(model, [Series("b", same)], n=400)
    ratio = pb.std(axis=1).mean() / pa.std(axis=1).mean()
    assert ratio > 1.2, ratio  # b learned as the noisier one


def test_checkpoint_round_trip_gives_identical_forecasts(tmp_path):
    series = [seasonal("a", 10, 2, seed=1), seasonal("b", -5, 4, seed=2), seasonal("c", 100, 1, seed=3)]
    cfg = ForecastConfig(cell="lstm", hidden=6, layers=1, steps=10, batch_size=8, ensemble=2,
                         series_embedding=3, series_scaling=True, val_windows=2, patience=0,
                         rollout_steps=2, rollout_paths=2)  # the multi-step fine-tuning sees the rows too
    model, meta = train(series, cfg, horizon=3, context=18, log=lambda *_: None)
    assert isinstance(model, Ensemble) and meta["recalibration"]["mode"] in C.MODES
    fcheckpoint.save(tmp_path / "f.safetensors", model, meta)
    back, meta2 = load_checkpoint(tmp_path / "f.safetensors")
    assert back.config.series_names == ["a", "b", "c"] and back.config.series_embedding == 3
    for m, n in zip(model.members, back.members):
        assert torch.equal(m.series_embed.weight, n.series_embed.weight)
    order = [series[2], series[0]]  # any subset, in any order: rows are found by name
    assert np.array_equal(paths(model, order), paths(back, order))


def test_an_unknown_series_is_refused_by_name():
    model = small_model(names=("a", "b"))
    with pytest.raises(UserError, match=r"series 'new' has no learned embedding: the model learned one for each "
                                        r"of the 2 series it was trained on \(a, b\); forecast those"):
        paths(model, [seasonal("a", 0, 1), seasonal("new", 0, 1)])


def test_duplicate_names_are_refused():
    with pytest.raises(UserError, match="two series are named 'a'"):
        train([seasonal("a", 0, 1), seasonal("a", 1, 1)], ForecastConfig(steps=1, series_embedding=2),
              horizon=3, context=18, log=lambda *_: None)


def test_the_unknown_series_from_the_command_line(tmp_path, refused):
    from rnnforge.cli import main

    t = np.arange(60)
    rows = ["a,b"] + [f"{np.sin(i / 2):.3f},{np.cos(i / 3):.3f}" for i in t]
    (tmp_path / "ab.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "ac.csv").write_text("\n".join(r.replace("b", "c", 1) if i == 0 else r
                                               for i, r in enumerate(rows)) + "\n")
    assert main(["forecast", "train", "--data", str(tmp_path / "ab.csv"), "--context", "8", "--horizon", "2",
                 "--hidden", "4", "--layers", "1", "--steps", "2", "--batch-size", "2", "--val-windows", "0",
                 "--series-embedding", "2", "--out", str(tmp_path / "run")]) == 0
    err = refused(["forecast", "predict", "--out", tmp_path / "run", "--data", tmp_path / "ac.csv",
                   "--samples", "4"])
    assert err.startswith("rnnforge forecast: error: series 'c' has no learned embedding: the model learned one "
                          "for each of the 2 series it was trained on (a, b)"), err


@pytest.mark.parametrize("value, message", [
    ("-1", "--series-embedding must be in [0, 1024], got -1"),
    ("nan", "--series-embedding must be a whole number, got 'nan'"),
    ("1.5", "--series-embedding must be a whole number, got '1.5'"),
])
def test_bad_series_embedding_flag(value, message, tmp_path, refused, two_series_csv):
    err = refused(["forecast", "train", "--data", two_series_csv, "--series-embedding", value,
                   "--out", tmp_path / "o"])
    assert err == "rnnforge forecast: error: " + message
