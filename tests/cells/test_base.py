"""What every cell shares (cells/_base.py): gradcheck, torch.nn's cells, state, parameters, errors.

The hand-worked examples of each cell are in test_rnn.py, test_gru.py and test_lstm.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call

import rnnforge as rf
from rnnforge_testing import (DTYPES, MODES, TORCH_CELLS, TORCH_MODES, assert_same_function,
                              make_cell, make_layer, n_states, torch_to_ours)

f64 = torch.float64


# -- gradcheck -----------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_cell_gradcheck(mode, bias):
    """d(output)/d(input, states, every parameter) against finite differences, float64."""
    B, I, H = 2, 3, 2
    cell = make_cell(mode, I, H, bias=bias, dtype=f64)
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    x = torch.randn(B, I, dtype=f64, requires_grad=True)
    states = [torch.randn(B, H, dtype=f64, requires_grad=True) for _ in range(n_states(mode))]
    k = len(states)

    def f(x, *rest):
        st, ps = rest[:k], rest[k:]
        state = tuple(st) if k == 2 else st[0]
        return functional_call(cell, dict(zip(names, ps)), (x, state))

    inputs = (x, *states, *params)
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert gradgradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


# -- against torch.nn's cells -----------------------------------------------------------------
def load_into(cell, mode, torch_cell):
    """Copy a torch.nn cell into ours by the gate table of conftest (not the library's)."""
    tensors = [torch_cell.weight_ih, torch_cell.weight_hh]
    if torch_cell.bias:
        tensors += [torch_cell.bias_ih, torch_cell.bias_hh]
    values = {}
    for name, t in torch_to_ours(mode, *tensors):  # a merged bias appears twice: add
        values[name] = values[name] + t if name in values else t.detach().clone()
    with torch.no_grad():
        for name, t in values.items():
            getattr(cell, name).copy_(t)
    assert set(values) == {n for n, _ in cell.named_parameters()}


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_cell_matches_torch_cell(mode, dtype, bias, batched):
    I, H = 3, 5
    kwargs = {"nonlinearity": "tanh"} if mode == "rnn_tanh" else {}
    theirs = TORCH_CELLS[mode](I, H, bias=bias, dtype=dtype, **kwargs)
    ours = make_cell(mode, I, H, bias=bias, dtype=dtype)
    load_into(ours, mode, theirs)
    lead = (4,) if batched else ()
    x = torch.randn(*lead, I, dtype=dtype)
    states = [torch.randn(*lead, H, dtype=dtype) for _ in range(n_states(mode))]
    x_t, x_o = x.clone().requires_grad_(), x.clone().requires_grad_()
    st_t = [s.clone().requires_grad_() for s in states]
    st_o = [s.clone().requires_grad_() for s in states]
    pack = (lambda s: tuple(s)) if mode == "lstm" else (lambda s: s[0])
    want = theirs(x_t, pack(st_t))
    got = ours(x_o, pack(st_o))
    want = list(want) if mode == "lstm" else [want]
    got = list(got) if mode == "lstm" else [got]
    assert_same_function(got, want, ([x_o, *st_o], [x_t, *st_t]), (ours, theirs), mode=mode,
                         names=("z", "C"))


@pytest.mark.parametrize("mode", MODES)
def test_state_none_means_zeros(mode):
    cell = make_cell(mode, 3, 4, bias=True, dtype=f64)
    x = torch.randn(2, 3, dtype=f64)
    zeros = torch.zeros(2, 4, dtype=f64)
    if mode == "lstm":
        C = torch.randn(2, 4, dtype=f64)
        for a, b in zip(cell(x), cell(x, (zeros, zeros))):
            assert torch.equal(a, b)
        for a, b in zip(cell(x, (None, C)), cell(x, (zeros, C))):
            assert torch.equal(a, b)
    else:
        assert torch.equal(cell(x), cell(x, zeros))
    # unbatched (I,) gives the batched result's row
    one = cell(x[1])
    full = cell(x)
    if mode == "lstm":
        assert one[0].shape == (4,) and torch.allclose(one[0], full[0][1])
    else:
        assert one.shape == (4,) and torch.allclose(one, full[1])


# -- parameters --------------------------------------------------------------------------
PARAMS = {
    "rnn_sigmoid": (["alpha"], ["gamma"], ["b"]),
    "rnn_tanh": (["alpha"], ["gamma"], ["b"]),
    "gru": (["alpha", "alpha_s", "alpha_r"], ["gamma", "gamma_s", "gamma_r"],
            ["b_s", "b_r", "b_z", "b_gamma"]),
    "lstm": (["alpha", "u", "w", "s"], ["gamma", "v", "p", "d"], ["b_f", "b_i", "b_o", "b_c"]),
}


@pytest.mark.parametrize("mode", MODES)
def test_parameter_names_and_shapes(mode):
    """Names and shapes as DESIGN.md: input weights (H, I), recurrent (H, H), biases (H,)."""
    I, H = 3, 5
    inputs, recurrents, biases = PARAMS[mode]
    plain = dict(make_cell(mode, I, H).named_parameters())
    assert set(plain) == set(inputs) | set(recurrents)  # bias=False by default: no bias at all
    for n in inputs:
        assert plain[n].shape == (H, I), n
    for n in recurrents:
        assert plain[n].shape == (H, H), n
    with_bias = make_cell(mode, I, H, bias=True)
    shapes = {n: p.shape for n, p in with_bias.named_parameters()}
    assert set(shapes) == set(inputs) | set(recurrents) | set(biases)
    for n in biases:
        assert shapes[n] == (H,), n
        assert getattr(make_cell(mode, I, H), n) is None
    # row m is unit m: perturbing row m of an input weight changes only unit m at step one
    cell = make_cell(mode, I, H, dtype=f64)
    x = torch.randn(I, dtype=f64)
    before = cell(x)
    with torch.no_grad():
        getattr(cell, inputs[0])[2] += 1.0
    after = cell(x)
    z0, z1 = (before[0], after[0]) if mode == "lstm" else (before, after)
    changed = (z0 != z1).nonzero().flatten().tolist()
    assert changed == [2]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_initialisation_within_one_over_sqrt_h(mode, bias):
    H = 256  # enough entries that a bias (H,) reaches within 20% of both bounds (p ~ 1e-12)
    bound = 1 / math.sqrt(H)
    cell = make_cell(mode, 8, H, bias=bias)
    for name, p in cell.named_parameters():
        assert p.abs().max() <= bound, name
        assert p.max() > 0.8 * bound and p.min() < -0.8 * bound, f"{name} fills ±1/sqrt(H)"
    # a layer's upper cells take D*H inputs but keep the bound of H
    layer = make_layer(mode, 8, 16, num_layers=2, bidirectional=True, bias=bias)
    assert all(p.abs().max() <= 0.25 for p in layer.parameters())
    assert max(p.abs().max() for p in layer.cell(1, 1).parameters()) > 0.2


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_cell_bad_input(mode):
    cell = make_cell(mode, 3, 4)
    name = type(cell).__name__
    with pytest.raises(ValueError, match=rf"{name}: expected input of shape \(B, 3\) or \(3,\), "
                                         r"got \(2, 2, 3\)"):
        cell(torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match=rf"{name}: input has 5 features but input_size is 3"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"input is torch.float64 on cpu but the parameters are "
                                         r"torch.float32"):
        cell(torch.randn(2, 3, dtype=f64))
    bad_shape = torch.zeros(3, 4)
    bad_dtype = torch.zeros(2, 4, dtype=f64)
    good = torch.zeros(2, 4)
    if mode == "lstm":
        with pytest.raises(ValueError, match=r"z_prev must have shape \(2, 4\), got \(3, 4\)"):
            cell(torch.randn(2, 3), (bad_shape, good))
        with pytest.raises(ValueError, match=r"C_prev must have shape \(2, 4\), got \(3, 4\)"):
            cell(torch.randn(2, 3), (good, bad_shape))
        with pytest.raises(ValueError, match="C_prev is torch.float64 on cpu but the input is torch.float32"):
            cell(torch.randn(2, 3), (good, bad_dtype))
    else:
        with pytest.raises(ValueError, match=r"z_prev must have shape \(2, 4\), got \(3, 4\)"):
            cell(torch.randn(2, 3), bad_shape)
        with pytest.raises(ValueError, match="z_prev is torch.float64 on cpu but the input is torch.float32"):
            cell(torch.randn(2, 3), bad_dtype)


def test_cell_bad_constructor_arguments():
    with pytest.raises(ValueError, match="input_size must be a positive int, got 0"):
        rf.LSTMCell(0, 4)
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 2.5"):
        rf.GRUCell(3, 2.5)
    with pytest.raises(ValueError, match="unknown nonlinearity 'relu'"):
        rf.RNNCell(3, 4, nonlinearity="relu")
