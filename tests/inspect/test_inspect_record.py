"""Recorded gates against the notes' equations worked by hand, and the recorded final
state against the layer's own forward through every engine that can run it."""

import math

import numpy as np
import pytest
import torch

import rnnforge as rf
from rnnforge import engines
from rnnforge.charlm import Vocab
from rnnforge.errors import UserError
from rnnforge.inspect import analyze, record
from rnnforge.inspect.stats import look_back, time_constants
from rnnforge_testing import TOL, assert_close

from inspect_helpers import TEXT, tiny_model

X = torch.tensor([[1.0], [-0.5]], dtype=torch.float64)  # T = 2 steps of a 1-feature input


def _layer(cls, **params):
    """A 1-unit, 1-input layer with the given scalar parameters."""
    kwargs = {k: params.pop(k) for k in ("nonlinearity", "bias") if k in params}
    layer = cls(1, 1, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for name, value in params.items():
            getattr(layer.cell(0), name).fill_(value)
    return layer


def _assert_recorded(rec, expected):
    assert set(rec.quantities) == set(expected)
    for name, values in expected.items():
        got = rec[0, name][:, 0]
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, torch.tensor(values, dtype=torch.float64), rtol=0, atol=1e-14,
                                   msg=lambda m: f"{name}: {m}")


def test_lstm_by_hand():
    layer = _layer(rf.LSTM, u=0.5, v=-1.0, w=1.0, p=0.5, s=-0.5, d=1.0, alpha=2.0, gamma=-0.5)
    # t=1 (z0 = C0 = 0, x = 1): f = σ(0.5), i = σ(1), o = σ(-0.5), C~ = tanh(2), C = i C~, z = o tanh(C)
    # t=2 (x = -0.5): f = σ(-0.25 - z1), i = σ(-0.5 + 0.5 z1), o = σ(0.25 + z1),
    #     C~ = tanh(-1 - 0.5 z1), C = f C1 + i C~, z = o tanh(C)
    _assert_recorded(record(layer, X), {
        "f": [0.6224593312018546, 0.38241484253449987],
        "i": [0.7310585786300049, 0.4048385146396038],
        "o": [0.3775406687981454, 0.6175851574655001],
        "C~": [0.9640275800758169, -0.8057018806045061],
        "C": [0.7047606324503499, -0.05666822630324858],
        "z": [0.22931097123732766, -0.03496004122177703],
    })


def test_gru_by_hand():
    layer = _layer(rf.GRU, bias=True, alpha_s=1.0, gamma_s=0.5, b_s=-0.5, alpha_r=-1.0, gamma_r=1.0,
                   b_r=0.25, alpha=0.5, gamma=-1.0, b_z=0.1, b_gamma=0.3)
    # t=1 (z0 = 0, x = 1): s = σ(1 - 0.5), r = σ(-1 + 0.25), z~ = tanh(0.5 + 0.1 + r (0 + 0.3)), z = (1 - s) z~
    # t=2 (x = -0.5): s = σ(-0.5 + 0.5 z1 - 0.5), r = σ(0.5 + z1 + 0.25),
    #     z~ = tanh(-0.25 + 0.1 + r (-z1 + 0.3)), z = s z1 + (1 - s) z~
    _assert_recorded(record(layer, X), {
        "s": [0.6224593312018546, 0.29186072510193833],
        "r": [0.320821300824607, 0.7265665582081676],
        "z~": [0.6019798063601868, -0.09685359970550882],
        "z": [0.22727185869620298, -0.002254108392387058],
    })


def test_rnn_sigmoid_and_tanh_by_hand():
    # z1 = act(1.5), z2 = act(-0.75 - 2 z1)
    _assert_recorded(record(_layer(rf.RNN, alpha=1.5, gamma=-2.0), X),
                     {"z": [0.8175744761936437, 0.0843121960414976]})
    _assert_recorded(record(_layer(rf.RNN, nonlinearity="tanh", alpha=1.5, gamma=-2.0), X),
                     {"z": [0.9051482536448664, -0.988125957329527]})


@pytest.mark.parametrize("cell", ["rnn", "rnn-tanh", "gru", "lstm"])
def test_final_state_equals_every_engine(cell):
    vocab = Vocab.from_text(TEXT)
    model = tiny_model(cell, vocab).double()
    rec = record(model, TEXT, vocab)
    assert rec.steps == len(TEXT) and rec.num_layers == 2 and rec.check < 1e-12
    x = model.embedding(vocab.encode(TEXT)).unsqueeze(0).detach()  # (1, T, E)
    ran = []
    for name in engines.ENGINES:
        model.rnn.engine = name
        if engines.ENGINES[name].why_not(model.rnn, x.transpose(0, 1), None) is not None:
            continue
        with torch.no_grad():
            out, state = model.rnn(x)
        states = state if isinstance(state, tuple) else (state,)
        for mine, theirs, what in zip(rec.final_state(), states, ("h_n", "c_n")):
            assert_close(mine, theirs[:, 0], f"{cell} {what} vs engine {name}")
        assert_close(rec[1, "z"], out[0], f"{cell} top output vs engine {name}")
        ran.append(name)
    assert {"reference", "fused"} <= set(ran) and (cell == "rnn" or "native" in ran), ran


