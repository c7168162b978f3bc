"""The fused engine's own cases (engines/fused/engine.py); parity over the full matrix is
in tests/engines/test_engines.py, and with each of its two loops forced in test_cloops.py.

Here: variable lengths with unsorted batches and ties, both directions, against
the reference engine; dropout determinism; the engine's refusals; no_grad.
"""

import pytest
import torch

from rnnforge.engines import fused
from rnnforge.engines.fused import engine, lstm
from rnnforge_testing import MODES, assert_close, assert_same_function, flat_outputs, make_layer


@pytest.mark.parametrize("mode", MODES)
def test_unsorted_lengths_bidirectional_two_layers(mode):
    """Unsorted lengths with ties, both directions, 2 layers, bias: the reference's function."""
    torch.manual_seed(1)
    ref = make_layer(mode, 3, 4, num_layers=2, bidirectional=True, bias=True, dtype=torch.float64,
                 engine="reference")
    fus = make_layer(mode, 3, 4, num_layers=2, bidirectional=True, bias=True, dtype=torch.float64,
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
    ref = make_layer(mode, 3, 4, num_layers=3, dropout=0.5, engine="reference")
    fus = make_layer(mode, 3, 4, num_layers=3, dropout=0.5, engine="fused")
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


def test_refusals_say_why():
    layer = make_layer("lstm", 3, 4, engine="fused", dtype=torch.float16)
    with pytest.raises(ValueError, match="fused.*float32 or float64"):
        layer(torch.randn(2, 1, 3, dtype=torch.float16))


def test_no_grad_forward_equals_grad_forward():
    torch.manual_seed(3)
    layer = make_layer("lstm", 3, 4, engine="fused", num_layers=2)
    x = torch.randn(7, 3, 3)
    with torch.no_grad():
        a = layer(x)[0]
    torch.testing.assert_close(layer(x)[0], a, rtol=0, atol=0)


def _reference_of(layer, mode):
    ref = make_layer(mode, layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                     bias=layer.bias, dtype=layer._param.dtype, engine="reference")
    ref.load_state_dict(layer.state_dict())
    return ref


@pytest.mark.parametrize("mode", MODES)
def test_kept_weights_follow_every_change_of_a_parameter(mode):
    """Calls without a graph keep the stacked (and the LSTM's packed) weights between calls;
    an in-place edit under no_grad, an optimizer step, load_state_dict and inference mode
    each give the reference's result for the weights as they are then, never stale ones."""
    torch.manual_seed(4)
    layer = make_layer(mode, 5, 6, engine="fused", num_layers=2, bias=True)
    x = torch.randn(4, 3, 5)
    cell = layer.cells[0]
    p = getattr(cell, cell.GATES[-1].recurrent)

    def check(what):
        with torch.no_grad():
            got = layer(x)[0]
        assert layer.engine_used == "fused"
        assert_close(got, _reference_of(layer, mode)(x)[0], what)
        return got

    first = check("first call")
    with torch.no_grad():
        kept = engine.constant_weights(cell)
        assert engine.constant_weights(cell) is kept          # a second call reuses them
        p.mul_(-2)                                           # an in-place edit of one parameter
        assert engine.constant_weights(cell) is not kept
    edited = check("after an in-place edit")
    assert not torch.allclose(edited, first)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x)[0].square().sum().backward()                    # the graph path: weights per call
    opt.step()
    stepped = check("after an optimizer step")
    assert not torch.allclose(stepped, edited)
    other = make_layer(mode, 5, 6, engine="fused", num_layers=2, bias=True)
    layer.load_state_dict(other.state_dict())
    check("after load_state_dict")
    with torch.inference_mode():
        got = layer(x)[0]
    assert_close(got, _reference_of(layer, mode)(x)[0], "in inference mode")


