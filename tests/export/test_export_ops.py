"""The fused engine's registered operators: opcheck, fake tensors, and that traced graphs hold them."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import rnnforge as rf
from rnnforge.engines.fused import ops
from rnnforge_testing import MODES, assert_close, make_layer

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_sigmoid": 1}


def op_args(mode, lengths=None, T=3, B=2, I=4, H=5, bias=True):
    g = torch.Generator().manual_seed(1)
    G = GATES[mode]

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    return (mode, leaf(T, B, I), leaf(G * H, I), leaf(G * H) if bias else None, leaf(B, H),
            leaf(B, H) if mode == "lstm" else None, leaf(G * H, H),
            leaf(H) if mode == "gru" and bias else None, lengths)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", [None, [3, 1]], ids=["full", "padded"])
def test_opcheck(mode, lengths):
    """Schema, fake implementation, autograd registration and AOT dispatch, as torch checks them."""
    args = op_args(mode, None if lengths is None else torch.tensor(lengths))
    result = torch.library.opcheck(torch.ops.rnnforge.recurrence.default, args)
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_opcheck_on_strided_inputs(mode):
    """A batch_first layer hands the operator a transposed x and views of the states: the fake
    implementation must give the strides the real one returns."""
    mode_, x, w_ih, b_ih, h0, c0, w_hh, b_hh, lengths = op_args(mode, B=3)
    x = x.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    h0 = torch.randn(5, 3, dtype=torch.float64).t().requires_grad_()  # (B, H), column-major
    args = (mode_, x, w_ih, b_ih, h0, c0, w_hh, b_hh, lengths)
    result = torch.library.opcheck(torch.ops.rnnforge.recurrence.default, args)
    assert set(result.values()) == {"SUCCESS"}, result
    # the backward operator on its own, as the compiled backward graph calls it
    with torch.no_grad():
        out, h, c, a0, a1, a2 = torch.ops.rnnforge.recurrence(*args)
    d_out = torch.randn(3, 3, 5, dtype=torch.float64).transpose(0, 1)  # (T, B, H), not contiguous
    back = (mode, x.detach(), w_ih.detach(), h0.detach(), None if c0 is None else c0.detach(),
            w_hh.detach(), out, a0, a1, a2, None, d_out, torch.randn_like(h),
            torch.randn_like(c) if mode == "lstm" else None, True, True, True, mode == "gru")
    result = torch.library.opcheck(torch.ops.rnnforge.recurrence_backward.default, back)
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_opcheck_without_bias(mode):
    result = torch.library.opcheck(torch.ops.rnnforge.recurrence.default, op_args(mode, bias=False))
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("mode", MODES)
def test_operator_gradients_equal_the_eager_function(mode):
    """The operator's registered backward gives Recurrence's gradients (the eager path, which the
    engine tests hold against the reference engine)."""
    args = op_args(mode, torch.tensor([3, 2]))
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    out = torch.ops.rnnforge.recurrence(*args)[:3]
    weights = [torch.randn_like(o) for o in out]
    got = torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), leaves)
    sizes = ops.live_sizes(args[-1], 3)[0]
    eager = rf.engines.fused.Recurrence.apply(*args[:-1], sizes, args[-1])
    for o, e in zip(out, eager):
        assert_close(o, e, "output")
    want = torch.autograd.grad(sum((o * w).sum() for o, w in zip(eager, weights) if o.numel()), leaves)
    for a, b in zip(got, want):
        assert_close(a, b, "gradient")


def test_fake_tensor_tracing_gives_shapes_without_data():
    layer = rf.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        x = mode.from_tensor(torch.empty(3, 7, 4))
        out, (h, c) = layer(x)
    assert out.shape == (3, 7, 12) and h.shape == c.shape == (4, 3, 6)
    assert layer.engine_used == "fused"


@pytest.mark.parametrize("mode", MODES)
def test_exported_graph_calls_the_operator(mode):
    """Not a silently substituted engine: one rnnforge::recurrence node per layer and direction,
    and no recurrence of torch's."""
    layer = make_layer(mode, 3, 4, num_layers=2, bidirectional=True)
    program = torch.export.export(layer, (torch.randn(5, 2, 3),))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count("rnnforge.recurrence.default") == 4
    assert not [t for t in targets if any(k in t for k in ("lstm", "gru", "rnn_tanh", "sigmoid", "tanh"))]


def test_tracing_is_told_from_eager():
    x = torch.randn(2, 2)
    assert not ops.tracing(x)
    with FakeTensorMode() as mode:
        assert ops.tracing(mode.from_tensor(x))
