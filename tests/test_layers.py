"""rf.RNN / GRU / LSTM (reference engine) against torch.nn, through ``from_torch``.

Outputs, final states and the gradient of every input and parameter, for float32
and float64, over layers, directions, batch_first, initial states, lengths,
packed and unbatched input. Also ``Layer.step``, dropout and bad input.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnforge as rf
from rnnforge import engines
from rnnforge_testing import (DTYPES, MODES, TORCH_LAYERS, TORCH_MODES, Tol, assert_close,
                              assert_same_function, flat_outputs, make_layer, n_states)

CONFIGS = {
    "L1": dict(T=5, B=3, I=4, H=6),
    "L2-bidir-nobias": dict(T=4, B=2, I=3, H=5, L=2, bidir=True, bias=False),
    "L3-bidir-batch_first-hx": dict(T=5, B=3, I=2, H=7, L=3, bidir=True, batch_first=True, hx=True),
    "H1-T1-B1-bidir-hx": dict(T=1, B=1, I=1, H=1, L=2, bidir=True, hx=True),
    "B1-H7": dict(T=3, B=1, I=5, H=7, L=2),
    "lengths-L2-bidir-hx": dict(T=6, B=4, I=3, H=5, L=2, bidir=True, hx=True, lengths=[3, 6, 1, 4]),
    "lengths-batch_first-nobias": dict(T=5, B=3, I=2, H=3, bias=False, batch_first=True,
                                       lengths=[5, 2, 2]),
    "lengths-max<T-bidir": dict(T=6, B=3, I=2, H=4, bidir=True, lengths=[2, 4, 3]),
}


def torch_layer(mode, I, H, L=1, bias=True, batch_first=False, bidir=False, dtype=torch.float64,
                dropout=0.0):
    kwargs = {"nonlinearity": "tanh"} if mode == "rnn_tanh" else {}
    return TORCH_LAYERS[mode](I, H, num_layers=L, bias=bias, batch_first=batch_first,
                              bidirectional=bidir, dropout=dropout, dtype=dtype, **kwargs)


def initial_state(mode, rows, B, H, dtype):
    """A random (rows, B, H) initial state (two for the LSTM); B=None for unbatched."""
    shape = (rows, H) if B is None else (rows, B, H)
    hs = [torch.randn(shape, dtype=dtype) for _ in range(n_states(mode))]
    return hs


def pack_state(mode, hs):
    return tuple(hs) if mode == "lstm" else hs[0]


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_reference_matches_torch(mode, dtype, cfg):
    T, B, I, H = cfg["T"], cfg["B"], cfg["I"], cfg["H"]
    L, bidir, bias = cfg.get("L", 1), cfg.get("bidir", False), cfg.get("bias", True)
    bf, lengths = cfg.get("batch_first", False), cfg.get("lengths")
    D = 2 if bidir else 1
    theirs = torch_layer(mode, I, H, L, bias, bf, bidir, dtype)
    ours = type(make_layer(mode, 1, 1)).from_torch(theirs, engine="reference")

    x = torch.randn((B, T, I) if bf else (T, B, I), dtype=dtype)
    hs = initial_state(mode, D * L, B, H, dtype) if cfg.get("hx") else []
    x_t, x_o = x.clone().requires_grad_(), x.clone().requires_grad_()
    hs_t = [h.clone().requires_grad_() for h in hs]
    hs_o = [h.clone().requires_grad_() for h in hs]

    inp_t = x_t
    if lengths is not None:
        inp_t = pack_padded_sequence(x_t, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
    out_t, state_t = theirs(inp_t, pack_state(mode, hs_t) if hs else None)
    if lengths is not None:
        out_t = pad_packed_sequence(out_t, batch_first=bf, total_length=T)[0]
    got = flat_outputs(ours(x_o, pack_state(mode, hs_o) if hs else None,
                            lengths=None if lengths is None else torch.tensor(lengths)))
    want = flat_outputs((out_t, state_t))
    assert ours.engine_used == "reference"
    if lengths is not None:  # outputs past a sequence's end are exactly zero
        t = torch.arange(T).unsqueeze(1)
        pad = (t >= torch.tensor(lengths))  # (T, B)
        out = got[0].transpose(0, 1) if bf else got[0]
        assert pad.any() and (out[pad] == 0).all()
    assert_same_function(got, want, ([x_o, *hs_o], [x_t, *hs_t]), (ours, theirs), mode=mode)


@pytest.mark.parametrize("batch_first", [False, True])  # (T, I) either way, as torch
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_unbatched_input_with_hx_matches_torch(mode, dtype, batch_first):
    T, I, H, L = 4, 3, 5, 2
    theirs = torch_layer(mode, I, H, L, batch_first=batch_first, bidir=True, dtype=dtype)
    ours = type(make_layer(mode, 1, 1)).from_torch(theirs, engine="reference")
    x = torch.randn(T, I, dtype=dtype)
    hs = initial_state(mode, 2 * L, None, H, dtype)
    x_t, x_o = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = flat_outputs(theirs(x_t, pack_state(mode, hs)))
    got = flat_outputs(ours(x_o, pack_state(mode, hs)))
    assert got[0].shape == (T, 2 * H) and got[1].shape == (2 * L, H)
    assert_same_function(got, want, ([x_o], [x_t]), (ours, theirs), mode=mode)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_packed_input_returns_packed_output(mode, enforce_sorted, batch_first):
    dtype, T, I, H = torch.float64, 5, 3, 4
    lengths = torch.tensor([5, 4, 2]) if enforce_sorted else torch.tensor([2, 5, 1, 4])
    B = lengths.numel()
    theirs = torch_layer(mode, I, H, 2, batch_first=batch_first, bidir=True, dtype=dtype)
    ours = type(make_layer(mode, 1, 1)).from_torch(theirs, engine="reference")
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype)
    hs = initial_state(mode, 4, B, H, dtype)  # (D*L, B, H): batch_first never applies to hx
    x_t, x_o = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_t, state_t = theirs(pack_padded_sequence(x_t, lengths, batch_first=batch_first,
                                                 enforce_sorted=enforce_sorted), pack_state(mode, hs))
    out_o, state_o = ours(pack_padded_sequence(x_o, lengths, batch_first=batch_first,
                                               enforce_sorted=enforce_sorted), pack_state(mode, hs))
    assert isinstance(out_o, PackedSequence)
    assert torch.equal(out_o.batch_sizes, out_t.batch_sizes)
    for field in ("sorted_indices", "unsorted_indices"):
        a, b = getattr(out_o, field), getattr(out_t, field)
        assert (a is None and b is None) or torch.equal(a, b), field
    want, got = flat_outputs((out_t, state_t)), flat_outputs((out_o, state_o))
    assert_same_function(got, want, ([x_o], [x_t]), (ours, theirs), mode=mode,
                         names=("out.data", "h_n", "c_n"))


@pytest.mark.parametrize("mode", TORCH_MODES)
def test_dropout_between_layers_as_torch(mode):
    """Dropout acts between layers, not after the last, drawing the same masks as torch.nn."""
    theirs = torch_layer(mode, 3, 4, L=3, dropout=0.5, dtype=torch.float64).train()
    ours = type(make_layer(mode, 1, 1)).from_torch(theirs, engine="reference").train()
    assert ours.dropout == 0.5
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    torch.manual_seed(7)
    want = flat_outputs(theirs(x))
    torch.manual_seed(7)
    got = flat_outputs(ours(x))
    assert_same_function(got, want)
    # the masks are really applied: training differs from evaluation above layer 0 only
    evaluated = flat_outputs(ours.eval()(x))
    assert not torch.allclose(evaluated[0], got[0])
    assert_close(evaluated[1][0], got[1][0], "layer 0's final state ignores dropout")


# -- Layer.step ------------------------------------------------------------------------
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_step_matches_forward(mode, with_hx):
    T, B, I, H, L = 5, 3, 4, 5, 3
    layer = make_layer(mode, I, H, num_layers=L, bias=True, engine="reference", dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    hx = pack_state(mode, initial_state(mode, L, B, H, torch.float64)) if with_hx else None
    out, state = layer(x, hx)
    want_states = state if mode == "lstm" else (state,)
    s = hx
    for t in range(T):
        z, s = layer.step(x[t], s)
        assert not z.requires_grad
        assert_close(z, out[t], f"step {t}")
    for k, (g, w) in enumerate(zip(s if mode == "lstm" else (s,), want_states)):
        assert_close(g, w, f"final state {k}")


def test_step_rejects_bidirectional_and_bad_shape():
    layer = rf.LSTM(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(torch.randn(2, 3))
    layer = rf.GRU(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 3\), got \(2, 5\)"):
        layer.step(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 4\)"):
        layer.step(torch.randn(2, 3), torch.randn(1, 2, 4))


# -- structure -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_cell_accessor(mode):
    layer = make_layer(mode, 3, 4, num_layers=2, bidirectional=True)
    cells = [layer.cell(l, d) for l in range(2) for d in range(2)]
    assert len({id(c) for c in cells}) == 4
    assert [c.input_size for c in cells] == [3, 3, 8, 8]
    assert all(c.hidden_size == 4 for c in cells)
    # the cells hold every parameter of the layer, and the names say where
    assert {id(p) for c in cells for p in c.parameters()} == {id(p) for p in layer.parameters()}
    assert layer.cell(1, 1) is dict(layer.named_modules())["cells.3"]
    for bad in [(2, 0), (-1, 0), (0, 2)]:
        with pytest.raises(IndexError, match="out of range"):
            layer.cell(*bad)
    uni = make_layer(mode, 3, 4)
    with pytest.raises(IndexError, match="direction 1 out of range"):
        uni.cell(0, 1)


@pytest.mark.parametrize("mode", MODES)
def test_bias_false_default_has_no_bias_parameters(mode):
    layer = make_layer(mode, 3, 4, num_layers=2)
    assert layer.bias is False
    assert all(p.dim() == 2 for p in layer.parameters())
    with_bias = make_layer(mode, 3, 4, num_layers=2, bias=True)
    assert any(p.dim() == 1 for p in with_bias.parameters())


# -- NaN -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_nan_propagates_as_in_torch(mode):
    theirs = torch_layer(mode, 3, 4, L=2, bidir=True, dtype=torch.float64)
    ours = type(make_layer(mode, 1, 1)).from_torch(theirs, engine="reference")
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    x[2, 1, 0] = float("nan")
    want, got = flat_outputs(theirs(x)), flat_outputs(ours(x))
    for name, g, w in zip(["out", "h_n", "c_n"], got, want):
        assert w.isnan().any() and (~w.isnan()).any()  # the test sees both kinds
        assert torch.equal(g.isnan(), w.isnan()), name
    assert_same_function(got, want)


@pytest.mark.parametrize("mode", TORCH_MODES)
def test_nan_in_padding_is_never_read(mode):
    """Values past a sequence's length (NaN, inf) reach neither outputs nor gradients."""
    theirs = torch_layer(mode, 3, 4, L=2, bidir=True, dtype=torch.float64)
    ours = type(make_layer(mode, 1, 1)).from_torch(theirs, engine="reference")
    lengths = torch.tensor([4, 5, 2])
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    x[4, 0], x[2:, 2, 1] = float("nan"), float("inf")
    x_t, x_o = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_t, h_t = theirs(pack_padded_sequence(x_t, lengths, enforce_sorted=False))
    want = flat_outputs((pad_packed_sequence(out_t, total_length=5)[0], h_t))
    got = flat_outputs(ours(x_o, lengths=lengths))
    assert_same_function(got, want, ([x_o], [x_t]), (ours, theirs), mode=mode, finite=True)


