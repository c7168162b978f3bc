"""The fused engine's own cases; parity over the full matrix is in test_engines.py.

Here: gradcheck in float64 through the hand-written backward (``Recurrence``),
variable lengths with unsorted batches and both directions against the
reference engine, dropout determinism, the double-backward error and the
engine's refusals.
"""

import pytest
import torch

import rnnforge as rf
from rnnforge.engines import fused
from rnnforge_testing import assert_close, assert_same_function, flat_outputs

MODES = ["lstm", "gru", "rnn_tanh", "rnn_sigmoid"]
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_sigmoid": 1}


def _layer(mode, **kw):
    if mode == "lstm":
        return rf.LSTM(3, 4, **kw)
    if mode == "gru":
        return rf.GRU(3, 4, **kw)
    return rf.RNN(3, 4, nonlinearity=mode[4:], **kw)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", [None, [4, 3, 3, 1]], ids=["full", "lengths"])
def test_gradcheck_recurrence(mode, lengths):
    """Every input's gradient through the hand-written backward (``Recurrence``), float64."""
    torch.manual_seed(0)
    T, B, I, H = 4, 4, 2, 3
    G = GATES[mode]
    opts = {"dtype": torch.float64, "requires_grad": True}
    x = torch.randn(T, B, I, **opts)
    w_ih = torch.randn(G * H, I, **opts)
    b_ih = torch.randn(G * H, **opts)
    h0 = torch.randn(B, H, **opts)
    c0 = torch.randn(B, H, **opts) if mode == "lstm" else None
    w_hh = (torch.randn(G * H, H, dtype=torch.float64) * 0.5).requires_grad_()
    b_hh = torch.randn(H, **opts) if mode == "gru" else None
    bs = lens = None
    if lengths is not None:
        lens = torch.tensor(lengths)
        bs = (torch.arange(T).unsqueeze(1) < lens).sum(1).tolist()

    def fn(x, w_ih, b_ih, h0, c0, w_hh, b_hh):
        out, h, c = fused.Recurrence.apply(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lens)
        return (out, h, c) if mode == "lstm" else (out, h)

    assert torch.autograd.gradcheck(fn, (x, w_ih, b_ih, h0, c0, w_hh, b_hh))


def test_workspace_reuses_only_free_buffers():
    ws = fused.Workspace()
    like = torch.empty(0)
    a = ws.take((64, 128), like)
    b = ws.take((64, 128), like)
    assert a.data_ptr() != b.data_ptr()  # a is still held
    ptr = a.data_ptr()
    del a
    c = ws.take((128, 64), like, zero=True)
    assert c.data_ptr() == ptr and c.shape == (128, 64) and not c.any()


@pytest.mark.parametrize("mode", MODES)
def test_unsorted_lengths_bidirectional_two_layers(mode):
    """Unsorted lengths with ties, both directions, 2 layers, bias: the reference's function."""
    torch.manual_seed(1)
    ref = _layer(mode, num_layers=2, bidirectional=True, bias=True, dtype=torch.float64,
                 engine="reference")
    fus = _layer(mode, num_layers=2, bidirectional=True, bias=True, dtype=torch.float64,
                 engine="fused")
    fus.load_state_dict(ref.state_dict())
    x = torch.randn(6, 5, 3, dtype=torch.float64)
    states = [torch.randn(4, 5, 4, dtype=torch.float64) for _ in range(2 if mode == "lstm" else 1)]
    lengths = torch.tensor([2, 6, 1, 6, 4])

    def run(layer):
        leaves = [t.clone().requires_grad_() for t in (x, *states)]
        hx = tuple(leaves[1:]) if mode == "lstm" else leaves[1]
        return flat_outputs(layer(leaves[0], hx, lengths=lengths)), leaves

    (got, leaves_f), (want, leaves_r) = run(fus), run(ref)
    assert fus.engine_used == "fused"
    assert_same_function(got, want, (leaves_f, leaves_r), (fus, ref))
    # outputs past each sequence's end are exactly zero
    out = got[0]
    assert out[2:, 0].abs().max() == 0 and out[1:, 2].abs().max() == 0


