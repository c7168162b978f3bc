"""The fused engine's autograd Function (engines/fused/function.py).

Its hand-written backward against finite differences (gradcheck, float64, with
and without variable lengths), and the clear error where a second derivative
is asked of it.
"""

import pytest
import torch

from rnnforge.engines import fused
from rnnforge_testing import MODES, make_layer

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_sigmoid": 1}


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


def test_double_backward_raises():
    layer = make_layer("gru", 3, 4, engine="fused", dtype=torch.float64)
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = layer(x)
    with pytest.raises(RuntimeError, match="fused engine's backward is not differentiable"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