# -- bad input -------------------------------------------------------------------------
def test_bad_input_rank_and_size():
    lstm = rf.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"rank 3 .*got shape \(3,\)"):
        lstm(torch.randn(3))
    with pytest.raises(ValueError, match=r"rank 3 .*got shape \(2, 2, 2, 3\)"):
        lstm(torch.randn(2, 2, 2, 3))
    with pytest.raises(ValueError, match="input has 5 features but input_size is 3"):
        lstm(torch.randn(4, 2, 5))
    with pytest.raises(ValueError, match="input has 5 features but input_size is 3"):
        lstm(torch.randn(4, 5))  # unbatched
    with pytest.raises(ValueError, match="empty time or batch dimension"):
        lstm(torch.randn(0, 2, 3))
    with pytest.raises(TypeError, match="Tensor or PackedSequence"):
        lstm([[1.0, 2.0, 3.0]])


def test_bad_input_dtype():
    gru = rf.GRU(3, 4)  # float32 parameters
    with pytest.raises(ValueError, match=r"input is torch.float64 on cpu but the parameters are "
                                         r"torch.float32 on cpu; move one with .to\(\)"):
        gru(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="h_0 is torch.float64 on cpu but the input is torch.float32"):
        gru(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=torch.float64))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
@pytest.mark.parametrize("engine", ["reference", "native", "fused"])
@pytest.mark.parametrize("mode", MODES)
def test_autocast_takes_back_its_own_low_precision_state(mode, engine, device):
    """A training loop under autocast feeds the last call's state (bfloat16 on the native
    engine) back with a float32 input, as it would to torch.nn; the result is the float32
    run's within bfloat16's rounding. Outside autocast a mismatched state is still refused."""
    torch.manual_seed(0)
    layer = make_layer(mode, 4, 6, num_layers=2, engine=engine, device=device)
    x1, x2 = torch.randn(5, 3, 4, device=device), torch.randn(5, 3, 4, device=device)
    if engines.ENGINES[engine].why_not(layer, x1, None):
        pytest.skip(f"{engine} cannot run {mode} on {device}")
    with torch.autocast(device, enabled=False):  # full precision, for the reference figures
        _, s = layer(x1)
        want, _ = layer(x2, s)
    with torch.autocast(device, dtype=torch.bfloat16):
        _, s = layer(x1)
        got, _ = layer(x2, s)
    assert_close(got.float(), want, tol=Tol(rtol=0, atol=3e-2))
    with torch.autocast(device, dtype=torch.bfloat16):  # and a bfloat16 input, as a Linear there hands on
        got, _ = layer(x2.bfloat16(), s)
    assert_close(got.float(), want, tol=Tol(rtol=0, atol=3e-2))
    low = tuple(t.to(torch.bfloat16) for t in s) if n_states(mode) == 2 else s.to(torch.bfloat16)
    with pytest.raises(ValueError, match=f"h_0 is torch.bfloat16 on {x2.device} but the input is torch.float32"):
        layer(x2, low)