@pytest.mark.parametrize("mode", ["lstm", "rnn_sigmoid"])
def test_dropout_same_seed_same_result_and_matches_reference(mode):
    torch.manual_seed(2)
    ref = _layer(mode, num_layers=3, dropout=0.5, engine="reference")
    fus = _layer(mode, num_layers=3, dropout=0.5, engine="fused")
    fus.load_state_dict(ref.state_dict())
    x = torch.randn(5, 4, 3)
    lengths = torch.tensor([3, 5, 1, 4])
    runs = []
    for layer in (fus, fus, ref):
        torch.manual_seed(7)
        runs.append(layer(x, lengths=lengths)[0])
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    # the masks are drawn in the caller's batch order, as the reference engine does
    assert_close(runs[0], runs[2], "out with dropout")
    torch.manual_seed(8)
    assert not torch.equal(fus(x, lengths=lengths)[0], runs[0])


def test_double_backward_raises():
    layer = _layer("gru", engine="fused", dtype=torch.float64)
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = layer(x)
    with pytest.raises(RuntimeError, match="fused engine's backward is not differentiable"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


def test_refusals_say_why():
    layer = _layer("lstm", engine="fused", dtype=torch.float16)
    with pytest.raises(ValueError, match="fused.*float32 or float64"):
        layer(torch.randn(2, 1, 3, dtype=torch.float16))


def test_no_grad_forward_equals_grad_forward():
    torch.manual_seed(3)
    layer = _layer("lstm", engine="fused", num_layers=2)
    x = torch.randn(7, 3, 3)
    with torch.no_grad():
        a = layer(x)[0]
    torch.testing.assert_close(layer(x)[0], a, rtol=0, atol=0)


def test_auto_follows_the_measured_rule():
    from rnnforge import engines

    x = torch.randn(4, 65, 3)  # batch above every fused.C_LOOP_MAX_BATCH: the rule by cell
    gru = _layer("gru")
    gru(x)  # training (parameters require grad): fused beats torch's per-step GRU
    assert gru.engine_used == "fused"
    with torch.no_grad():  # forward only: torch's kernel is as fast or faster
        gru(x)
    assert gru.engine_used == "native"
    reason = engines.available(gru, x)["fused"]
    assert reason is None or "engine='auto' runs native here" in reason
    lstm = _layer("lstm")
    lstm(x)  # oneDNN
    assert lstm.engine_used == "native"
    assert "engine='auto' runs native" in engines.available(lstm, x)["fused"]
    assert _layer("rnn_sigmoid")(x) is not None
    named = _layer("lstm", engine="fused")  # a named engine never defers to the rule
    assert engines.ENGINES["fused"].why_not(named, x, None) is None
    named(x)
    assert named.engine_used == "fused"


def test_bench_command_prints_the_engine_table(capsys):
    from rnnforge.cli import main

    assert main(["bench", "--cells", "gru", "rnn_sigmoid", "--shapes", "3x2x2x3", "--repeats", "1",
                 "--engines", "native", "fused"]) == 0
    out = capsys.readouterr().out
    assert "rnnforge bench: resolved config" in out
    assert "| gru | 3x2x2x3 | fused |" in out and "| rnn_sigmoid | 3x2x2x3 | fused |" in out
    assert "| rnn_sigmoid | 3x2x2x3 | native |" not in out  # cannot run: not timed
    from rnnforge import _ckernels  # what runs at which batch, or why not
    assert ("fused: loops over time in C at batch lstm <= 64" if _ckernels.available("rnn")
            else "fused: compiled loops unavailable") in out
    assert main(["bench", "--shapes", "3x2"]) == 2
    assert "TxBxIxH" in capsys.readouterr().err


def test_inference_mode_then_training_reuses_no_inference_buffer():
    torch.manual_seed(9)
    layer = _layer("gru", engine="fused")
    x = torch.randn(50, 4, 3)  # big enough for the workspace (>= 4096 elements)
    with torch.inference_mode():
        a = layer(x)[0]
    out = layer(x)[0]
    out.sum().backward()
    torch.testing.assert_close(out.detach(), a.clone())