def test_layers_feed_each_other_and_the_initial_state_is_used():
    vocab = Vocab.from_text(TEXT)
    model = tiny_model("gru", vocab).double()
    h0 = torch.linspace(-0.9, 0.9, 12, dtype=torch.float64).view(2, 6)
    rec = record(model, TEXT[:20], vocab, state=h0)
    with torch.no_grad():
        out, h_n = model.rnn(model.embedding(vocab.encode(TEXT[:20])).unsqueeze(0), h0.unsqueeze(1))
    assert_close(rec.final_state()[0], h_n[:, 0], "h_n from a given state")
    assert_close(rec.state_at(-1)[1][0], h0[1], "initial state of layer 1")


def test_a_memory_of_constant_gate_has_its_closed_form_time_constant_and_look_back():
    # forget gate fixed at 0.8 (bias log 4), no recurrent weights, input 0: d z(t) / d x(t-k) ∝ 0.8^k,
    # so the time constant is 1 / (1 - 0.8) = 5 and the look-back the truncated geometric mean
    f, K = 0.8, 20
    layer = _layer(rf.LSTM, bias=True, u=0.0, v=0.0, w=0.0, p=0.0, s=0.0, d=0.0, alpha=1.0, gamma=0.0,
                   b_f=math.log(4.0), b_i=0.0, b_o=0.0, b_c=0.0)
    x = torch.zeros(50, 1, dtype=torch.float64)
    rec = record(layer, x)
    assert time_constants(rec)[0][0] == pytest.approx(5.0, rel=1e-12)
    (lb,) = look_back(layer, rec, k_max=K, units=1, positions=5, inputs=x)
    k = np.arange(1, K + 1)
    assert lb.estimate[0] == pytest.approx((k * f ** k).sum() / (f ** k).sum(), rel=1e-12)
    np.testing.assert_allclose(lb.profile[0, 1:] / lb.profile[0, 0], f ** k, rtol=1e-12)


def test_gru_update_gate_time_constant_matches_its_look_back():
    s = 0.75  # z(t) = s z(t-1) + (1 - s) tanh(x(t)): d z(t) / d x(t-k) = (1 - s) s^k
    layer = _layer(rf.GRU, bias=True, alpha_s=0.0, gamma_s=0.0, b_s=math.log(3.0), alpha_r=0.0, gamma_r=0.0,
                   b_r=0.0, alpha=1.0, gamma=0.0, b_z=0.0, b_gamma=0.0)
    x = torch.zeros(300, 1, dtype=torch.float64)
    rec = record(layer, x)
    assert time_constants(rec)[0][0] == pytest.approx(4.0, rel=1e-12)
    (lb,) = look_back(layer, rec, k_max=200, units=1, positions=3, inputs=x)
    assert lb.estimate[0] == pytest.approx(4.0, rel=1e-12)  # s^200 is below double precision


def test_bad_input_to_record():
    vocab = Vocab.from_text(TEXT)
    model = tiny_model("lstm", vocab)
    with pytest.raises(UserError, match="the text to inspect is empty"):
        record(model, "", vocab)
    with pytest.raises(UserError, match=r"not in the model's vocabulary: '€'"):
        record(model, "The €", vocab)
    with pytest.raises(UserError, match="needs the model's vocabulary"):
        record(model, "The")
    with pytest.raises(UserError, match="bidirectional"):
        record(rf.GRU(1, 2, bidirectional=True), torch.zeros(3, 1))
    with pytest.raises(UserError, match=r"state must be a tuple \(h_0, c_0\) of \(2, 6\)"):
        record(model, "The", vocab, state=torch.zeros(2, 6))


def test_analysis_of_a_recording_has_every_table():
    vocab = Vocab.from_text(TEXT)
    model = tiny_model("lstm", vocab)
    rec = record(model, TEXT, vocab)
    an = analyze(rec, model, look_back_k=8, look_back_units=3, look_back_positions=4)
    assert set(an.saturation) == {(l, g) for l in range(2) for g in ("f", "i", "o")}
    assert set(an.correlations) == {(l, q) for l in range(2) for q in ("f", "i", "o", "C~", "C", "z")}
    # the saturation fractions count the steps by hand
    f = rec[1, "f"][:, 4].double()
    left, right = an.saturation[1, "f"]
    assert left[4] == (f < 0.1).double().mean().item() and right[4] == (f > 0.9).double().mean().item()
    # r against numpy's corrcoef for one unit and feature
    feat = an.features["line_pos"]
    want = np.corrcoef(feat, rec[0, "C"][:, 2].double().numpy())[0, 1]
    assert an.correlations[0, "C"][4, 2] == pytest.approx(want, rel=1e-9)
    assert [len(lb.units) for lb in an.look_back] == [3, 3] and an.look_back[0].profile.shape == (3, 9)
