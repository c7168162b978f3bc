"""Every registered engine against ``reference``; ``engine="auto"``; engine errors.

The matrix iterates over ``rnnforge.engines.ENGINES`` at collection time, so an
engine registered later is covered without editing this file. Tolerances: the
one table in conftest.py.
"""

from __future__ import annotations

import pytest
import torch

from rnnforge import engines
from rnnforge.engines import AUTO_ORDER, ENGINES
from rnnforge_testing import (DTYPES, ENGINE_SHAPES, MODES, assert_same_function, build_engine_pair,
                              check_engine_matches_reference, make_layer, run_layer)

OTHERS = sorted(name for name in ENGINES if name != "reference")


@pytest.mark.parametrize("shape", ENGINE_SHAPES.values(), ids=ENGINE_SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", OTHERS)
def test_engine_matches_reference(engine, mode, dtype, shape):
    check_engine_matches_reference(engine, mode, dtype, shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", OTHERS)
def test_engine_inference_matches_reference(engine, mode, dtype):
    """Under no_grad and eval() (an engine may take another path there)."""
    cfg = ENGINE_SHAPES["lengths-L2-bidir-hx"]
    ref, other, x, hs, lengths = build_engine_pair(engine, mode, dtype, cfg)
    ref.eval(), other.eval()
    if ENGINES[engine].why_not(other, x, lengths) is not None:
        pytest.skip(f"{engine} cannot run {mode} {dtype}")
    with torch.no_grad():
        want, _, _ = run_layer(ref, mode, x, hs, lengths, grad=False)
        got, _, _ = run_layer(other, mode, x, hs, lengths, grad=False)
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
    with torch.no_grad():  # forward only above batch 4: oneDNN
        layer(torch.randn(5, 8, 3))
    assert layer.engine_used == "native"


C_LOOPS, BEYOND = dict(B=2, H=4), dict(B=65, H=4)  # batch above every fused.C_LOOP_MAX_BATCH
#: (mode, dtype, shape, training) -> the engine BENCHMARKS.md's engine tables measured fastest
RULE = [
    ("lstm", torch.float32, dict(B=4, H=4), False, "fused"),
    ("lstm", torch.float32, dict(B=5, H=4), False, "native"),
    ("lstm", torch.float32, dict(B=64, H=4), True, "fused"),
    ("gru", torch.float32, dict(B=64, H=4), False, "fused"),
    ("rnn_tanh", torch.float64, C_LOOPS, False, "fused"),
    ("rnn_sigmoid", torch.float32, C_LOOPS, True, "fused"),
    ("lstm", torch.float32, BEYOND, True, "native"),
    ("lstm", torch.float64, BEYOND, True, "fused"),
    ("lstm", torch.float64, BEYOND, False, "native"),
    ("gru", torch.float32, BEYOND, True, "fused"),
    ("gru", torch.float32, BEYOND, False, "native"),
    ("gru", torch.float64, dict(B=1, H=257), False, "native"),  # wider than the C loops
    ("rnn_tanh", torch.float32, BEYOND, False, "fused"),
    ("rnn_sigmoid", torch.float64, BEYOND, False, "fused"),
    ("gru", torch.bfloat16, C_LOOPS, False, "reference"),  # neither fast engine takes bfloat16 on CPU
]


@pytest.mark.parametrize("mode, dtype, shape, training, expected", RULE,
                         ids=[f"{m}-{str(d)[6:]}-B{s['B']}-H{s['H']}-{'train' if t else 'fwd'}"
                              for m, d, s, t, _ in RULE])
def test_choose_follows_the_measured_rule(mode, dtype, shape, training, expected):
    from rnnforge import _ckernels

    in_c_range = shape["B"] <= 64 and shape["H"] <= 256 and dtype != torch.bfloat16
    if in_c_range and not _ckernels.available("rnn"):
        pytest.skip("the fused engine's C loops cannot be built here")
    layer = make_layer(mode, 3, shape["H"], dtype=dtype)
    x = torch.randn(2, shape["B"], 3, dtype=dtype)
    with torch.set_grad_enabled(training):
        assert engines.choose(layer, x) == expected
        assert engines.select(layer, x, None).name == expected
        reasons = engines.available(layer, x)
    assert reasons[expected] is None
    for other in set(engines.MEASURED) - {expected}:  # a fast engine passed over says so
        own = ENGINES[other].engine.why_not(layer, x, None)
        if own is None:
            assert reasons[other].startswith(f"engine='auto' runs {expected} here: measured faster")
        else:
            assert reasons[other] == own


def test_auto_follows_the_measured_rule():
    """Through the layer: the rule decides engine_used; a named engine never defers to it."""
    x = torch.randn(4, 65, 3)
    gru = make_layer("gru", 3, 4)
    gru(x)  # training (parameters require grad): fused beats torch's per-step GRU
    assert gru.engine_used == "fused"
    with torch.no_grad():  # forward only: torch's kernel is as fast or faster
        gru(x)
    assert gru.engine_used == "native"
    reason = engines.available(gru, x)["fused"]
    assert reason is None or "engine='auto' runs native here" in reason
    lstm = make_layer("lstm", 3, 4)
    lstm(x)  # oneDNN
    assert lstm.engine_used == "native"
    assert "engine='auto' runs native" in engines.available(lstm, x)["fused"]
    assert make_layer("rnn_sigmoid", 3, 4)(x) is not None
    named = make_layer("lstm", 3, 4, engine="fused")
    assert engines.ENGINES["fused"].why_not(named, x, None) is None
    named(x)
    assert named.engine_used == "fused"


def test_auto_says_why_no_engine_can_run(monkeypatch):
    monkeypatch.setattr(engines, "AUTO_ORDER", ["native", "fused"])
    layer = make_layer("rnn_sigmoid", 3, 4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"^no engine can run this request: native: torch's kernels have "
                                         r"no rnn_sigmoid cell .*; fused: the fused engine takes "
                                         r"float32 or float64, got torch.bfloat16$"):
        layer(torch.randn(2, 1, 3, dtype=torch.bfloat16))


def test_unknown_engine():
    with pytest.raises(ValueError, match=r"unknown engine 'nope'; choose 'auto' or one of \["):
        make_layer("gru", 3, 4, engine="nope")
    layer = make_layer("gru", 3, 4)
    layer.engine = "nope"
    with pytest.raises(ValueError, match="unknown engine 'nope'"):
        layer(torch.randn(5, 2, 3))
