"""The notes' GRU worked by hand."""

from __future__ import annotations

import torch

import rnnforge as rf
from rnnforge_testing import HAND, assert_close, run_cell, set_params

f64 = torch.float64


GRU_WEIGHTS = dict(alpha_s=[[0.5], [-1.0]], gamma_s=[[0.25, 0.0], [0.0, 0.25]],
                   alpha_r=[[1.0], [0.5]], gamma_r=[[0.0, -0.5], [0.5, 0.0]],
                   alpha=[[-0.5], [1.0]], gamma=[[1.0, 0.5], [-1.0, 0.25]])


def test_gru_by_hand():
    # z(0) = (0.5, -0.5), x(1) = 1
    #   s = σ(alpha_s x + gamma_s z) = σ(0.5 + 0.125, -1 - 0.125) = σ(0.625, -1.125)
    #     = (0.6513548646660542, 0.24508501313237172)
    #   r = σ(alpha_r x + gamma_r z) = σ(1 + 0.25, 0.5 + 0.25) = σ(1.25, 0.75)
    #     = (0.7772998611746911, 0.679178699175393)
    #   gamma z = (0.5 - 0.25, -0.5 - 0.125) = (0.25, -0.625)
    #   z~ = tanh(alpha x + r ⊙ gamma z) = tanh(-0.5 + 0.77730*0.25, 1 + 0.67918*(-0.625))
    #     = (-0.29649741924024664, 0.5193967688493586)
    #   z(1) = s ⊙ z(0) + (1 - s) ⊙ z~ = (0.22230504947584562, 0.2695578983688162)
    # x(2) = -2: s = σ(-0.94442, 2.06739), r = σ(-2.13478, -0.88885),
    #   gamma z(1) = (0.35708, -0.15492), z~ = (0.7770043382239693, -0.9670814080274044)
    #   z(2) = (0.6216843023011674, 0.13067461140798406)
    cell = rf.GRUCell(1, 2, dtype=f64)
    set_params(cell, **GRU_WEIGHTS)
    z0 = torch.tensor([0.5, -0.5], dtype=f64)
    z1, z2 = run_cell(cell, [[1.0], [-2.0]], z0)
    assert_close(z1, torch.tensor([0.22230504947584562, 0.2695578983688162], dtype=f64), "z(1)", HAND)
    assert_close(z2, torch.tensor([0.6216843023011674, 0.13067461140798406], dtype=f64), "z(2)", HAND)
    layer = rf.GRU(1, 2, engine="reference", dtype=f64)
    set_params(layer.cell(0), **GRU_WEIGHTS)
    out, h_n = layer(torch.tensor([[1.0], [-2.0]], dtype=f64), z0.unsqueeze(0))
    assert_close(out, torch.stack([z1, z2]), "layer out", HAND)
