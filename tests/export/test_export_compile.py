"""torch.compile(fullgraph=True): forward and backward equal to eager, no graph breaks."""

from __future__ import annotations

import pytest
import torch
import torch._functorch.config
import torch._inductor.config
from torch._dynamo.utils import counters

from rnnforge.charlm.model import CharLM, CharLMConfig
from rnnforge_testing import MODES, assert_close, make_layer

from test_export_program import flat, twin


def compiled_matches_eager(module, oracle, x, backend):
    """Compile ``module`` (fullgraph), run forward and backward, and compare outputs and every
    gradient with ``oracle`` (same weights, eager). Returns dynamo's graph-break count."""
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = flat(compiled(x1)), flat(oracle(x2))
    weights = [torch.randn_like(w) for w in want]
    sum((g * w).sum() for g, w in zip(got, weights)).backward()
    sum((o * w).sum() for o, w in zip(want, weights)).backward()
    for g, w in zip(got, want):
        assert_close(g, w.detach(), "output")
    assert_close(x1.grad, x2.grad, "input gradient")
    for (name, p), q in zip(module.named_parameters(), oracle.parameters()):
        assert_close(p.grad, q.grad, name)
    return sum(counters["graph_break"].values())


@pytest.mark.parametrize("mode", MODES)
def test_compiled_layer_trains_as_eager(mode):
    """AOTAutograd traces the operators' fake and backward implementations (the eager backend
    runs the traced graphs, so this stays quick; the inductor test below runs one cell)."""
    torch.manual_seed(0)
    layer = make_layer(mode, 3, 5, num_layers=2, bidirectional=True, bias=True, dtype=torch.float64)
    breaks = compiled_matches_eager(layer, twin(layer), torch.randn(4, 2, 3, dtype=torch.float64),
                                    backend="aot_eager")
    assert breaks == 0


@pytest.mark.slow
@torch._inductor.config.patch(fx_graph_cache=False)
@torch._functorch.config.patch(enable_autograd_cache=False)
def test_compiled_char_model_with_inductor():
    """The default backend (inductor) around the operators, on the character model's network.

    Without inductor's graph caches: their keys do not cover an operator's fake implementation,
    so a graph cached under another version of it would be replayed with its old strides."""
    torch.manual_seed(1)
    model = CharLM(CharLMConfig(vocab_size=6, cell="gru", hidden=5, layers=2))
    ids = torch.randint(0, 6, (2, 4))
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, fullgraph=True)
    logits, h = compiled(ids)
    logits.square().sum().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    want_logits, want_h = model(ids)
    want_logits.square().sum().backward()
    assert sum(counters["graph_break"].values()) == 0
    assert_close(logits, want_logits.detach(), "logits")
    assert_close(h, want_h.detach(), "h_n")
    for n, p in model.named_parameters():
        assert_close(got[n], p.grad, n)
    assert model.rnn.engine_used == "fused"
