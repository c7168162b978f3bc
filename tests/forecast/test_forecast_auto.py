"""Validation forecasts from every step (origin count arithmetic) and transform="auto": one model per
candidate transform, the one (or their equal mixture) with the lowest CRPS on the validation windows
kept; transform="mix": always the mixture, saved and loaded with each member's own transform."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from rnnforge.forecast import ForecastConfig, train
from rnnforge.forecast import api
from rnnforge.forecast.metrics import crps_gaussian
from rnnforge.forecast.series import Series


def test_validation_origins_count():
    # 5 windows of 8 after 100 values: origins 100 .. 132 (the last horizon ends at 140)
    o = api.validation_origins(140, 8, 5)
    assert (o[0], o[-1], len(o)) == (100, 132, (5 - 1) * 8 + 1)
    assert len(api.validation_origins(140, 8, 5, stride=2)) == (5 - 1) * 8 // 2 + 1
    assert api.validation_origins(140, 8, 1) == [132]  # one window: one forecast


def test_validation_crps_is_the_mean_crps_of_the_forecasts():
    # Gaussian paths at the normal quantiles: their CRPS tends to the closed form (sample size 4000)
    n = 4000
    z = stats.norm.ppf((np.arange(n) + 0.5) / n)
    paths = np.broadcast_to(2.0 * z[None, :, None], (3, n, 2)).copy()
    y = np.array([[0.0, 1.0], [np.nan, -3.0], [2.0, 0.5]])
    v = api.ValidationForecasts(paths, y, np.array([0, 1, 2]), np.ones(3, bool))
    ok = np.isfinite(y)
    want = crps_gaussian(np.zeros(ok.sum()), np.full(ok.sum(), 2.0), y[ok]).mean()
    assert v.crps() == pytest.approx(want, rel=2e-3)


def _trend(n=220, seed=0):
    rng = np.random.default_rng(seed)
    return Series("trend", 5.0 + 0.5 * np.arange(n) + rng.normal(0, 0.3, n))


def test_auto_keeps_the_transform_with_the_lowest_validation_crps():
    notes = []
    cfg = ForecastConfig(transform="auto", hidden=8, layers=1, steps=30, batch_size=16, val_windows=4,
                         recalibrate="off")
    model, meta = train([_trend()], cfg, horizon=6, context=30, log=notes.append)
    sel = meta["training"]["transform_selection"]
    assert set(sel) == set(api.AUTO_TRANSFORMS) | {"mix"}
    kept = api.transform_of(model)
    assert kept == meta["training"]["transform"] == min(sel, key=sel.get)
    assert any(n.startswith(f"transform: {kept} (the lowest CRPS") for n in notes)
    # the recorded score of a single transform is its model's CRPS on the validation windows,
    # recomputed here (the mixture's is scored on an even share of each candidate's paths)
    train_part = [_trend().head(220)]
    if kept != "mix":
        again = api.validation_forecasts(model, train_part, context=30, horizon=6, windows=4, seed=0)
        assert again.crps() == pytest.approx(sel[kept], rel=1e-9)
    # a line plus small noise: the levels model, held to the range of its training windows, is
    # beaten by a transform that carries the trend
    assert kept != "none" and sel["none"] > min(sel["diff"], sel["drift"])


def test_mixture_of_validation_forecasts_is_the_equal_mixture():
    # two forecasts of y = 0, one all at -1 and one all at +1: CRPS 1 each; their 50/50 mixture
    # has CRPS E|X| - E|X - X'| / 2 = 1 - 1/2 = 1/2 (closed form)
    y, folds, first = np.zeros((1, 1)), np.zeros(1, int), np.ones(1, bool)
    a = api.ValidationForecasts(np.full((1, 400, 1), -1.0), y, folds, first)
    b = api.ValidationForecasts(np.full((1, 400, 1), 1.0), y, folds, first)
    assert a.crps() == pytest.approx(1.0) and b.crps() == pytest.approx(1.0)
    m = api.ValidationForecasts.mixture([a, b])
    assert m.paths.shape == (1, 400, 1) and m.crps() == pytest.approx(0.5)
    # each part contributes every len(parts)-th path: an even share of its members' blocks
    c = api.ValidationForecasts(np.arange(6.0)[None, :, None], y, folds, first)
    d = api.ValidationForecasts(10 + np.arange(6.0)[None, :, None], y, folds, first)
    assert api.ValidationForecasts.mixture([c, d]).paths[0, :, 0].tolist() == [0, 2, 4, 11, 13, 15]


def test_mix_trains_every_candidate_and_round_trips_through_a_checkpoint(tmp_path):
    import torch

    from rnnforge.forecast.checkpoint import load, save

    cfg = ForecastConfig(transform="mix", hidden=8, layers=1, steps=10, batch_size=16, val_windows=0, ensemble=2)
    model, meta = train([_trend()], cfg, horizon=6, context=30, log=lambda *_: None)
    kinds = [m.spec.transform for m in model.members]
    assert kinds == [t for t in api.AUTO_TRANSFORMS for _ in range(2)]  # 2 members per candidate
    assert meta["training"]["transform"] == "mix" and len(meta["training"]["members"]) == 6
    assert [m["transform"] for m in meta["training"]["members"]] == kinds
    from rnnforge.forecast.backtest import training_notes

    notes = training_notes(meta["training"], None, {}, api.model_name(model))
    assert notes[2].startswith("- member 1 (none): ") and notes[7].startswith("- member 6 (drift): ")
    assert api.model_name(model) == "rnn/quantile/mix x6"  # 220 values: the sigmoid RNN (cell auto)
    save(tmp_path / "f.safetensors", model, meta)
    back, meta2 = load(tmp_path / "f.safetensors")
    assert [m.spec.transform for m in back.members] == kinds
    s = [_trend()]
    draw = lambda m: m.sample_paths(s, [200], context=30, horizon=6, num_samples=12,  # noqa: E731
                                    generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(draw(model), draw(back))


def test_a_checkpoint_whose_member_models_do_not_match_its_members_is_refused(tmp_path):
    from rnnforge import checkpoint
    from rnnforge.errors import UserError
    from rnnforge.forecast.checkpoint import load, save

    cfg = ForecastConfig(transform="mix", hidden=4, layers=1, steps=2, batch_size=8, val_windows=0)
    model, meta = train([_trend()], cfg, horizon=6, context=30, log=lambda *_: None)
    path = tmp_path / "f.safetensors"
    save(path, model, meta)
    tensors, m = checkpoint.load(path)
    m["member_models"] = m["member_models"][:2]
    checkpoint.save(path, tensors, m)
    with pytest.raises(UserError, match="lists 2 member models for 3 members"):
        load(path)


def test_auto_without_validation_windows_keeps_the_mixture():
    notes = []
    cfg = ForecastConfig(transform="auto", hidden=8, layers=1, steps=5, batch_size=16, val_windows=0)
    model, meta = train([_trend()], cfg, horizon=6, context=30, log=notes.append)
    assert api.transform_of(model) == "mix" and meta["training"]["transform_selection"] is None
    assert [m.spec.transform for m in api.members_of(model)] == list(api.AUTO_TRANSFORMS)
    assert meta["training"]["transform"] == "mix"
    assert "transform: mix (auto chooses on the validation windows; there are none)" in notes
    # the same networks as transform="mix": one seed, one fit per transform
    mixed, _ = train([_trend()], replace(cfg, transform="mix"), horizon=6, context=30, log=lambda *_: None)
    for a, b in zip(api.members_of(model), api.members_of(mixed)):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), k


def test_auto_chooses_only_on_enough_validation_outcomes():
    # 3 windows of 6: 18 outcomes, fewer than 24 to choose among four forecasts on
    notes = []
    cfg = ForecastConfig(transform="auto", hidden=8, layers=1, steps=5, batch_size=16, val_windows=3,
                         recalibrate="off")
    assert 3 * 6 < api.AUTO_CHOICE_OUTCOMES <= 4 * 6
    model, meta = train([_trend()], cfg, horizon=6, context=30, log=notes.append)
    assert api.transform_of(model) == "mix" and meta["training"]["transform_selection"] is None
    assert "transform: mix (auto chooses on the validation windows; they hold 18 outcomes, fewer than 24 " \
           "to choose on)" in notes
    # the outcomes of every series count: two series of 2 windows of 6 are 24, enough
    notes = []
    two = [_trend(seed=1), Series("other", _trend(seed=2).values[::-1].copy())]
    model, meta = train(two, replace(cfg, val_windows=2), horizon=6, context=30, log=notes.append)
    assert set(meta["training"]["transform_selection"]) == set(api.AUTO_TRANSFORMS) | {"mix"}
    assert any(n.startswith("transform: ") and "(the lowest CRPS" in n for n in notes)


def test_auto_with_refit_keeps_the_mixture_without_choosing_on_trained_windows():
    notes = []
    cfg = ForecastConfig(transform="auto", hidden=8, layers=1, steps=5, batch_size=16, val_windows=2, refit=True)
    model, meta = train([_trend()], cfg, horizon=6, context=30, log=notes.append)
    assert api.transform_of(model) == "mix" and meta["training"]["transform_selection"] is None
    assert "transform: mix (auto chooses on the validation windows; refit trains on them)" in notes


def test_auto_is_a_transform_option():
    from rnnforge.errors import OptionError

    ForecastConfig(transform="auto", trend_window=40).validate()  # drift, a candidate, reads it
    with pytest.raises(OptionError, match="'nope' is not one of auto, mix, none, diff, detrend, drift, deseason"):
        ForecastConfig(transform="nope").validate()
    assert ForecastConfig().transform == "auto"
    for t in ("auto", "mix"):
        with pytest.raises(OptionError, match=f"'{t}' trains a network per transform; name one of none"):
            ForecastConfig(transform=t).model_config(12, 48)
