"""The notes' RNN (sigmoid and tanh) worked by hand."""

from __future__ import annotations

import torch

import rnnforge as rf
from rnnforge_testing import HAND, assert_close, run_cell, set_params

f64 = torch.float64


# -- worked by hand from the notes' equations ----------------------------------------------
# H=2 units, I=1 input, two steps x(1) = 1, x(2) = -2. The numbers below were worked with
# plain python (math.exp, math.tanh), not with rnnforge or torch.
RNN_WEIGHTS = dict(alpha=[[0.5], [-1.0]], gamma=[[0.25, 0.0], [0.5, -0.5]])


def test_rnn_sigmoid_by_hand():
    # z(0) = (0, 0)
    # t=1: a = alpha*1 + gamma z(0) = (0.5, -1)
    #      z(1) = (σ(0.5), σ(-1)) = (0.6224593312018546, 0.2689414213699951)
    # t=2: a_1 = 0.5*(-2) + 0.25*0.62246 + 0*0.26894           = -0.8443851671995364
    #      a_2 = -1*(-2) + 0.5*0.62246 - 0.5*0.26894           =  2.17675895491593
    #      z(2) = (σ(a_1), σ(a_2)) = (0.3006120216629877, 0.898142956579203)
    cell = rf.RNNCell(1, 2, dtype=f64)
    assert cell.nonlinearity == "sigmoid"  # the notes' default
    set_params(cell, **RNN_WEIGHTS)
    z1, z2 = run_cell(cell, [[1.0], [-2.0]], None)
    assert_close(z1, torch.tensor([0.6224593312018546, 0.2689414213699951], dtype=f64), "z(1)", HAND)
    assert_close(z2, torch.tensor([0.3006120216629877, 0.898142956579203], dtype=f64), "z(2)", HAND)
    # the layer's time loop gives the same two steps
    layer = rf.RNN(1, 2, engine="reference", dtype=f64)
    set_params(layer.cell(0), **RNN_WEIGHTS)
    out, h_n = layer(torch.tensor([[1.0], [-2.0]], dtype=f64))
    assert_close(out, torch.stack([z1, z2]), "layer out", HAND)
    assert_close(h_n, z2.unsqueeze(0), "layer h_n", HAND)


def test_rnn_tanh_by_hand():
    # same weights, tanh:
    # t=1: a = (0.5, -1); z(1) = (tanh 0.5, tanh -1) = (0.46211715726000974, -0.7615941559557649)
    # t=2: a_1 = -1 + 0.25*0.46212                  = -0.8844707106849976
    #      a_2 =  2 + 0.5*0.46212 - 0.5*(-0.76159)   =  2.6118556566078874
    #      z(2) = (-0.7086519541543652, 0.9892831388683954)
    cell = rf.RNNCell(1, 2, nonlinearity="tanh", dtype=f64)
    set_params(cell, **RNN_WEIGHTS)
    z1, z2 = run_cell(cell, [[1.0], [-2.0]], None)
    assert_close(z1, torch.tensor([0.46211715726000974, -0.7615941559557649], dtype=f64), "z(1)", HAND)
    assert_close(z2, torch.tensor([-0.7086519541543652, 0.9892831388683954], dtype=f64), "z(2)", HAND)


def test_rnn_bias_by_hand():
    # bias=True adds b inside σ: b = (0.25, -0.5), x = 1, z(0) = 0
    # a = (0.5 + 0.25, -1 - 0.5) = (0.75, -1.5); z = (σ(0.75), σ(-1.5)) = (0.679178699175393, 0.18242552380635635)
    cell = rf.RNNCell(1, 2, bias=True, dtype=f64)
    set_params(cell, **RNN_WEIGHTS, b=[0.25, -0.5])
    (z,) = run_cell(cell, [[1.0]], None)
    assert_close(z, torch.tensor([0.679178699175393, 0.18242552380635635], dtype=f64), "z", HAND)
