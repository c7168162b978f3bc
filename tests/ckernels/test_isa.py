"""RNNFORGE_CPU_ISA=avx2: the portable x86-64 build of the C loops (AVX2 + FMA, no AVX-512).

Whatever this machine has, the forced build takes the 256-bit path of rnn.c (8 accumulator
vectors, the path of every x86 CPU without AVX-512), so it passes the same parity matrix
against ``reference`` as the default ``-march=native`` build, here in the same test run.
"""
from __future__ import annotations

import math
import shutil
import subprocess

import pytest
import torch

from rnnforge import _ckernels as ck
from rnnforge.engines.fused import cloops
from rnnforge_testing import DTYPES, ENGINE_SHAPES, MODES, check_engine_matches_reference, make_layer


def _avx2_or_skip():
    try:
        return ck.load("rnn")
    except ck.KernelUnavailable as e:
        pytest.skip(f"no AVX2 build of the C loops here: {e}")


@pytest.fixture
def avx2(monkeypatch):
    """The AVX2 build is the one every C loop of the test calls."""
    monkeypatch.setenv("RNNFORGE_CPU_ISA", "avx2")
    return _avx2_or_skip()


@pytest.fixture
def c_loops_everywhere(monkeypatch):
    monkeypatch.setattr(cloops, "C_LOOP_MAX_BATCH", dict.fromkeys(cloops.C_LOOP_MAX_BATCH, 1 << 30))


def test_the_avx2_build_is_its_own_library_without_avx512(avx2):
    path, flags = ck.built["rnn-avx2"]
    assert "-mavx2" in flags and "-mfma" in flags and not any("march" in f for f in flags)
    native = ck.built.get("rnn")
    if native is not None:  # another name in the cache: neither build replaces the other
        assert native[0] != path
    if shutil.which("objdump"):
        asm = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True).stdout
        assert "ymm" in asm and "zmm" not in asm  # 256-bit vectors, no AVX-512 register


def test_an_unknown_isa_is_refused(monkeypatch):
    monkeypatch.setenv("RNNFORGE_CPU_ISA", "sse9")
    with pytest.raises(ck.KernelUnavailable, match=r"RNNFORGE_CPU_ISA='sse9' is not one of \['native', 'avx2'\]"):
        ck.load("rnn")


@pytest.mark.parametrize("shape", ENGINE_SHAPES.values(), ids=ENGINE_SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_avx2_loops_match_reference(avx2, c_loops_everywhere, mode, dtype, shape):
    check_engine_matches_reference("fused", mode, dtype, shape)


@pytest.mark.parametrize("mode", MODES)
def test_avx2_and_native_loops_agree_on_a_larger_case(mode, monkeypatch, c_loops_everywhere):
    """T=40, H=37 (two 16-float blocks of the AVX2 product and a remainder), 13 rows in three
    blocks of four and one left over, on 3 OpenMP threads, lengths, two layers: the two builds
    agree to float64 round-off (they differ in blocking, hence in summation order)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    layer = make_layer(mode, 7, 37, num_layers=2, bias=True, engine="fused", dtype=torch.float64)
    x = torch.randn(40, 13, 7, dtype=torch.float64)
    lengths = torch.randint(1, 41, (13,))
    lengths[0] = 40
    results = {}
    for isa in ("native", "avx2"):
        monkeypatch.setenv("RNNFORGE_CPU_ISA", isa)
        if isa == "avx2":
            _avx2_or_skip()
        layer.zero_grad()
        xx = x.clone().requires_grad_(True)
        y = layer(xx, lengths=lengths)[0]
        (y * torch.cos(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape)).sum().backward()
        results[isa] = [y.detach(), xx.grad] + [p.grad.clone() for p in layer.parameters()]
    assert layer.engine_used == "fused"
    for a, b in zip(results["avx2"], results["native"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_avx2_activations_match_torch(avx2, fn, dtype):
    """The vectorized activations of the AVX2 build: within 4 ulps of float64 torch."""
    suf = "_f32" if dtype == torch.float32 else "_f64"
    mag = torch.logspace(-30, 2.5, 4001, dtype=torch.float64)
    x = torch.cat([-mag.flip(0), torch.zeros(1, dtype=torch.float64), mag]).to(dtype)
    y = x.clone()
    getattr(avx2, f"rf_{fn}{suf}")(y.data_ptr(), y.numel())
    want = getattr(torch, fn)(x.double())
    ok = want.abs() > torch.finfo(dtype).tiny
    eps = torch.finfo(dtype).eps
    ulps = ((y.double() - want.to(dtype).double()).abs()[ok] / (want.abs()[ok] * eps)).max().item()
    assert ulps <= 4
    nan = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
    getattr(avx2, f"rf_{fn}{suf}")(nan.data_ptr(), 3)
    assert math.isnan(nan[0].item()) and nan[1:].tolist() == getattr(torch, fn)(
        torch.tensor([math.inf, -math.inf], dtype=dtype)).tolist()


@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_avx2_lstm_cell_activations_match_torch(avx2, fn):
    from test_cloops import check_lstm_activations
    check_lstm_activations(avx2, fn)
