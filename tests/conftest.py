"""Shared test helpers: the tolerance table, layer builders, torch.nn gradient mapping.

Tolerances
----------
ONE table, per dtype, used by every numerical comparison of two implementations
of the same function (rnnforge vs torch.nn, any engine vs ``reference``):

    |actual - expected| <= atol * scale + rtol * |expected|,
    scale = max(1, max |expected|)   (the magnitude of the tensor compared)

==========  ======  ======  =====================================================
dtype       rtol    atol    why
==========  ======  ======  =====================================================
float64     1e-9    1e-10   different summation orders differ by ~1e-16 per op;
                            the tests' sequences are short (T <= 7)
float32     1e-5    2e-5    ~1e-7 per op, accumulated over T steps, layers and
                            the batch sum in parameter gradients
==========  ======  ======  =====================================================

Hand-worked examples (``tests/cells/``) are compared with their own, tighter
tolerance ``HAND``, since they are exact up to the last digits printed.
"""

from __future__ import annotations

import re
import sys
from typing import NamedTuple

import pytest
import torch

import rnnforge as rf
from rnnforge.engines import ENGINES


# Test modules import these helpers as ``rnnforge_testing``, not ``conftest``: pytest
# re-imports every directory's conftest.py under that one module name, so a conftest in a
# subdirectory (tests/sampling/, ...) would shadow this one for ``from conftest import``.
sys.modules["rnnforge_testing"] = sys.modules[__name__]


class Tol(NamedTuple):
    rtol: float
    atol: float


TOL = {
    torch.float64: Tol(rtol=1e-9, atol=1e-10),
    torch.float32: Tol(rtol=1e-5, atol=2e-5),
}

#: hand-worked examples (tests/cells/): plain-python float64 arithmetic, to the last few ulps
HAND = Tol(rtol=1e-14, atol=1e-15)

DTYPES = [torch.float32, torch.float64]
#: every cell of the library: the notes' sigmoid RNN, the tanh RNN, GRU, LSTM
MODES = ["rnn_sigmoid", "rnn_tanh", "gru", "lstm"]
#: the cells torch.nn has a counterpart for
TORCH_MODES = ["rnn_tanh", "gru", "lstm"]


def assert_close(actual, expected, what: str = "", tol: Tol | None = None) -> None:
    """``actual`` equals ``expected`` within the dtype's row of ``TOL``.

    NaNs must sit at the same positions; shapes and dtypes must agree.
    """
    assert isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor), what
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    tol = tol or TOL[expected.dtype]
    finite = expected[torch.isfinite(expected)]
    scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol.rtol, atol=tol.atol * scale,
                               equal_nan=True, msg=lambda m: f"{what}: {m}")