def test_bad_hx():
    gru = rf.GRU(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(4, 2, 4\) \(D\*num_layers, B, H\), "
                                         r"got \(2, 2, 4\)"):
        gru(x, torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(4, 4\)"):
        gru(x[:, 0], torch.zeros(4, 2, 4))  # unbatched input, batched hx
    with pytest.raises(ValueError, match="hx must be a tensor"):
        gru(x, (torch.zeros(4, 2, 4),))
    lstm = rf.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"hx must be a tuple \(h_0, c_0\)"):
        lstm(x, torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"c_0 must have shape \(1, 2, 4\)"):
        lstm(x, (torch.zeros(1, 2, 4), torch.zeros(1, 3, 4)))


def test_bad_lengths():
    rnn = rf.RNN(3, 4)
    x = torch.randn(5, 3, 3)
    with pytest.raises(ValueError, match=r"one entry per sequence \(3\), got shape \(2,\)"):
        rnn(x, lengths=torch.tensor([5, 2]))
    with pytest.raises(ValueError, match=r"one entry per sequence \(3\), got shape \(1, 3\)"):
        rnn(x, lengths=torch.tensor([[5, 2, 1]]))
    with pytest.raises(ValueError, match="every length must be at least 1, got 0"):
        rnn(x, lengths=torch.tensor([5, 0, 1]))
    with pytest.raises(ValueError, match="every length must be at least 1, got -2"):
        rnn(x, lengths=[5, -2, 1])
    with pytest.raises(ValueError, match="a length of 7 exceeds the input's 5 steps"):
        rnn(x, lengths=torch.tensor([5, 7, 1]))
    with pytest.raises(ValueError, match="lengths must hold integers, got dtype torch.float32"):
        rnn(x, lengths=torch.tensor([5.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="lengths must hold integers"):
        rnn(x, lengths=[5.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="lengths must hold integers"):
        rnn(x, lengths=torch.tensor([True, True, True]))
    with pytest.raises(ValueError, match="lengths needs a batched input"):
        rnn(x[:, 0], lengths=torch.tensor([5]))
    packed = pack_padded_sequence(x, torch.tensor([5, 3, 2]))
    with pytest.raises(ValueError, match="pass lengths or a PackedSequence, not both"):
        rnn(packed, lengths=torch.tensor([5, 3, 2]))
    # a list or tuple of ints, or an int32 tensor, means the same as the int64 tensor
    want = rnn(x, lengths=torch.tensor([5, 3, 2]))[0]
    for same in ([5, 3, 2], (5, 3, 2), torch.tensor([5, 3, 2], dtype=torch.int32)):
        assert torch.equal(rnn(x, lengths=same)[0], want)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_layers must be an int >= 1"):
        rf.LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\)"):
        rf.GRU(3, 4, dropout=1.0)
    with pytest.raises(ValueError, match="unknown engine 'cudnn'"):
        rf.RNN(3, 4, engine="cudnn")
    with pytest.raises(ValueError, match="unknown nonlinearity 'relu'"):
        rf.RNN(3, 4, nonlinearity="relu")
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        rf.GRU(3, 0)


# -- gradcheck of a whole layer ----------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_layer_gradcheck_bidirectional_with_lengths(mode):
    """Finite differences through 2 bidirectional layers with lengths, reference engine."""
    T, B, I, H, L = 3, 2, 2, 2, 2
    layer = make_layer(mode, I, H, num_layers=L, bidirectional=True, bias=True,
                       engine="reference", dtype=torch.float64)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    hs = [h.requires_grad_() for h in initial_state(mode, 2 * L, B, H, torch.float64)]
    lengths = torch.tensor([3, 1])
    k = len(hs)

    def f(x, *rest):
        hx = pack_state(mode, list(rest[:k]))
        return tuple(flat_outputs(
            functional_call(layer, dict(zip(names, rest[k:])), (x, hx), {"lengths": lengths})))

    assert gradcheck(f, (x, *hs, *params), eps=1e-6, atol=1e-7, rtol=1e-5)
