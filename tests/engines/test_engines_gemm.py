"""engines/gemm.py: the fused engine's large products through torch's BLAS or oneDNN.

Both must give the same products (float32 round-off), and the fused engine the reference
engine's function whichever runs; which runs follows the environment, autotune and a
once-per-thread-count measurement (autotune off: the CPU's vendor)."""

from __future__ import annotations

import pytest
import torch

from rnnforge.engines import gemm
from rnnforge_testing import ENGINE_SHAPES, MODES, assert_close, check_engine_matches_reference

needs_onednn = pytest.mark.skipif(gemm._onednn_op() is None, reason="torch has no oneDNN here")


@needs_onednn
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
def test_onednn_products_match_torch(monkeypatch, ta, tb):
    monkeypatch.setenv("RNNFORGE_GEMM", "onednn")
    m, k, n = 70, 130, 150  # above MIN_FLOPS, no multiple of a vector width
    a = torch.randn(k, m).t() if ta else torch.randn(m, k)
    b = torch.randn(n, k).t() if tb else torch.randn(k, n)
    assert gemm.use_onednn(a, b)
    want = a.double() @ b.double()  # the truth, compared at float32's tolerance
    assert_close(gemm.mm(a, b), want.float(), "mm")
    bias = torch.randn(n)
    out = torch.empty(m, n)
    gemm.addmm(bias, a, b, out)
    assert_close(out, (want + bias.double()).float(), "addmm")
    gemm.addmm(None, a, b, out)
    assert_close(out, want.float(), "addmm without bias")


def _vendor_from_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":")[1].strip() for ln in f if ln.startswith("vendor_id")), "")
    except OSError:
        return ""


def test_the_vendor_read():
    vendor = _vendor_from_cpuinfo()
    if not vendor:
        pytest.skip("no vendor_id in /proc/cpuinfo here")
    assert gemm.cpu_vendor() == vendor


