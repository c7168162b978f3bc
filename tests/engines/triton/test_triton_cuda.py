"""The triton engine at full size on CUDA: the persistent multi-program launch (grid
barrier), widths up to the stated limits, ``auto``'s rule on CUDA. Skipped without a GPU
(the interpreter tests in test_triton_engine.py cover the arithmetic on CPU).

Tolerances: float32 the suite's table (the kernels' float32 products are IEEE, no TF32);
half precision ``HALF`` of test_triton_engine.py, against a float32 reference.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from rnnforge import engines
from rnnforge.engines.triton import function
from rnnforge_testing import MODES, Tol, assert_close, assert_same_function, flat_outputs, make_layer

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA device: the compiled kernels need one (test_triton_engine.py "
                              "runs them through the interpreter on CPU)"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                       reason="triton is not installed (pip install 'rnnforge[gpu]')"),
]

CUDA = torch.device("cuda")
TOL_HALF = {torch.float16: (1e-2, 1e-2), torch.bfloat16: (4e-2, 4e-2)}


def _pair(mode, T, B, I, H, dtype=torch.float32, **kw):
    tri = make_layer(mode, I, H, engine="triton", dtype=dtype, device=CUDA, **kw)
    ref = make_layer(mode, I, H, engine="reference", device=CUDA, **kw)
    ref.load_state_dict({k: v.float() for k, v in tri.state_dict().items()})
    x = torch.randn(T, B, I, device=CUDA)
    return ref, tri, x


@pytest.mark.parametrize("strategy", ["persistent", "steps"])
@pytest.mark.parametrize("mode", MODES)
def test_triton_cuda_full_size_matches_reference(mode, strategy, monkeypatch):
    """(T, B, H) = (64, 16, 256), two layers, bidirectional, bias, unsorted lengths: 16
    programs of 16 units each, meeting at the grid barrier (or at launch boundaries)."""
    monkeypatch.setattr(function, "STRATEGY", strategy)
    ref, tri, x = _pair(mode, 64, 16, 64, 256, num_layers=2, bidirectional=True, bias=True)
    lengths = torch.randint(1, 65, (16,))
    p = function.plan(mode, 16, 256, CUDA, False)
    assert p.nprog == 16 and p.sync == (strategy == "persistent")
    x_r, x_t = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = flat_outputs(ref(x_r, lengths=lengths))
    got = flat_outputs(tri(x_t, lengths=lengths))
    assert tri.engine_used == "triton"
    assert_same_function(got, want, ([x_t], [x_r]), (tri, ref))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_triton_cuda_half_at_the_width_limit(mode, dtype):
    """The widest layer each cell runs (LSTM and GRU 512, RNNs 1024 on H100/H200) in the
    half dtype, against a float32 reference."""
    H = function.max_width(mode, *function.device_limits(CUDA))
    ref, tri, x = _pair(mode, 8, 4, 32, H, dtype=dtype, bias=True)
    x_r, x_t = x.clone().requires_grad_(), x.to(dtype).requires_grad_()
    want = flat_outputs(ref(x_r))
    got = flat_outputs(tri(x_t))
    rtol, atol = TOL_HALF[dtype]
    for g, w in zip(got, want):
        torch.testing.assert_close(g.float(), w, rtol=rtol, atol=atol * max(1.0, w.abs().max().item()))
    sum(w.sum() for w in want).backward()
    sum(g.float().sum() for g in got).backward()
    for (name, p), q in zip(tri.named_parameters(), ref.parameters()):
        scale = max(1.0, q.grad.abs().max().item())
        torch.testing.assert_close(p.grad.float(), q.grad, rtol=rtol, atol=atol * scale, msg=name)


def test_auto_runs_native_on_cuda_until_triton_is_measured():
    layer = make_layer("gru", 32, 64, device=CUDA)
    layer(torch.randn(8, 4, 32, device=CUDA))
    assert layer.engine_used == "native"


def test_auto_offers_triton_first_on_cuda(monkeypatch):
    monkeypatch.setattr(engines, "TRITON_IN_AUTO", True)
    layer = make_layer("gru", 32, 64, device=CUDA)
    layer(torch.randn(8, 4, 32, device=CUDA))
    assert layer.engine_used == "triton"
    wide = make_layer("lstm", 8, 2048, device=CUDA)  # past the float32 limit: native
    wide(torch.randn(2, 1, 8, device=CUDA))
    assert wide.engine_used == "native"
    double = make_layer("lstm", 8, 16, device=CUDA, dtype=torch.float64)
    double(torch.randn(2, 1, 8, device=CUDA, dtype=torch.float64))
    assert double.engine_used == "native"


def test_triton_cuda_one_program_matches_persistent(monkeypatch):
    """Where the weights fit one program (H=64 LSTM), auto runs one program without a
    barrier; the persistent launch of 4 programs gives the same result."""
    ref, tri, x = _pair("lstm", 32, 8, 16, 64, dtype=torch.float16)
    p = function.plan("lstm", 8, 64, CUDA, False)
    assert p.nprog == 1 and not p.sync
    one = flat_outputs(tri(x.half()))
    monkeypatch.setattr(function, "STRATEGY", "persistent")
    many = flat_outputs(tri(x.half()))
    for a, b in zip(many, one):
        assert_close(a.float(), b.float(), "one against persistent", Tol(rtol=2e-3, atol=2e-3))
