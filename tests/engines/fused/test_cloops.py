"""The fused engine's two implementations of its loops over time (engines/fused/cloops.py
dispatches): torch ops and the compiled C loops of rnnforge/_ckernels/rnn.c (used at
small batches). Both must match the reference engine everywhere; the C activations
must match torch's."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

from rnnforge import _ckernels as ck
from rnnforge.engines import fused
from rnnforge.engines.fused import cloops
from rnnforge_testing import (DTYPES, ENGINE_SHAPES, MODES, assert_same_function, check_engine_matches_reference,
                              flat_outputs, make_layer)

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler on this machine")


@pytest.fixture(params=["c", "torch"])
def loops(request, monkeypatch):
    """Force the C loops (any batch) or the torch loops (none)."""
    cap = 1 << 30 if request.param == "c" else -1
    monkeypatch.setattr(cloops, "C_LOOP_MAX_BATCH", dict.fromkeys(cloops.C_LOOP_MAX_BATCH, cap))
    return request.param


@pytest.mark.parametrize("shape", ENGINE_SHAPES.values(), ids=ENGINE_SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_fused_loops_match_reference(loops, mode, dtype, shape):
    check_engine_matches_reference("fused", mode, dtype, shape)


@pytest.mark.parametrize("batch, threads", [(5, 1), (13, 3)])
@pytest.mark.parametrize("mode", MODES)
def test_c_and_torch_loops_agree_on_a_larger_case(mode, batch, threads, monkeypatch):
    """T=50, H=33 (not a multiple of any vector width), lengths, two layers; with
    3 threads the 13 rows run as four blocks (0-3, 4-7, 8-11, 12) on OpenMP threads."""
    torch.manual_seed(0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert cloops.threads_for(batch) == threads
    layer = make_layer(mode, 7, 33, num_layers=2, bias=True, engine="fused", dtype=torch.float64)
    x = torch.randn(50, batch, 7, dtype=torch.float64)
    lengths = torch.randint(1, 51, (batch,))
    lengths[0] = 50
    results = {}
    for name, cap in (("c", 1 << 30), ("torch", -1)):
        monkeypatch.setattr(cloops, "C_LOOP_MAX_BATCH", dict.fromkeys(cloops.C_LOOP_MAX_BATCH, cap))
        layer.zero_grad()
        xx = x.clone().requires_grad_(True)
        out = layer(xx, lengths=lengths)
        y = out[0]
        (y * torch.cos(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape)).sum().backward()
        results[name] = [y.detach(), xx.grad] + [p.grad.clone() for p in layer.parameters()]
    for a, b in zip(results["c"], results["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_threads_for_the_c_loops(monkeypatch):
    for threads in (1, 2, 3, 8):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        for B in range(1, 70):
            assert cloops.threads_for(B) == (1 if threads == 1 or B < 8 else threads)


def test_dispatch_by_batch_and_width(monkeypatch):
    like = torch.zeros(1)
    wide = fused.C_LOOP_MAX_HIDDEN
    for family, limit in fused.C_LOOP_MAX_BATCH.items():
        assert cloops.c_loop(f"{family}_forward", like, limit, wide) is not None
        assert cloops.c_loop(f"{family}_backward", like, limit + 1, 4) is None
        assert cloops.c_loop(f"{family}_backward", like, 1, wide + 1) is None
    assert fused.runs_c_loops("rnn_sigmoid", fused.C_LOOP_MAX_BATCH["rnn"], wide)
    assert not fused.runs_c_loops("gru", 1, wide + 1)
    monkeypatch.setattr(ck, "_libs", {})
    monkeypatch.setattr(ck, "_errors", {ck._key("rnn", ck.isa()): "no compiler (test)"})
    monkeypatch.setattr(cloops, "_warned", True)
    assert cloops.c_loop("lstm_forward", like, 1, 4) is None      # then the torch loops run


def _ulps(got, want):
    """Error in units of the last place of ``want``'s dtype at |want|."""
    eps = torch.finfo(want.dtype).eps
    scale = torch.maximum(want.abs(), torch.full_like(want, torch.finfo(want.dtype).tiny))
    return ((got.double() - want.double()).abs() / (scale.double() * eps)).max().item()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_c_activations_match_torch(fn, dtype):
    """Within a few ulps of torch (whose own are within an ulp or so), from 1e-30 to
    the saturated ends, with the relative accuracy kept near 0; NaN and inf as torch."""
    lib = ck.load("rnn")
    suf = "_f32" if dtype == torch.float32 else "_f64"
    mag = torch.logspace(-30, 2.5, 20_001, dtype=torch.float64)
    x = torch.cat([-mag.flip(0), torch.zeros(1, dtype=torch.float64), mag]).to(dtype)
    x = torch.cat([x, torch.tensor([math.inf, -math.inf], dtype=dtype)])
    y = x.clone()
    getattr(lib, f"rf_{fn}{suf}")(y.data_ptr(), y.numel())
    want = getattr(torch, fn)(x.double())            # float64 truth, then compare at dtype
    fin = torch.isfinite(x)
    ok = want[fin].abs() > torch.finfo(dtype).tiny    # skip results that underflow
    assert _ulps(y[fin][ok], want[fin][ok].to(dtype)) <= 4
    assert y[~fin].tolist() == getattr(torch, fn)(x[~fin]).tolist()
    nan = torch.tensor([math.nan], dtype=dtype)
    getattr(lib, f"rf_{fn}{suf}")(nan.data_ptr(), 1)
    assert math.isnan(nan.item())


