"""The triton engine against the reference engine: every cell, forward and every gradient.

Without a GPU the kernels run through Triton's interpreter on CPU tensors (conftest.py
sets ``TRITON_INTERPRET=1``); with one, the same cases run compiled on CUDA. Shapes are
small (T <= 8, B <= 4, H <= 32): the interpreter runs each tl op in numpy.

Tolerances: float32 the suite's table (conftest.TOL); half precision against the
float32 reference, ``HALF`` below: float16 keeps 11 significant bits (about 5e-4
relative per rounding), bfloat16 8 (about 4e-3), and the weights, the input and the
state entering each recurrent product are rounded once per step (the state itself and
the gate arithmetic stay float32), so errors of a few roundings accumulated over T=6
steps and two layers.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

from rnnforge import engines
from rnnforge.engines import ENGINES
from rnnforge.engines.triton import function
from rnnforge_testing import ENGINE_SHAPES, MODES, Tol, assert_close, assert_same_function, \
    check_engine_matches_reference, flat_outputs, make_layer, n_states, random_cotangents

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (pip install 'rnnforge[gpu]')")

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")

#: half precision against the float32 reference: |got - want| <= atol * max(1, |want|max) + rtol |want|
HALF = {torch.float16: Tol(rtol=1e-2, atol=1e-2), torch.bfloat16: Tol(rtol=4e-2, atol=4e-2)}

CASES = {
    "T1-B1-H1": dict(T=1, B=1, I=2, H=1),
    "T8-B4-H32-bias": dict(T=8, B=4, I=5, H=32, bias=True),
    "H7-L2-bidir-hx": dict(T=5, B=3, I=3, H=7, L=2, bidir=True, hx=True),
    "lengths-unsorted-L2-bidir-bias-hx": dict(T=6, B=4, I=3, H=5, L=2, bidir=True, bias=True,
                                              hx=True, lengths=[3, 6, 1, 4]),
}


@pytest.fixture(autouse=True)
def _kernels_for_the_device(_interpreter):
    """CPU tensors need the interpreted kernels; say so where a GPU process compiled them."""
    if DEVICE.type == "cpu":
        from rnnforge.engines.triton.engine import load_kernels

        if os.environ.get("TRITON_INTERPRET") != "1" or not load_kernels().INTERPRETED:
            pytest.skip("the kernels were compiled for a GPU before TRITON_INTERPRET=1 was set: "
                        "run this folder in a process of its own")


def pair(mode, cfg, dtype=torch.float32, ref_dtype=None):
    """(reference layer, triton layer with the same weights, x, initial states, lengths)."""
    L, bidir, bias = cfg.get("L", 1), cfg.get("bidir", False), cfg.get("bias", False)
    kw = dict(num_layers=L, bidirectional=bidir, bias=bias, device=DEVICE)
    tri = make_layer(mode, cfg["I"], cfg["H"], engine="triton", dtype=dtype, **kw)
    ref = make_layer(mode, cfg["I"], cfg["H"], engine="reference", dtype=ref_dtype or dtype, **kw)
    ref.load_state_dict({k: v.to(ref_dtype or dtype) for k, v in tri.state_dict().items()})
    T, B = cfg["T"], cfg["B"]
    x = torch.randn(T, B, cfg["I"], device=DEVICE).to(dtype)
    D = 2 if bidir else 1
    hs = [torch.randn(D * L, B, cfg["H"], device=DEVICE).to(dtype) for _ in range(n_states(mode))] \
        if cfg.get("hx") else []
    lengths = torch.tensor(cfg["lengths"]) if "lengths" in cfg else None
    return ref, tri, x, hs, lengths


def call(layer, mode, x, hs, lengths, dtype=None):
    """Flat outputs and the leaves (x, states) of one call, inputs cast to ``dtype``."""
    xx = x.to(dtype or x.dtype).detach().requires_grad_()
    hh = [h.to(dtype or h.dtype).detach().requires_grad_() for h in hs]
    hx = None if not hh else (tuple(hh) if mode == "lstm" else hh[0])
    return flat_outputs(layer(xx, hx, lengths=lengths)), xx, hh


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("mode", MODES)
def test_triton_matches_reference(mode, case):
    ref, tri, x, hs, lengths = pair(mode, case)
    want, x_r, hs_r = call(ref, mode, x, hs, lengths)
    got, x_t, hs_t = call(tri, mode, x, hs, lengths)
    assert tri.engine_used == "triton"
    assert_same_function(got, want, ([x_t, *hs_t], [x_r, *hs_r]), (tri, ref))


@pytest.mark.parametrize("shape", ["L2-bidir-bias-hx-batch_first", "lengths-B1-nan-padding",
                                   "lengths-max<T-nan-padding"])
@pytest.mark.parametrize("mode", MODES)
def test_triton_in_the_engine_matrix(mode, shape):
    """The suite's engine parity cases that test_engines.py runs for triton only where the
    interpreter is on: batch_first, NaN in the padding (padded steps must be inert)."""
    if CUDA:
        pytest.skip("the engine matrix builds CPU tensors; test_triton_cuda.py covers CUDA")
    check_engine_matches_reference("triton", mode, torch.float32, ENGINE_SHAPES[shape])


@pytest.mark.parametrize("mode", MODES)
def test_triton_packed_sequence(mode):
    ref, tri, x, hs, _ = pair(mode, dict(T=5, B=3, I=3, H=6, bias=True))
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([2, 5, 4]),
                                                     enforce_sorted=False)
    want = flat_outputs(ref(packed))
    got = flat_outputs(tri(packed))
    assert_same_function(got, want, modules=(tri, ref))


def _steps_block(H):
    """Units per program in the one-launch-per-step mode: several programs for every H
    here (the GPU's tl.dot needs 16, so a GPU splits only H=32)."""
    return 16 if CUDA else max(1, H // 3)


#: the one-launch-per-step cases: one layer (each step is a launch, slow in the interpreter)
STEP_CASES = {
    "T8-B4-H32-bias": CASES["T8-B4-H32-bias"],
    "lengths-unsorted-bidir-bias-hx": dict(T=5, B=4, I=3, H=7, bidir=True, bias=True, hx=True,
                                           lengths=[3, 5, 1, 4]),
}


@pytest.mark.parametrize("case", STEP_CASES.values(), ids=STEP_CASES.keys())
@pytest.mark.parametrize("mode", MODES)
def test_triton_several_programs_match_one(mode, case, monkeypatch):
    """Several programs, each its slice of the units, one launch per step (the launch
    boundary is the barrier), give the one-program result; both match the reference."""
    cfg = case
    ref, tri, x, hs, lengths = pair(mode, cfg)
    monkeypatch.setattr(function, "STRATEGY", "one")
    one, x1, hs1 = call(tri, mode, x, hs, lengths)
    cot = random_cotangents(*one)
    sum((o * c).sum() for o, c in zip(one, cot)).backward()
    grads1 = [p.grad.clone() for p in tri.parameters()] + [x1.grad] + [h.grad for h in hs1]
    tri.zero_grad()
    monkeypatch.setattr(function, "STRATEGY", "steps")
    monkeypatch.setattr(function, "BLOCK_H", _steps_block(cfg["H"]))
    p = function.plan(mode, cfg["B"], cfg["H"], DEVICE, not CUDA)
    assert p.steps and (p.nprog > 1 or CUDA), p
    many, xm, hsm = call(tri, mode, x, hs, lengths)
    sum((o * c).sum() for o, c in zip(many, cot)).backward()
    grads = [p.grad for p in tri.parameters()] + [xm.grad] + [h.grad for h in hsm]
    for a, b, name in zip(many, one, ["out", "h_n", "c_n"]):
        assert_close(a, b, name)
    for a, b in zip(grads, grads1):
        assert_close(a, b, "gradient")
    want = flat_outputs(ref(x, (tuple(hs) if mode == "lstm" else hs[0]) if hs else None,
                            lengths=lengths))
    for a, b, name in zip(many, want, ["out", "h_n", "c_n"]):
        assert_close(a, b, name)


def _half_against_float32(got, want, grads_got, grads_want, dtype):
    tol = HALF[dtype]
    for name, g, w in zip(["out", "h_n", "c_n"], got, want):
        assert g.dtype == dtype, name
        assert_close(g.float(), w.detach(), name, tol)
    for (name, g), w in zip(grads_got, grads_want):
        assert g is not None, f"no gradient reaches {name}"
        assert_close(g.float(), w, f"grad {name}", tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_triton_half_precision_near_float32_reference(mode, dtype):
    """Parameters, input and states in the half dtype (float32 state and accumulation
    inside); the interpreter's bfloat16 tl.dot is broken, so there the bfloat16 weights
    are upcast and the product runs in float32 (on a GPU in bfloat16)."""
    cfg = CASES["lengths-unsorted-L2-bidir-bias-hx"]
    ref, tri, x, hs, lengths = pair(mode, cfg, dtype=dtype, ref_dtype=torch.float32)
    want, x_r, hs_r = call(ref, mode, x, hs, lengths, torch.float32)
    got, x_t, hs_t = call(tri, mode, x, hs, lengths)
    cot = random_cotangents(*want)
    sum((w * c).sum() for w, c in zip(want, cot)).backward()
    sum((g * c.to(dtype)).sum() for g, c in zip(got, cot)).backward()
    _half_against_float32(
        got, want,
        [(n, p.grad) for n, p in tri.named_parameters()] + [("x", x_t.grad)]
        + [(f"hx[{k}]", h.grad) for k, h in enumerate(hs_t)],
        [p.grad for p in ref.parameters()] + [x_r.grad] + [h.grad for h in hs_r], dtype)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_triton_runs_in_the_autocast_dtype(mode):
    """Under autocast (CUDA; CPU under the interpreter alike) the layer runs in autocast's
    dtype and returns it; the gradients reach the float32 parameters."""
    dtype = torch.float16 if CUDA else torch.bfloat16
    cfg = CASES["lengths-unsorted-L2-bidir-bias-hx"]
    ref, tri, x, hs, lengths = pair(mode, cfg)
    want, x_r, hs_r = call(ref, mode, x, hs, lengths)
    with torch.autocast(DEVICE.type, dtype=dtype):
        got, x_t, hs_t = call(tri, mode, x, hs, lengths)
    assert tri.engine_used == "triton"
    cot = random_cotangents(*want)
    sum((w * c).sum() for w, c in zip(want, cot)).backward()
    sum((g * c.to(dtype)).sum() for g, c in zip(got, cot)).backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in tri.parameters())
    assert x_t.grad.dtype == torch.float32
    _half_against_float32(
        got, want, [(n, p.grad) for n, p in tri.named_parameters()] + [("x", x_t.grad)],
        [p.grad for p in ref.parameters()] + [x_r.grad], dtype)


def test_triton_backward_is_not_differentiable_twice():
    _, tri, x, _, _ = pair("gru", CASES["T1-B1-H1"])
    out, _ = tri(x.requires_grad_())
    with pytest.raises(RuntimeError, match=r"^the triton engine's backward is not differentiable "
                                           r"\(no double backward\): use engine='reference'"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


# -- limits and bad input ----------------------------------------------------------------------
def test_triton_width_limits():
    """The widths the package docstring states for H100/H200 (132 SMs, 227 KiB of shared
    memory per block), lower with less shared memory (A100: 163 KiB) or few SMs."""
    assert {mode: function.max_width(mode) for mode in MODES} == {
        "rnn_sigmoid": 1024, "rnn_tanh": 1024, "gru": 512, "lstm": 512}
    assert function.max_width("lstm", sms=108, smem=163 * 1024) == 256
    assert function.max_width("rnn_tanh", sms=20) == 256  # 16 units on each of 20 SMs: 320


def _refused(layer, x, message):
    with pytest.raises(ValueError, match="^" + re.escape(
            f"engine 'triton' cannot run this {type(layer).__name__}: {message}") + "$"):
        layer(x)
    assert ENGINES["triton"].why_not(layer, x, None) == message


def test_triton_refuses_a_width_past_its_limit():
    layer = make_layer("lstm", 1, 513, engine="triton", device=DEVICE)
    sms, smem = function.device_limits(DEVICE) if CUDA else (132, 227 * 1024)
    limit = function.max_width("lstm", sms, smem)
    assert limit == 512 or CUDA
    _refused(layer, torch.randn(2, 1, 1, device=DEVICE),
             f"hidden_size 513 is past the triton engine's limit of {limit} for the lstm cell on a "
             f"GPU with {sms} SMs and {smem // 1024} KiB of shared memory per block (its persistent "
             f"kernels keep each program's slice of the recurrent weights on chip); "
             f"engine='{'native' if CUDA else 'fused'}' runs it")


def test_triton_refuses_float64():
    layer = make_layer("rnn_sigmoid", 3, 4, engine="triton", dtype=torch.float64, device=DEVICE)
    other = "reference" if CUDA else "fused"
    _refused(layer, torch.randn(2, 1, 3, dtype=torch.float64, device=DEVICE),
             f"the triton engine takes float32, bfloat16 or float16, got torch.float64; "
             f"engine='{other}' runs torch.float64")


def test_triton_refuses_mixed_devices():
    layer = make_layer("gru", 3, 4, num_layers=2, engine="triton", device=DEVICE)
    layer.cells[1].to("meta")
    _refused(layer, torch.randn(2, 1, 3, device=DEVICE),
             f"mixed devices: parameter cells.1.alpha_r is on meta but the input is on {DEVICE}; "
             f"no engine runs that: move the layer with .to('{DEVICE}')")


def test_triton_refuses_tracing():
    from torch._subclasses.fake_tensor import FakeTensorMode

    layer = make_layer("gru", 3, 4, engine="triton", device=DEVICE)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.randn(2, 1, 3, device=DEVICE)
    assert ENGINES["triton"].why_not(layer, x, None) == (
        "the triton engine's kernels launch on real tensors and cannot be traced (torch.compile, "
        "torch.export, fake tensors); engine='fused' traces on CPU, engine='native' on CUDA")


def test_triton_refuses_cpu_tensors_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    layer = make_layer("lstm", 3, 4, engine="triton")
    _refused(layer, torch.randn(2, 1, 3),
             "the triton engine runs CUDA tensors; CPU tensors only under Triton's interpreter "
             "(TRITON_INTERPRET=1 set before the engine first runs), for tests; engine='fused' runs "
             "it on CPU")


def test_triton_says_when_triton_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton now raises ImportError
    layer = make_layer("rnn_tanh", 3, 4, engine="triton", device=DEVICE)
    reason = ENGINES["triton"].why_not(layer, torch.randn(2, 1, 3, device=DEVICE), None)
    assert reason.startswith("triton is not installed (")
    assert reason.endswith(f"); pip install 'rnnforge[gpu]'; "
                           f"engine='{'native' if CUDA else 'fused'}' runs it without triton")
    with pytest.raises(ValueError, match=re.escape(reason)):
        layer(torch.randn(2, 1, 3, device=DEVICE))


def _python_without_interpreter(code: str, timeout: int) -> subprocess.CompletedProcess:
    """``code`` run by a fresh Python on this one's path, without TRITON_INTERPRET."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_rnnforge_works_without_triton():
    """A process where triton cannot be imported: the layers run, auto never names triton."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, rnnforge as rf\n"
        "from rnnforge import engines\n"
        "for mode in ('lstm', 'gru'):\n"
        "    layer = getattr(rf, mode.upper())(3, 4)\n"
        "    x = torch.randn(5, 2, 3)\n"
        "    layer(x)[0].sum().backward()\n"
        "    print(layer.engine_used, engines.available(layer, x)['triton'].split(' (')[0])\n")
    done = _python_without_interpreter(code, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == ["fused triton is not installed"] * 2, lines


@pytest.mark.parametrize("in_auto", [False, True])
def test_auto_never_runs_triton_on_cpu(monkeypatch, in_auto):
    monkeypatch.setattr(engines, "TRITON_IN_AUTO", in_auto)
    layer = make_layer("gru", 3, 4, dtype=torch.bfloat16)  # neither fused nor native take bf16 on CPU
    x = torch.randn(5, 2, 3, dtype=torch.bfloat16)
    layer(x)
    assert layer.engine_used == "reference"
    assert engines.available(layer, x)["triton"] == (
        "engine='auto' runs triton only on CUDA (on CPU it would run under Triton's interpreter, "
        "a test harness); name engine='triton' to run it here" if in_auto else
        "engine='auto' does not run triton yet: its kernels have run only under Triton's "
        "interpreter, not on a GPU (benchmarks/gpu_check.py); name engine='triton' to run it")
    assert ENGINES["triton"].engine.why_not(layer, x, None) is None  # named, it runs


def test_triton_kernels_fit_an_sm90_block():
    """Compiled for sm_90 without a GPU (triton's ptxas; in a process of its own, since the
    interpreter's kernels do not compile): at the widest RNN and at the widest one-program
    LSTM the kernels fit a block's 227 KiB of shared memory and spill no registers
    (``python -m rnnforge.engines.triton.resources`` prints every cell's)."""
    import triton

    if not os.path.exists(os.path.join(triton.__path__[0], "backends", "nvidia", "bin", "ptxas")):
        pytest.skip("this triton has no ptxas for sm_90")
    H_one = int((function.ONE_PROGRAM_WEIGHTS // 4) ** 0.5)  # 64: one program, no barrier
    cases = [("rnn_tanh", "float32", function.max_width("rnn_tanh"), 16),
             ("lstm", "float16", H_one, H_one)]
    code = ("import torch, sys\n"
            "from rnnforge.engines.triton.resources import usage\n"
            f"for mode, dtype, H, bh in {cases!r}:\n"
            "    for kernel, (shared, regs, local) in usage(mode, getattr(torch, dtype), H, bh).items():\n"
            "        print(mode, H, kernel, shared, local)\n")
    done = _python_without_interpreter(code, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    assert len(rows) == 4, done.stdout
    for mode, H, kernel, shared, local in rows:
        assert int(shared) <= function.SMEM_SM90 and int(local) == 0, (mode, H, kernel, shared, local)
