"""from_torch / to_torch: exact both ways, and the errors for what torch.nn cannot hold."""

from __future__ import annotations

import pytest
import torch

import rnnforge as rf
from rnnforge.interop import load_torch_weights
from rnnforge_testing import (TORCH_GATE_ORDER, TORCH_LAYERS, TORCH_MODES, assert_close,
                              flat_outputs, make_layer, torch_suffix, torch_to_ours)

f64 = torch.float64


@pytest.mark.parametrize("mode", TORCH_MODES)
def test_gate_order_is_torch_order(mode):
    """The cells stack their gates as torch.nn does (the table in conftest, from torch's docs)."""
    cell = type(make_layer(mode, 1, 1).cell(0))
    assert [(g.input, g.recurrent, g.bias, g.recurrent_bias) for g in cell.GATES] == \
        TORCH_GATE_ORDER[mode]


@pytest.mark.parametrize("bidir", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_from_torch_copies_every_weight(mode, bias, bidir):
    kwargs = {"nonlinearity": "tanh"} if mode == "rnn_tanh" else {}
    theirs = TORCH_LAYERS[mode](3, 4, num_layers=2, bias=bias, bidirectional=bidir, dtype=f64, **kwargs)
    ours = type(make_layer(mode, 1, 1)).from_torch(theirs)
    assert (ours.input_size, ours.hidden_size, ours.num_layers, ours.bias, ours.bidirectional) == \
        (3, 4, 2, bias, bidir)
    for l in range(2):
        for d in range(2 if bidir else 1):
            sfx = torch_suffix(l, d)
            names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
            expected = {}
            for name, t in torch_to_ours(mode, *[getattr(theirs, n + sfx) for n in names]):
                expected[name] = expected[name] + t if name in expected else t
            cell = ours.cell(l, d)
            assert set(expected) == {n for n, _ in cell.named_parameters()}
            for name, t in expected.items():
                assert_close(getattr(cell, name).detach(), t.detach(), f"{name} l{l} d{d}")


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidir", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_to_torch_computes_the_same(mode, bias, bidir, batch_first):
    ours = make_layer(mode, 3, 5, num_layers=2, bias=bias, bidirectional=bidir,
                      batch_first=batch_first, dropout=0.25, dtype=f64)
    if bias:  # non-zero everywhere, so that the bias placement is tested
        with torch.no_grad():
            for n, p in ours.named_parameters():
                if p.dim() == 1:
                    p.uniform_(-1, 1)
    theirs = ours.to_torch()
    assert isinstance(theirs, TORCH_LAYERS[mode])
    assert (theirs.bias, theirs.bidirectional, theirs.batch_first, theirs.dropout, theirs.num_layers) \
        == (bias, bidir, batch_first, 0.25, 2)
    assert theirs.weight_ih_l0.dtype == f64
    if mode == "rnn_tanh":
        assert theirs.nonlinearity == "tanh"
    ours.eval(), theirs.eval()
    x = torch.randn(4, 2, 3, dtype=f64)
    for got, want in zip(flat_outputs(ours(x)), flat_outputs(theirs(x))):
        assert_close(got, want)
    # documented placement: our bias goes into b_ih; b_hh is zero except GRU's b_hn (b_gamma)
    if bias:
        H = 5
        b_hh = theirs.bias_hh_l0.detach()
        if mode == "gru":
            assert (b_hh[: 2 * H] == 0).all()
            assert torch.equal(b_hh[2 * H:], ours.cell(0).b_gamma.detach())
        else:
            assert (b_hh == 0).all()


@pytest.mark.parametrize("bidir", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_round_trips(mode, bias, bidir):
    ours = make_layer(mode, 3, 4, num_layers=2, bias=bias, bidirectional=bidir, dtype=f64)
    back = type(ours).from_torch(ours.to_torch())
    # ours -> torch -> ours: identical parameters, hence identical function
    sd, sd_back = ours.state_dict(), back.state_dict()
    assert sd.keys() == sd_back.keys()
    for k in sd:
        assert torch.equal(sd[k], sd_back[k]), k
    x = torch.randn(5, 2, 3, dtype=f64)
    for a, b in zip(flat_outputs(ours(x)), flat_outputs(back(x))):
        assert torch.equal(a, b)
    # torch -> ours -> torch: the biases move (b_ih + b_hh), the function does not
    kwargs = {"nonlinearity": "tanh"} if mode == "rnn_tanh" else {}
    theirs = TORCH_LAYERS[mode](3, 4, num_layers=2, bias=bias, bidirectional=bidir, dtype=f64, **kwargs)
    again = type(ours).from_torch(theirs).to_torch()
    for a, b in zip(flat_outputs(again(x)), flat_outputs(theirs(x))):
        assert_close(a, b)


def test_from_torch_passes_engine_and_options():
    theirs = torch.nn.LSTM(3, 4, batch_first=True, dropout=0.0, dtype=torch.float32)
    ours = rf.LSTM.from_torch(theirs, engine="reference")
    assert ours.engine == "reference" and ours.batch_first
    assert ours.cell(0).u.dtype == torch.float32


def test_conversion_errors():
    with pytest.raises(ValueError, match="torch.nn.RNN has no sigmoid nonlinearity"):
        rf.RNN(3, 4).to_torch()  # the notes' sigmoid RNN
    with pytest.raises(ValueError, match="torch RNN nonlinearity 'relu' is not supported"):
        rf.RNN.from_torch(torch.nn.RNN(3, 4, nonlinearity="relu"))
    with pytest.raises(ValueError, match="proj_size"):
        rf.LSTM.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(TypeError, match="GRU.from_torch expects torch.nn.GRU, got LSTM"):
        rf.GRU.from_torch(torch.nn.LSTM(3, 4))
    cell = rf.GRUCell(3, 4, bias=False)
    t = torch.nn.GRUCell(3, 4, bias=True)
    with pytest.raises(ValueError, match="bias mismatch"):
        load_torch_weights(cell, t.weight_ih, t.weight_hh, t.bias_ih, t.bias_hh)


def test_torch_to_ours_table_round_trip():
    """The conftest table itself: chunking then stacking gives torch's tensors back."""
    t = torch.nn.LSTM(2, 3, bias=True)
    pieces = dict(torch_to_ours("lstm", t.weight_ih_l0, t.weight_hh_l0))
    stacked = torch.cat([pieces[g[0]] for g in TORCH_GATE_ORDER["lstm"]])
    assert torch.equal(stacked, t.weight_ih_l0)
