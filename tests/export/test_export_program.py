"""torch.export round trips (export, save, load, run at other sizes) against eager, for every cell
and for the two applications' networks."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import rnnforge as rf
from rnnforge.charlm.model import CharLM, CharLMConfig
from rnnforge.errors import UserError
from rnnforge.forecast.model import Forecaster, ModelConfig
from rnnforge_testing import MODES, assert_close, make_layer, n_states


def twin(layer):
    """The same weights on the reference engine: the eager oracle."""
    ref = type(layer)(layer.input_size, layer.hidden_size, layer.num_layers, layer.bias,
                      layer.batch_first, 0.0, layer.bidirectional,
                      **({"nonlinearity": layer.nonlinearity} if isinstance(layer, rf.RNN) else {}),
                      engine="reference", dtype=layer._param.dtype)
    ref.load_state_dict(layer.state_dict())
    return ref


def flat(result):
    out, state = result
    return [out, *(state if isinstance(state, tuple) else (state,))]


def round_trip(module, args, dynamic_shapes, tmp_path):
    program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
    torch.export.save(program, tmp_path / "m.pt2")
    return program, torch.export.load(tmp_path / "m.pt2").module()


@pytest.mark.parametrize("mode", MODES)
def test_layer_round_trip_with_dynamic_time_and_batch(mode, tmp_path):
    """Two layers, bidirectional, batch_first, hx given; run at sizes other than the example's."""
    torch.manual_seed(0)
    layer = make_layer(mode, 3, 5, num_layers=2, bidirectional=True, batch_first=True, bias=True)
    B, T = Dim("B"), Dim("T")
    h = torch.randn(4, 2, 5)
    hx = (h, torch.randn(4, 2, 5)) if mode == "lstm" else h
    hx_dims = ({1: B}, {1: B}) if mode == "lstm" else {1: B}
    program, loaded = round_trip(layer, (torch.randn(2, 4, 3), hx), ({0: B, 1: T}, hx_dims), tmp_path)
    assert "rnnforge.recurrence.default" in str(program.graph)
    ref = twin(layer)
    for b, t in [(2, 4), (5, 1), (3, 9)]:
        x = torch.randn(b, t, 3)
        h = torch.randn(4, b, 5)
        hx = (h, torch.randn(4, b, 5)) if mode == "lstm" else h
        got, want = flat(loaded(x, hx)), flat(ref(x, hx))
        assert len(got) == 1 + n_states(mode)
        for name, g, w in zip(("out", "h_n", "c_n"), got, want):
            assert_close(g, w, f"{mode} {name} at B={b} T={t}")
        assert_close(got[0], flat(layer(x, hx))[0], "against eager fused")


@pytest.mark.parametrize("mode", ["lstm", "rnn_sigmoid"])
def test_layer_round_trip_without_hx_time_major(mode, tmp_path):
    torch.manual_seed(1)
    layer = make_layer(mode, 3, 4, num_layers=3)
    _, loaded = round_trip(layer, (torch.randn(6, 2, 3),), ({0: Dim("T"), 1: Dim("B")},), tmp_path)
    x = torch.randn(2, 7, 3)
    for g, w in zip(flat(loaded(x)), flat(twin(layer)(x))):
        assert_close(g, w, mode)


def test_defaults_export_as_a_new_user_writes_it():
    """The issue's example: rf.LSTM(8, 16) with engine="auto", static shapes, no options."""
    layer = rf.LSTM(8, 16)
    x = torch.randn(5, 3, 8)
    got = torch.export.export(layer, (x,)).module()(x)
    assert_close(got[0], twin(layer)(x)[0], "out")


def test_char_model_network_round_trip(tmp_path):
    torch.manual_seed(2)
    model = CharLM(CharLMConfig(vocab_size=7, cell="lstm", hidden=6, layers=2, tie_weights=True)).eval()
    ids = torch.randint(0, 7, (2, 5))
    B, T = Dim("B"), Dim("T")
    _, loaded = round_trip(model, (ids,), ({0: B, 1: T},), tmp_path)
    ids = torch.randint(0, 7, (3, 8))
    logits, (h, c) = loaded(ids)
    want, (wh, wc) = model(ids)
    assert_close(logits, want.detach(), "logits")
    assert_close(c, wc.detach(), "c_n")


def test_forecaster_network_round_trip(tmp_path):
    torch.manual_seed(3)
    model = Forecaster(ModelConfig(cell="gru", hidden=5, layers=2)).eval()
    I = model.spec.num_inputs
    _, loaded = round_trip(model, (torch.randn(2, 6, I),), ({0: Dim("B"), 1: Dim("T")},), tmp_path)
    x = torch.randn(4, 11, I)
    assert_close(loaded(x), model(x).detach(), "head parameters")


@pytest.mark.parametrize("engine", ["reference", "native"])
def test_an_unrolled_engine_with_dynamic_time_is_refused(engine):
    layer = rf.LSTM(3, 4, engine=engine)
    with pytest.raises(UserError, match=f"engine '{engine}' cannot be exported with a dynamic sequence "
                                        f"length.*example's 5 steps; use engine='fused'"):
        torch.export.export(layer, (torch.randn(5, 2, 3),), dynamic_shapes=({0: Dim("T")},))


def test_a_static_export_of_the_reference_engine_still_works():
    """The refusal is for a dynamic length only: at fixed sizes the unrolled program is right."""
    layer = rf.GRU(3, 4, engine="reference")
    x = torch.randn(5, 2, 3)
    assert_close(torch.export.export(layer, (x,)).module()(x)[0], layer(x)[0], "out")