# -- building layers -------------------------------------------------------------------
LAYERS = {"rnn_sigmoid": rf.RNN, "rnn_tanh": rf.RNN, "gru": rf.GRU, "lstm": rf.LSTM}
CELLS = {"rnn_sigmoid": rf.RNNCell, "rnn_tanh": rf.RNNCell, "gru": rf.GRUCell, "lstm": rf.LSTMCell}
TORCH_LAYERS = {"rnn_tanh": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
TORCH_CELLS = {"rnn_tanh": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}


def mode_kwargs(mode: str) -> dict:
    """Constructor kwargs that select ``mode`` (the RNN's nonlinearity)."""
    return {"nonlinearity": mode[4:]} if mode.startswith("rnn_") else {}


def make_layer(mode: str, input_size: int, hidden_size: int, **kwargs):
    return LAYERS[mode](input_size, hidden_size, **mode_kwargs(mode), **kwargs)


def make_cell(mode: str, input_size: int, hidden_size: int, **kwargs):
    return CELLS[mode](input_size, hidden_size, **mode_kwargs(mode), **kwargs)


def n_states(mode: str) -> int:
    return 2 if mode == "lstm" else 1


def set_params(module, **values):
    """Overwrite named parameters with literal nested lists (float64)."""
    with torch.no_grad():
        for name, v in values.items():
            getattr(module, name).copy_(torch.tensor(v, dtype=torch.float64))


def run_cell(cell, xs, state):
    """Feed the literal inputs ``xs`` (float64) one step at a time; return every step's result."""
    results = []
    for x in xs:
        state = cell(torch.tensor(x, dtype=torch.float64), state)
        results.append(state)
    return results


# -- torch.nn's gate layout, written out here rather than read from the library ----------
#: per mode, torch.nn's gates in its stacking order, each as
#: (our input weight, our recurrent weight, our bias, our recurrent bias or None).
#: torch: LSTM (i, f, g, o); GRU (r, z, n) with n's b_hn inside the reset product; RNN one.
#: The notes: LSTM f=(u,v), i=(w,p), o=(s,d), C~=(alpha,gamma); GRU s (multiplies the old
#: state = torch's z), r, candidate (alpha, gamma).
TORCH_GATE_ORDER = {
    "lstm": [("w", "p", "b_i", None), ("u", "v", "b_f", None),
             ("alpha", "gamma", "b_c", None), ("s", "d", "b_o", None)],
    "gru": [("alpha_r", "gamma_r", "b_r", None), ("alpha_s", "gamma_s", "b_s", None),
            ("alpha", "gamma", "b_z", "b_gamma")],
    "rnn_tanh": [("alpha", "gamma", "b", None)],
}
TORCH_GATE_ORDER["rnn_sigmoid"] = TORCH_GATE_ORDER["rnn_tanh"]


def torch_to_ours(mode: str, w_ih, w_hh, b_ih=None, b_hh=None) -> list[tuple[str, torch.Tensor | None]]:
    """Split torch's stacked tensors of one layer-direction into our named pieces.

    For weights or their gradients. A bias that torch splits in ``b_ih + b_hh``
    is one parameter of ours, so its gradient equals *each* of torch's two; this
    returns it once from ``b_ih`` and once from ``b_hh`` under the same name.
    """
    gates = TORCH_GATE_ORDER[mode]
    G = len(gates)
    pieces = []
    for (inp, rec, bias, rbias), wi, wh in zip(gates, w_ih.chunk(G), w_hh.chunk(G)):
        pieces += [(inp, wi), (rec, wh)]
    if b_ih is not None:
        for (inp, rec, bias, rbias), bi, bh in zip(gates, b_ih.chunk(G), b_hh.chunk(G)):
            pieces.append((bias, bi))
            pieces.append((rbias or bias, bh))
    return pieces


def torch_suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def torch_grads_by_our_name(mode: str, module: torch.nn.Module, layer: int, direction: int):
    """[(our parameter name, expected gradient)] from a torch.nn module's .grad fields."""
    sfx = torch_suffix(layer, direction)
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if module.bias else [])
    return torch_to_ours(mode, *[getattr(module, n + sfx).grad for n in names])


def _expected_param_grads(ours, theirs, mode):
    """[(our parameter, its name, expected gradient)] for every parameter of ``ours``."""
    if isinstance(theirs, torch.nn.RNNCellBase):
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if theirs.bias else [])
        return [(getattr(ours, n), n, g)
                for n, g in torch_to_ours(mode, *[getattr(theirs, n).grad for n in names])]
    if isinstance(theirs, torch.nn.RNNBase):
        return [(getattr(ours.cell(l, d), n), f"{n} layer {l} dir {d}", g)
                for l in range(ours.num_layers) for d in range(ours.num_directions)
                for n, g in torch_grads_by_our_name(mode, theirs, l, d)]
    want = dict(theirs.named_parameters())  # a module of ours: the same names
    return [(p, n, want[n].grad) for n, p in ours.named_parameters()]


