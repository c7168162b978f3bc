"""The notes' cells: hand-worked examples, gradcheck, torch.nn cells, parameters, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call

import rnnforge as rf
from rnnforge_testing import (DTYPES, MODES, TORCH_CELLS, TORCH_MODES, Tol, assert_close,
                              assert_same_function, make_cell, make_layer, n_states, torch_to_ours)

# Hand examples agree with plain-python float64 arithmetic to the last few ulps.
HAND = Tol(rtol=1e-14, atol=1e-15)
f64 = torch.float64


def set_params(module, **values):
    """Overwrite named parameters with literal nested lists (float64)."""
    with torch.no_grad():
        for name, v in values.items():
            getattr(module, name).copy_(torch.tensor(v, dtype=f64))


def run_cell(cell, xs, state):
    """Feed the literal inputs ``xs`` one step at a time; return every step's result."""
    results = []
    for x in xs:
        state = cell(torch.tensor(x, dtype=f64), state)
        results.append(state)
    return results


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
