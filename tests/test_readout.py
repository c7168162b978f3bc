"""The readout ``y = delta z + b`` (the notes' δ as output weights)."""

from __future__ import annotations

import math

import pytest
import torch

import rnnforge as rf
from rnnforge_testing import Tol, assert_close

f64 = torch.float64
EXACT = Tol(rtol=1e-15, atol=1e-15)


def hand_readout(bias=True):
    r = rf.Readout(2, 3, bias=bias, dtype=f64)
    with torch.no_grad():
        r.delta.copy_(torch.tensor([[0.5, -1.0], [0.25, 2.0], [-0.5, 0.0]], dtype=f64))
        if bias:
            r.b.copy_(torch.tensor([0.1, -0.2, 0.3], dtype=f64))
    return r


def test_readout_by_hand():
    # delta = [[0.5, -1], [0.25, 2], [-0.5, 0]], b = (0.1, -0.2, 0.3)
    # z = (0.2, -0.4): y_0 = 0.5*0.2 + (-1)*(-0.4) + 0.1 = 0.1 + 0.4 + 0.1 =  0.6
    #                  y_1 = 0.25*0.2 + 2*(-0.4) - 0.2 = 0.05 - 0.8 - 0.2 = -0.95
    #                  y_2 = -0.5*0.2 + 0 + 0.3                           =  0.2
    # z = (1, 3):      y = (0.5 - 3 + 0.1, 0.25 + 6 - 0.2, -0.5 + 0.3)    = (-2.4, 6.05, -0.2)
    r = hand_readout()
    z = torch.tensor([[0.2, -0.4], [1.0, 3.0]], dtype=f64)
    want = torch.tensor([[0.6, -0.95, 0.2], [-2.4, 6.05, -0.2]], dtype=f64)
    assert_close(r(z), want, "y", EXACT)
    # any leading shape (T, B, H) -> (T, B, O), and the unbatched (H,)
    assert_close(r(z.reshape(2, 1, 2)), want.reshape(2, 1, 3), "y (T, B, H)", EXACT)
    assert_close(r(z[0]), want[0], "y (H,)", EXACT)
    # no bias: y = delta z
    assert_close(hand_readout(bias=False)(z), want - torch.tensor([0.1, -0.2, 0.3], dtype=f64),
                 "y without b", EXACT)


def test_readout_parameters_and_init():
    H, O = 64, 300
    r = rf.Readout(H, O)
    names = dict(r.named_parameters())
    assert set(names) == {"delta", "b"}
    assert r.delta.shape == (O, H) and r.b.shape == (O,)
    bound = 1 / math.sqrt(H)
    assert r.delta.abs().max() <= bound and r.delta.abs().max() > 0.9 * bound
    assert (r.b == 0).all()
    plain = rf.Readout(H, O, bias=False)
    assert r.b is not None and plain.b is None
    assert set(dict(plain.named_parameters())) == {"delta"}


def test_readout_gradient():
    r = hand_readout()
    z = torch.tensor([[0.2, -0.4], [1.0, 3.0]], dtype=f64, requires_grad=True)
    g = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], dtype=f64)
    (r(z) * g).sum().backward()
    # d/d delta = sum_n g_n z_n^T, d/db = sum_n g_n, d/dz = g delta
    assert_close(r.delta.grad, g.T @ z.detach(), "grad delta", EXACT)
    assert_close(r.b.grad, g.sum(0), "grad b", EXACT)
    assert_close(z.grad, g @ r.delta.detach(), "grad z", EXACT)


def test_readout_on_top_of_a_layer():
    lstm = rf.LSTM(3, 4, dtype=f64)
    r = rf.Readout(4, 5, dtype=f64)
    out, _ = lstm(torch.randn(6, 2, 3, dtype=f64))
    assert r(out).shape == (6, 2, 5)


def test_readout_bad_input():
    with pytest.raises(ValueError, match="Readout: input has 3 features but hidden_size is 2"):
        hand_readout()(torch.zeros(4, 3, dtype=f64))