def assert_same_function(got, want, inputs=None, modules=None, *, mode=None,
                         names=("out", "h_n", "c_n"), finite=False) -> None:
    """Two implementations compute the same function: equal outputs, equal gradients.

    ``got`` and ``want`` are the flat outputs (``flat_outputs``: out, h_n[, c_n];
    a cell's z[, C]) of ours and of the implementation it is compared with,
    within the dtype's row of ``TOL``. Then one backward of the same random
    weighted sum of each side's outputs, and the gradients compared:

    inputs   ``(ours, theirs)``: the leaves fed to each side (x, then the initial
             states), compared by position;
    modules  ``(ours, theirs)``: every parameter's gradient of our layer or cell
             against ``theirs``: one of ours (the ``engine="reference"`` twin,
             matched by name) or torch.nn's layer or cell (matched through
             ``TORCH_GATE_ORDER``; give ``mode``);
    finite   the input's padding held NaN or inf: every output and gradient of
             ours must be finite (padded steps must be inert).

    Without ``inputs`` and ``modules`` only the outputs are compared.
    """
    assert len(got) == len(want), f"{len(got)} outputs against {len(want)}"
    for name, g, w in zip(names, got, want):
        if finite:
            assert torch.isfinite(g).all(), f"{name}: the padding's NaN or inf leaked"
        assert_close(g, w, name)
    if inputs is None and modules is None:
        return
    cot = random_cotangents(*want)
    sum((w * c).sum() for w, c in zip(want, cot)).backward()
    sum((g * c).sum() for g, c in zip(got, cot)).backward()
    if inputs is not None:
        ours, theirs = inputs
        assert len(ours) == len(theirs)
        for k, (a, b) in enumerate(zip(ours, theirs)):
            what = "grad x" if k == 0 else f"grad hx[{k - 1}]"
            assert a.grad is not None, f"{what}: no gradient"
            if finite:
                assert torch.isfinite(a.grad).all(), f"{what}: not finite"
            assert_close(a.grad, b.grad, what)
    if modules is not None:
        ours, theirs = modules
        if isinstance(theirs, (torch.nn.RNNBase, torch.nn.RNNCellBase)) and mode is None:
            raise TypeError("assert_same_function: comparing with torch.nn needs mode")
        expected = _expected_param_grads(ours, theirs, mode)
        checked = {id(p) for p, _, _ in expected}
        assert len(checked) == sum(1 for _ in ours.parameters()), "every parameter must be compared"
        for p, name, g in expected:
            assert p.grad is not None, f"no gradient reaches {name}"
            if finite:
                assert torch.isfinite(p.grad).all(), (
                    f"a NaN in the padding reached the gradient of {name}; padded steps must be "
                    f"inert (torch.nn never reads them), e.g. zero them before the cells")
            assert_close(p.grad, g, f"grad {name}")


def random_cotangents(*tensors, generator=None):
    """A random weight for each output, so that the backward pass is a generic one."""
    return [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in tensors]


def flat_outputs(result) -> list[torch.Tensor]:
    """``out, h_n`` or ``out, (h_n, c_n)`` as a flat list of tensors."""
    out, state = result
    if isinstance(out, torch.nn.utils.rnn.PackedSequence):
        out = out.data
    return [out, *(state if isinstance(state, tuple) else (state,))]


# -- the engine parity matrix --------------------------------------------------------------
#: the engine parity matrix's cases (tests/engines/test_engines.py, and fused/test_cloops.py
#: with each of the fused engine's two loops forced)
ENGINE_SHAPES = {
    "T1-B1-H1": dict(T=1, B=1, I=2, H=1),
    "H7-bias": dict(T=4, B=3, I=5, H=7, bias=True),
    "L3-hx": dict(T=5, B=2, I=3, H=5, L=3, hx=True),
    "L2-bidir-bias-hx-batch_first": dict(T=4, B=3, I=3, H=4, L=2, bidir=True, bias=True, hx=True,
                                         batch_first=True),
    "lengths-L2-bidir-hx": dict(T=6, B=4, I=3, H=5, L=2, bidir=True, bias=True, hx=True,
                                lengths=[3, 6, 1, 4]),
    "lengths-B1-nan-padding": dict(T=4, B=1, I=2, H=3, lengths=[2], nan_padding=True),
    "lengths-max<T-nan-padding": dict(T=5, B=3, I=2, H=3, L=2, bias=True, lengths=[2, 4, 1],
                                      nan_padding=True),
    # B=6: the fused C loops' 4-row product block plus leftover rows
    "B6-L2-bias-hx": dict(T=5, B=6, I=3, H=5, L=2, bias=True, hx=True),
    "lengths-B6": dict(T=5, B=6, I=2, H=3, lengths=[5, 2, 4, 1, 3, 5]),
}