@pytest.mark.parametrize("vendor, onednn", [("AuthenticAMD", True), ("GenuineIntel", False), ("", False)])
def test_the_fixed_rule_follows_the_vendor(monkeypatch, vendor, onednn):
    """Autotune off: oneDNN's product on AMD (MKL's generic kernels are the slower there),
    torch's elsewhere; never a measurement, and the C loops keep their fixed width."""
    a, b = torch.randn(128, 128), torch.randn(128, 128)
    monkeypatch.setattr(gemm, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(gemm, "_choice", {})
    monkeypatch.setattr(gemm, "_measure", lambda: pytest.fail("measured with autotune off"))
    has = gemm._onednn_op() is not None
    assert gemm.use_onednn(a, b) == (onednn and has)
    assert gemm.c_loop_max_hidden(256) == 256
    monkeypatch.setenv("RNNFORGE_GEMM", "blas")
    assert not gemm.use_onednn(a, b)
    if has:
        monkeypatch.setenv("RNNFORGE_GEMM", "onednn")
        assert gemm.use_onednn(a, b)


def test_which_product_runs(monkeypatch):
    a, b = torch.randn(128, 128), torch.randn(128, 128)
    monkeypatch.setattr(gemm, "_choice", {})
    measured = []
    monkeypatch.setattr(gemm, "_measure", lambda: measured.append(1) or True)
    has = gemm._onednn_op() is not None
    # the suite runs with autotune off: the fixed rule, by this CPU's vendor
    assert gemm.use_onednn(a, b) == (has and _vendor_from_cpuinfo() == "AuthenticAMD") and not measured
    monkeypatch.setenv("RNNFORGE_AUTOTUNE", "1")
    assert gemm.use_onednn(a, b) == has
    assert gemm.use_onednn(a, b) == has and len(measured) == int(has)  # once per thread count
    torch.set_num_threads(2)
    assert gemm.use_onednn(a, b) == has and len(measured) == 2 * int(has)
    # never: float64, small products, under autograd, or when told
    assert not gemm.use_onednn(a.double(), b.double())
    assert not gemm.use_onednn(a[:8, :8], b[:8, :8])
    assert not gemm.use_onednn(a.requires_grad_(), b)
    monkeypatch.setenv("RNNFORGE_GEMM", "blas")
    assert not gemm.use_onednn(a.detach(), b)


def test_no_measurement_inside_a_trace(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    monkeypatch.setenv("RNNFORGE_AUTOTUNE", "1")
    monkeypatch.setattr(gemm, "_choice", {})
    monkeypatch.setattr(gemm, "_measure", lambda: pytest.fail("measured inside a trace"))
    with FakeTensorMode():
        assert gemm.c_loop_max_hidden(256) == 256
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert gemm.c_loop_max_hidden(256) == 256
    assert gemm._choice == {}


@needs_onednn
@pytest.mark.parametrize("shape", ENGINE_SHAPES.values(), ids=ENGINE_SHAPES.keys())
@pytest.mark.parametrize("mode", MODES)
def test_fused_with_onednn_products_matches_reference(monkeypatch, mode, shape):
    """Every product of the fused engine through oneDNN (MIN_FLOPS 0), float32."""
    monkeypatch.setenv("RNNFORGE_GEMM", "onednn")
    monkeypatch.setattr(gemm, "MIN_FLOPS", 0)
    calls = []
    op = gemm._onednn_op()
    monkeypatch.setattr(gemm, "_onednn_op", lambda: (lambda *a: calls.append(1) or op(*a)))
    check_engine_matches_reference("fused", mode, torch.float32, shape)
    # input and weight gradients; the GRU's projection (the RNNs' and LSTM's C loops project themselves)
    assert len(calls) >= (3 if mode == "gru" else 2)


def test_c_loops_are_wide_where_blas_is_the_slower_product(monkeypatch):
    from rnnforge.engines import fused
    from rnnforge.engines.fused import cloops

    assert gemm.c_loop_max_hidden(256) == 256  # autotune off: the fixed limit
    assert not fused.runs_c_loops("lstm", 2, 257)
    if gemm._onednn_op() is None:
        return
    monkeypatch.setenv("RNNFORGE_GEMM", "onednn")
    assert gemm.c_loop_max_hidden(256) == gemm.WIDE_C_LOOPS == 1024
    assert gemm.c_loop_max_hidden(2048) == 2048
    assert gemm.c_loop_max_hidden(256, "gru") == gemm.c_loop_max_hidden(256, "rnn") == 256
    assert not fused.runs_c_loops("gru", 2, 257)
    like = torch.zeros(1)
    if cloops.c_loop("lstm_forward", like, 2, 1024) is None:
        pytest.skip("no C loops here")
    assert cloops.c_loop("lstm_forward", like, 2, 1025) is None
    monkeypatch.setenv("RNNFORGE_GEMM", "blas")
    assert cloops.c_loop("lstm_forward", like, 2, 257) is None


@pytest.mark.parametrize("isa", ["native", "avx2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_wide_c_loops_match_reference(monkeypatch, mode, dtype, isa):
    """H=300 (past the 256 of the narrow limit; not a multiple of any vector block), lengths,
    initial states, bias: the C loops at a width they take only where BLAS is slow."""
    from rnnforge import _ckernels
    from rnnforge.engines.fused import cloops

    monkeypatch.setenv("RNNFORGE_CPU_ISA", isa)
    try:
        _ckernels.load("rnn")
    except _ckernels.KernelUnavailable as e:
        pytest.skip(f"no {isa} C loops here: {e}")
    monkeypatch.setattr(cloops, "C_LOOP_MAX_HIDDEN", 1024)
    assert cloops.c_loop(f"{cloops.family(mode)}_forward", torch.zeros(1, dtype=dtype), 6, 300) is not None
    check_engine_matches_reference("fused", mode, dtype, dict(T=3, B=6, I=5, H=300, bias=True, hx=True,
                                                              lengths=[3, 1, 2, 3, 2, 1]))