def test_kept_weights_hold_their_parameters_so_a_replacement_is_never_mistaken_for_them():
    """The key is each parameter's address and version; a replaced parameter object could be
    allocated at the address of the one it replaces if that one were freed. The entry holds the
    parameters it was keyed on, so that memory stays taken until the entry is rebuilt."""
    import gc
    import weakref

    torch.manual_seed(6)
    layer = make_layer("lstm", 5, 6, engine="fused", bias=True)
    cell = layer.cells[0]
    x = torch.randn(4, 3, 5)
    name = cell.GATES[-1].recurrent
    with torch.no_grad():
        layer(x)
        old = weakref.ref(getattr(cell, name))
        setattr(cell, name, torch.nn.Parameter(torch.randn_like(getattr(cell, name))))
        gc.collect()
        assert old() is not None  # held by the kept entry
        got = layer(x)[0]
        gc.collect()
        assert old() is None  # the rebuilt entry holds the new parameter instead
    assert_close(got, _reference_of(layer, "lstm")(x)[0], "after replacing a parameter")


def test_lstm_panels_packed_once_while_the_weights_stand():
    """The LSTM's panels of constant weights are formed on the first call and reused."""
    if not fused.runs_c_loops("lstm", 3, 20):
        pytest.skip("the C loops are not built here")
    torch.manual_seed(5)
    layer = make_layer("lstm", 5, 20, engine="fused", bias=True)
    x = torch.randn(4, 3, 5)
    with torch.no_grad():
        a = layer(x)[0]
        panels = getattr(engine.constant_weights(layer.cells[0])[1], lstm.PANELS)
        assert len(panels) == 1
        wp = next(iter(panels.values()))[0]
        b = layer(x)[0]
        assert next(iter(panels.values()))[0] is wp
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert_close(a, _reference_of(layer, "lstm")(x)[0], "packed once")


@pytest.mark.parametrize("mode", MODES)
def test_no_grad_path_with_lengths_and_both_directions(mode):
    """Without grad the recurrence runs outside the autograd Function, on kept weights: the
    same numbers as the graph-recording call, with padding, both directions, two layers."""
    torch.manual_seed(6)
    layer = make_layer(mode, 3, 5, engine="fused", num_layers=2, bidirectional=True, bias=True)
    x = torch.randn(6, 4, 3)
    lengths = torch.tensor([3, 6, 1, 6])
    want = flat_outputs(layer(x, lengths=lengths))
    with torch.no_grad():
        got = flat_outputs(layer(x, lengths=lengths))
    assert layer.engine_used == "fused"
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_frozen_weights_are_kept_and_the_input_gradient_is_right(mode):
    """Frozen parameters with an input that wants a gradient: the kept weights serve the
    forward and its backward, and dx is the reference's."""
    torch.manual_seed(7)
    layer = make_layer(mode, 4, 6, engine="fused", bias=True, dtype=torch.float64).requires_grad_(False)
    ref = _reference_of(layer, mode)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    grads = []
    for model in (layer, ref, layer):
        leaf = x.clone().requires_grad_()
        model(leaf)[0].square().sum().backward()
        grads.append(leaf.grad)
    assert engine.constant_weights(layer.cells[0]) is engine.constant_weights(layer.cells[0])
    assert_close(grads[0], grads[1], "dx with frozen weights")
    torch.testing.assert_close(grads[2], grads[0], rtol=0, atol=0)


def test_kept_panels_by_torch_copies_equal_a_fresh_packing():
    """Without the C packer the kept weights' panels are formed by torch's copies, once, and
    equal a packing of the same weights that keeps nothing (H = 5 in panels of 2: a ragged one)."""
    torch.manual_seed(7)
    w_ih, w_hh, b = torch.randn(20, 3), torch.randn(20, 5), torch.randn(20)
    fresh = lstm.pack(w_ih, w_hh, b, 2)
    kept_w_hh = w_hh.clone()
    setattr(kept_w_hh, lstm.PANELS, {})
    kept = lstm.pack(w_ih, kept_w_hh, b, 2)
    assert torch.equal(kept[0], fresh[0]) and torch.equal(kept[1], fresh[1])
    assert lstm.pack(w_ih, kept_w_hh, b, 2) is kept  # formed once