def build_engine_pair(engine, mode, dtype, cfg):
    """(reference layer, same weights under ``engine``), plus the call's arguments."""
    L, bidir, bias, bf = cfg.get("L", 1), cfg.get("bidir", False), cfg.get("bias", False), \
        cfg.get("batch_first", False)
    kwargs = dict(num_layers=L, bidirectional=bidir, bias=bias, batch_first=bf, dtype=dtype)
    ref = make_layer(mode, cfg["I"], cfg["H"], engine="reference", **kwargs)
    other = make_layer(mode, cfg["I"], cfg["H"], engine=engine, **kwargs)
    other.load_state_dict(ref.state_dict())  # an engine owns no parameters
    T, B = cfg["T"], cfg["B"]
    x = torch.randn(T, B, cfg["I"], dtype=dtype)  # time-major, as engines see it
    lengths = torch.tensor(cfg["lengths"]) if "lengths" in cfg else None
    if cfg.get("nan_padding"):
        x[torch.arange(T).unsqueeze(1) >= lengths] = float("nan")
    D = 2 if bidir else 1
    hs = [torch.randn(D * L, B, cfg["H"], dtype=dtype) for _ in range(n_states(mode))] \
        if cfg.get("hx") else []
    return ref, other, x, hs, lengths


def run_layer(layer, mode, x, hs, lengths, grad=True):
    """Call ``layer``; return (flat outputs, x leaf, state leaves)."""
    xx = x.transpose(0, 1) if layer.batch_first else x
    xx = xx.clone().requires_grad_(grad)
    hh = [h.clone().requires_grad_(grad) for h in hs]
    hx = None if not hh else (tuple(hh) if mode == "lstm" else hh[0])
    return flat_outputs(layer(xx, hx, lengths=lengths)), xx, hh


def check_engine_matches_reference(engine, mode, dtype, shape):
    """``engine`` computes the reference engine's function for one case of ``ENGINE_SHAPES``
    (or says why it cannot, and the layer raises that reason); skips where it cannot."""
    ref, other, x, hs, lengths = build_engine_pair(engine, mode, dtype, shape)
    reason = ENGINES[engine].why_not(other, x, lengths)
    if reason is not None:
        with pytest.raises(ValueError, match=re.escape(reason)):
            other(x.transpose(0, 1) if other.batch_first else x, lengths=lengths)
        pytest.skip(f"{engine} cannot run {mode} {dtype}: {reason}")

    want, x_r, hs_r = run_layer(ref, mode, x, hs, lengths)
    got, x_o, hs_o = run_layer(other, mode, x, hs, lengths)
    assert ref.engine_used == "reference" and other.engine_used == engine
    assert_same_function(got, want, ([x_o, *hs_o], [x_r, *hs_r]), (other, ref),
                         finite=shape.get("nan_padding", False))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread in every test, restored afterwards.

    The suite runs under pytest-xdist on shared cores, and the models here are
    small: with torch's default of one thread per core, a busy neighbour makes
    every small op wait for a descheduled thread (about ten times slower). The
    numbers do not change. Tests of threading set their own count inside.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _autotune_off(monkeypatch):
    """``engine="auto"`` follows the fixed rule in every test (and in the processes tests
    start): a measured choice depends on the machine's load. tests/engines/test_autotune.py
    turns measuring on where it tests it."""
    from rnnforge.engines import tuner

    monkeypatch.setenv("RNNFORGE_AUTOTUNE", "0")
    monkeypatch.setattr(tuner, "_enabled", None)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state (tests run in any order under xdist)."""
    torch.manual_seed(1234)