def check_lstm_activations(lib, fn):
    """The LSTM cell's float activations (rnn.c, lstm_tanh_f32 / lstm_sigmoid_f32): within
    4e-7 of float64 torch everywhere (4e-7 relative for tanh below 1), exact at the
    saturated ends, NaN kept; against them the parity tolerance of float32 is 2e-5."""
    mag = torch.logspace(-30, 2.5, 20_001, dtype=torch.float64)
    grid = torch.linspace(-20, 20, 100_001, dtype=torch.float64)
    x = torch.cat([-mag.flip(0), torch.zeros(1, dtype=torch.float64), mag, grid]).float()
    y = x.clone()
    getattr(lib, f"rf_lstm_{fn}_f32")(y.data_ptr(), y.numel())
    want = getattr(torch, fn)(x.double())
    err = (y.double() - want).abs()
    assert err.max().item() <= 4e-7
    if fn == "tanh":
        small = (x.abs() < 1) & (x != 0)
        assert (err[small] / want[small].abs()).max().item() <= 4e-7
        assert y[x == 0].abs().max().item() == 0
    ends = torch.tensor([math.nan, math.inf, -math.inf, 30.0, -30.0])
    getattr(lib, f"rf_lstm_{fn}_f32")(ends.data_ptr(), ends.numel())
    assert math.isnan(ends[0].item())
    assert ends[1:].tolist() == ([1.0, -1.0, 1.0, -1.0] if fn == "tanh" else [1.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("fn", ["sigmoid", "tanh"])
def test_lstm_cell_activations_match_torch(fn):
    check_lstm_activations(ck.load("rnn"), fn)


def test_missing_compiler_is_said_once(monkeypatch):
    monkeypatch.setattr(ck, "_libs", {})
    monkeypatch.setattr(ck, "_errors", {ck._key("rnn", ck.isa()): "no C compiler found (test)"})
    monkeypatch.setattr(cloops, "_warned", False)
    like = torch.zeros(1)
    with pytest.warns(RuntimeWarning, match=r"compiled loops are unavailable \(no C compiler found"):
        assert cloops.c_loop("rnn_forward", like, 1, 4) is None
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cloops.c_loop("rnn_forward", like, 1, 4) is None


#: engine="auto" past the C loops' limits, training in float32 (engines.choose's rule)
BEYOND_C_LOOPS = {"lstm": "native", "gru": "fused", "rnn_tanh": "fused", "rnn_sigmoid": "fused"}


@pytest.mark.parametrize("mode", MODES)
def test_auto_runs_fused_where_its_c_loops_run(mode):
    """The measured rule: fused's C loops beat torch.nn (oneDNN's LSTM included) up to
    the family's batch limit and 256 units, except an LSTM run forward only above batch 4;
    past those limits the rule by cell decides."""
    limit = fused.C_LOOP_MAX_BATCH[cloops.family(mode)]
    small = make_layer(mode, 3, 4)
    small(torch.randn(5, limit, 3))                       # parameters require grad: training
    assert small.engine_used == "fused"
    with torch.no_grad():
        small(torch.randn(5, 4, 3))
        assert small.engine_used == "fused"
        small(torch.randn(5, 5, 3))
        assert small.engine_used == ("native" if mode == "lstm" else "fused")
    big = make_layer(mode, 3, 4)
    big(torch.randn(5, limit + 1, 3))
    assert big.engine_used == BEYOND_C_LOOPS[mode]
    wide = make_layer(mode, 3, fused.C_LOOP_MAX_HIDDEN + 1)
    wide(torch.randn(2, 1, 3))
    assert wide.engine_used == BEYOND_C_LOOPS[mode]


def test_lstm_panels_hold_each_units_four_gates_side_by_side():
    H, I, units = 5, 3, 4  # H not a multiple of the panel: the second panel is padded with zeros
    w_ih, w_hh, b = torch.randn(4 * H, I), torch.randn(4 * H, H), torch.randn(4 * H)
    wp, bp = fused.lstm.pack(w_ih, w_hh, b, units)
    assert wp.shape == (2, I + H, 4 * units) and bp.shape == (2, 4 * units)
    for gate in range(4):
        for unit in range(H):
            p, u = divmod(unit, units)
            col = gate * units + u
            torch.testing.assert_close(wp[p, :I, col], w_ih[gate * H + unit], rtol=0, atol=0)
            torch.testing.assert_close(wp[p, I:, col], w_hh[gate * H + unit], rtol=0, atol=0)
            assert bp[p, col] == b[gate * H + unit]
        assert not wp[1, :, gate * units + 1:(gate + 1) * units].any() and not bp[1, gate * units + 1:(gate + 1) * units].any()
    assert fused.lstm.pack(w_ih, w_hh, None, units)[1] is None


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("I, H", [(3, 5), (37, 70), (256, 256)])
def test_lstm_c_packer_matches_the_torch_packing(dtype, I, H):
    """rf_lstm_pack (blocked, a panel at a time) against the torch permutation above, exactly:
    H not a multiple of the panel (zero padding), I not a multiple of its 16-column blocks."""
    like = torch.zeros(1, dtype=dtype)
    packer = cloops.c_loop("lstm_pack", like, 1, H)
    if packer is None:
        pytest.skip("no C loops here")
    units = cloops.c_loop("lstm_panel", like, 1, H)()
    w_ih, w_hh, b = (torch.randn(4 * H, n, dtype=dtype) for n in (I, H, 1))
    want, bw = fused.lstm.pack(w_ih, w_hh, b[:, 0], units)
    got, bg = fused.lstm.pack(w_ih.t().contiguous().t(), w_hh, b[:, 0], units, packer)  # copied contiguous
    assert torch.equal(got, want) and torch.equal(bg, bw)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("I, H, B", [(100, 70, 13), (3, 200, 8), (300, 17, 7)])
def test_packed_lstm_loop_agrees_with_the_torch_loop(monkeypatch, dtype, I, H, B):
    """The LSTM's one-product C loop (projection, recurrence and cell together) against the
    torch-op loop: row groups with a remainder, widths not a multiple of a panel, and weight
    blocks that straddle x_t and h_{t-1}; forward with and without a graph, and backward."""
    torch.manual_seed(0)
    layer = make_layer("lstm", I, H, bias=True, engine="fused", dtype=dtype)
    x = torch.randn(9, B, I, dtype=dtype)
    lengths = torch.randint(1, 10, (B,))
    lengths[0] = 9
    results = {}
    for name, cap in (("c", 1 << 30), ("torch", -1)):
        monkeypatch.setattr(cloops, "C_LOOP_MAX_BATCH", dict.fromkeys(cloops.C_LOOP_MAX_BATCH, cap))
        monkeypatch.setattr(cloops, "C_LOOP_MAX_HIDDEN", 1 << 30)
        with torch.no_grad():
            plain = layer(x, lengths=lengths)
        layer.zero_grad()
        xx = x.clone().requires_grad_(True)
        y, (h, c) = layer(xx, lengths=lengths)
        (y * torch.cos(torch.arange(y.numel(), dtype=dtype)).reshape(y.shape)).sum().backward()
        for a, b in zip((plain[0], *plain[1]), (y, h, c)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)  # the graph changes nothing computed
        results[name] = [y.detach(), h.detach(), c.detach(), xx.grad] + [p.grad.clone() for p in layer.parameters()]
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for a, b in zip(results["c"], results["torch"]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m, n", [(1, 1), (17, 33), (40, 16)])
def test_transpose_into_a_strided_block(dtype, m, n):
    """steps._transpose_into (C where the kernels load): into columns [3, 3 + m) of a wider
    buffer, from a row-strided source; tiles with remainders; nothing outside is touched."""
    from rnnforge.engines.fused import steps

    src = torch.randn(m, n + 5, dtype=dtype)[:, 2:2 + n]
    dst = torch.full((n, m + 7), float("nan"), dtype=dtype)
    steps._transpose_into(dst[:, 3:3 + m], src)
    assert torch.equal(dst[:, 3:3 + m], src.t())
    assert dst[:, :3].isnan().all() and dst[:, 3 + m:].isnan().all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lstm_loops_with_full_row_groups_match_reference(dtype, monkeypatch):
    """23 rows (row groups of 6 and 5, the single pass over [x_t, h_{t-1}]), I=19 and H=37
    (blocks straddling x_t and h_{t-1}, a partial panel), padding, one thread: the
    reference's outputs and gradients."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    torch.manual_seed(9)
    ref = make_layer("lstm", 19, 37, bias=True, dtype=dtype, engine="reference")
    fus = make_layer("lstm", 19, 37, bias=True, dtype=dtype, engine="fused")
    fus.load_state_dict(ref.state_dict())
    x = torch.randn(7, 23, 19, dtype=dtype)
    lengths = torch.randint(1, 8, (23,))
    lengths[3] = 7

    def run(layer):
        leaf = x.clone().requires_grad_()
        return flat_outputs(layer(leaf, lengths=lengths)), [leaf]

    (got, lf), (want, lr) = run(fus), run(ref)
    assert fus.engine_used == "fused" and fused.runs_c_loops("lstm", 23, 37)
    assert_same_function(got, want, (lf, lr), (fus, ref))
