"""Every registered engine against ``reference``; ``engine="auto"``; engine errors.

The matrix iterates over ``rnnforge.engines.ENGINES`` at collection time, so an
engine registered later is covered without editing this file. Tolerances: the
one table in conftest.py.
"""

from __future__ import annotations

import re

import pytest
import torch

from rnnforge import engines
from rnnforge.engines import AUTO_ORDER, ENGINES
from rnnforge_testing import DTYPES, MODES, assert_same_function, flat_outputs, make_layer, n_states

OTHERS = sorted(name for name in ENGINES if name != "reference")

SHAPES = {
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
    # B=6: the fused C loops' 4-row product block plus leftover rows (test_fused_loops.py
    # also runs every shape here with the torch loops forced)
    "B6-L2-bias-hx": dict(T=5, B=6, I=3, H=5, L=2, bias=True, hx=True),
    "lengths-B6": dict(T=5, B=6, I=2, H=3, lengths=[5, 2, 4, 1, 3, 5]),
}


def build_pair(engine, mode, dtype, cfg):
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


def run(layer, mode, x, hs, lengths, grad=True):
    """Call ``layer``; return (flat outputs, x leaf, state leaves)."""
    xx = x.transpose(0, 1) if layer.batch_first else x
    xx = xx.clone().requires_grad_(grad)
    hh = [h.clone().requires_grad_(grad) for h in hs]
    hx = None if not hh else (tuple(hh) if mode == "lstm" else hh[0])
    return flat_outputs(layer(xx, hx, lengths=lengths)), xx, hh


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", OTHERS)
def test_engine_matches_reference(engine, mode, dtype, shape):
    ref, other, x, hs, lengths = build_pair(engine, mode, dtype, shape)
    reason = ENGINES[engine].why_not(other, x, lengths)
    if reason is not None:
        with pytest.raises(ValueError, match=re.escape(reason)):
            other(x.transpose(0, 1) if other.batch_first else x, lengths=lengths)
        pytest.skip(f"{engine} cannot run {mode} {dtype}: {reason}")

    want, x_r, hs_r = run(ref, mode, x, hs, lengths)
    got, x_o, hs_o = run(other, mode, x, hs, lengths)
    assert ref.engine_used == "reference" and other.engine_used == engine
    assert_same_function(got, want, ([x_o, *hs_o], [x_r, *hs_r]), (other, ref),
                         finite=shape.get("nan_padding", False))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", OTHERS)
def test_engine_inference_matches_reference(engine, mode, dtype):
    """Under no_grad and eval() (an engine may take another path there)."""
    cfg = SHAPES["lengths-L2-bidir-hx"]
    ref, other, x, hs, lengths = build_pair(engine, mode, dtype, cfg)
    ref.eval(), other.eval()
    if ENGINES[engine].why_not(other, x, lengths) is not None:
        pytest.skip(f"{engine} cannot run {mode} {dtype}")
    with torch.no_grad():
        want, _, _ = run(ref, mode, x, hs, lengths, grad=False)
        got, _, _ = run(other, mode, x, hs, lengths, grad=False)
    assert_same_function(got, want)


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_is_independent_of_engine(mode):
    layers = {name: make_layer(mode, 3, 4, num_layers=2, bidirectional=True, bias=True, engine=name)
              for name in ["auto", *ENGINES]}
    keys = {name: list(layer.state_dict()) for name, layer in layers.items()}
    assert all(k == keys["reference"] for k in keys.values()), keys
    for layer in layers.values():  # and loads strictly across engines
        layer.load_state_dict(layers["reference"].state_dict())


# -- auto and named engines ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_auto_picks_the_first_engine_that_can_run(mode, dtype):
    layer = make_layer(mode, 3, 4, dtype=dtype)
    assert layer.engine == "auto" and layer.engine_used is None
    x = torch.randn(5, 2, 3, dtype=dtype)
    layer(x)
    can = [name for name in AUTO_ORDER if ENGINES[name].why_not(layer, x, None) is None]
    assert layer.engine_used == can[0]
    assert engines.available(layer, x)[layer.engine_used] is None
    if mode == "rnn_sigmoid":  # torch has no sigmoid RNN kernel
        assert layer.engine_used != "native"
    else:  # a fast engine, not the reference loop
        assert layer.engine_used != "reference"


def test_auto_uses_native_for_lstm_on_cpu_float32():
    layer = make_layer("lstm", 3, 4)
    with torch.no_grad():  # forward only: oneDNN (fused's C loops: test_fused_loops.py)
        layer(torch.randn(5, 8, 3))
    # native is the one fast engine issue 2 requires; a later engine may rank above it
    assert layer.engine_used == next(n for n in AUTO_ORDER if n in ("native", *OTHERS))


def test_native_refuses_the_sigmoid_rnn():
    layer = make_layer("rnn_sigmoid", 3, 4, engine="native")
    assert "sigmoid" in ENGINES["native"].why_not(layer, torch.randn(5, 2, 3), None)
    with pytest.raises(ValueError, match=r"engine 'native' cannot run this RNN: .*sigmoid"):
        layer(torch.randn(5, 2, 3))
    assert layer.engine_used is None  # nothing ran, nothing fell back


def test_unknown_engine():
    with pytest.raises(ValueError, match=r"unknown engine 'nope'; choose 'auto' or one of \["):
        make_layer("gru", 3, 4, engine="nope")
    layer = make_layer("gru", 3, 4)
    layer.engine = "nope"
    with pytest.raises(ValueError, match="unknown engine 'nope'"):
        layer(torch.randn(5, 2, 3))


def test_reference_runs_everything():
    for mode in MODES:
        layer = make_layer(mode, 3, 4, bidirectional=True)
        assert ENGINES["reference"].why_not(layer, torch.randn(2, 2, 3), torch.tensor([2, 1])) is None
