"""The notes' LSTM worked by hand."""

from __future__ import annotations

import torch

import rnnforge as rf
from rnnforge_testing import HAND, assert_close, run_cell, set_params

f64 = torch.float64


LSTM_WEIGHTS = dict(u=[[0.5], [-1.0]], v=[[0.25, 0.0], [0.0, 0.25]],
                    w=[[1.0], [0.5]], p=[[0.0, -0.5], [0.5, 0.0]],
                    s=[[-0.5], [0.25]], d=[[0.5, 0.5], [0.0, -1.0]],
                    alpha=[[-0.5], [1.0]], gamma=[[1.0, 0.5], [-1.0, 0.25]])


def test_lstm_by_hand():
    # z(0) = (0.5, -0.5), C(0) = (1, -0.25), x(1) = 1
    #   f  = σ(u x + v z)         = σ(0.625, -1.125) = (0.6513548646660542, 0.24508501313237172)
    #   i  = σ(w x + p z)         = σ(1.25, 0.75)    = (0.7772998611746911, 0.679178699175393)
    #   o  = σ(s x + d z)         = σ(-0.5 + 0, 0.25 + 0.5) = σ(-0.5, 0.75)
    #                                                = (0.3775406687981454, 0.679178699175393)
    #   C~ = tanh(alpha x + gamma z) = tanh(-0.5 + 0.25, 1 - 0.625) = tanh(-0.25, 0.375)
    #                                                = (-0.24491866240370913, 0.35835739835078595)
    #   C(1) = f ⊙ C(0) + i ⊙ C~  = (0.65135*1 + 0.77730*(-0.24492), 0.24509*(-0.25) + 0.67918*0.35836)
    #        = (0.46097962238056006, 0.182117458368672)
    #   z(1) = o ⊙ tanh(C(1))     = (0.1626755895058365, 0.12234073079698755)
    # x(2) = -2: f = σ(-0.95933, 2.03059), i = σ(-2.06117, -0.91866), o = σ(1.14251, -0.62234),
    #   C~ = tanh(1.22385, -2.13209)
    #   C(2) = (0.22264556964392104, -0.11633263278911557)
    #   z(2) = (0.16606155402810074, -0.04044679291930491)
    cell = rf.LSTMCell(1, 2, dtype=f64)
    set_params(cell, **LSTM_WEIGHTS)
    state0 = (torch.tensor([0.5, -0.5], dtype=f64), torch.tensor([1.0, -0.25], dtype=f64))
    (z1, C1), (z2, C2) = run_cell(cell, [[1.0], [-2.0]], state0)
    assert_close(C1, torch.tensor([0.46097962238056006, 0.182117458368672], dtype=f64), "C(1)", HAND)
    assert_close(z1, torch.tensor([0.1626755895058365, 0.12234073079698755], dtype=f64), "z(1)", HAND)
    assert_close(C2, torch.tensor([0.22264556964392104, -0.11633263278911557], dtype=f64), "C(2)", HAND)
    assert_close(z2, torch.tensor([0.16606155402810074, -0.04044679291930491], dtype=f64), "z(2)", HAND)
    layer = rf.LSTM(1, 2, engine="reference", dtype=f64)
    set_params(layer.cell(0), **LSTM_WEIGHTS)
    out, (h_n, c_n) = layer(torch.tensor([[1.0], [-2.0]], dtype=f64),
                            tuple(s.unsqueeze(0) for s in state0))
    assert_close(out, torch.stack([z1, z2]), "layer out", HAND)
    assert_close(c_n, C2.unsqueeze(0), "layer c_n", HAND)
