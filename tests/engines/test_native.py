"""The native engine (engines/native.py): what torch's kernels cannot run is refused, not rerouted.

Its numbers are checked in test_engines.py's matrix against the reference engine.
"""

import pytest
import torch

from rnnforge.engines import ENGINES
from rnnforge_testing import make_layer


def test_native_refuses_the_sigmoid_rnn():
    layer = make_layer("rnn_sigmoid", 3, 4, engine="native")
    assert "sigmoid" in ENGINES["native"].why_not(layer, torch.randn(5, 2, 3), None)
    with pytest.raises(ValueError, match=r"engine 'native' cannot run this RNN: .*sigmoid"):
        layer(torch.randn(5, 2, 3))
    assert layer.engine_used is None  # nothing ran, nothing fell back


# -- the cached packed weights (on by default on CUDA; switched on for the CPU here) ---------------
from rnnforge.engines import native  # noqa: E402


@pytest.fixture
def cached(monkeypatch):
    monkeypatch.setattr(ENGINES["native"].engine, "cache_devices", ("cpu", "cuda"))


def forward_backward(layer, x, lengths=None):
    layer.zero_grad(set_to_none=True)
    xx = x.clone().requires_grad_(True)
    out, h = layer(xx, lengths=lengths)
    h = h if isinstance(h, tuple) else (h,)
    (out.square().sum() + sum(t.sin().sum() for t in h)).backward()
    return [out.detach(), *(t.detach() for t in h), xx.grad] + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_cached_weights_give_the_same_outputs_and_gradients(mode, bias, monkeypatch):
    torch.manual_seed(0)
    layer = make_layer(mode, 3, 5, num_layers=2, bidirectional=True, bias=bias, engine="native",
                       dtype=torch.float64)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 5, 1])
    want = [forward_backward(layer, x), forward_backward(layer, x, lengths)]
    monkeypatch.setattr(ENGINES["native"].engine, "cache_devices", ("cpu",))
    for _ in range(2):  # built, then reused
        got = [forward_backward(layer, x), forward_backward(layer, x, lengths)]
        for a, b in zip(want, got):
            # float64 to the last bits: BLAS may round a product differently when its operands
            # sit at other offsets in memory (views into one buffer here), by one unit at most
            assert all(torch.allclose(u, v, rtol=1e-13, atol=1e-15) for u, v in zip(a, b))
    assert layer.engine_used == "native" and layer in native._CACHE


def test_the_cache_is_reused_until_a_parameter_changes(cached):
    torch.manual_seed(1)
    layer = make_layer("gru", 3, 4, engine="native")
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        first = layer(x)[0]
        weights = native._CACHE[layer][1]
        layer(x)
        assert native._CACHE[layer][1] is weights  # no repacking
        layer.cells[0].gamma.mul_(-1.0)  # in place: its version counter moves
        changed = layer(x)[0]
        assert native._CACHE[layer][1] is not weights
    layer.engine = "reference"
    with torch.no_grad():
        assert torch.allclose(changed, layer(x)[0], atol=1e-6) and not torch.allclose(first, changed)


def test_the_cache_holds_the_parameters_it_was_keyed_on(cached):
    # a replaced parameter's memory stays taken until the entry is rebuilt, so no new tensor can
    # take its address (the key's data_ptr) and be mistaken for it
    import gc
    import weakref

    torch.manual_seed(2)
    layer = make_layer("lstm", 3, 4, engine="native")
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        layer(x)
        old = weakref.ref(layer.cells[0].w)
        layer.cells[0].w = torch.nn.Parameter(torch.randn_like(layer.cells[0].w))
        gc.collect()
        assert old() is not None
        got = layer(x)[0]
        gc.collect()
        assert old() is None
    layer.engine = "reference"
    with torch.no_grad():
        assert torch.allclose(got, layer(x)[0], atol=1e-6)


def test_training_through_the_cache_matches_the_per_call_packing(monkeypatch):
    """Optimizer steps, two forwards per backward, load_state_dict and .to(): the same parameters."""
    def train(cache):
        monkeypatch.setattr(ENGINES["native"].engine, "cache_devices", ("cpu",) if cache else ())
        torch.manual_seed(2)
        layer = make_layer("lstm", 3, 4, num_layers=2, bias=True, engine="native")
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        x = torch.randn(5, 2, 3)
        for _ in range(3):
            opt.zero_grad()
            (layer(x)[0].square().sum() + layer(x.flip(0))[0].sum()).backward()
            opt.step()
        state = {k: v * 0.5 for k, v in layer.state_dict().items()}
        layer.load_state_dict(state)  # copies in place
        with torch.no_grad():
            halved = layer(x)[0]
        layer.to(torch.float64)  # new tensors
        return halved, layer(x.double())[0].detach(), list(layer.state_dict().items())

    (h1, o1, s1), (h2, o2, s2) = train(False), train(True)
    assert torch.allclose(h1, h2, rtol=1e-6, atol=1e-7) and torch.allclose(o1, o2, rtol=1e-6, atol=1e-7)
    assert [k for k, _ in s1] == [k for k, _ in s2]
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-7) for (_, a), (_, b) in zip(s1, s2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's weight layout needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_weights_sit_in_one_cudnn_buffer_and_match_per_call_packing(mode, dtype, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    layer = make_layer(mode, 32, 64, num_layers=2, bidirectional=True, bias=True, engine="native",
                       device="cuda", dtype=dtype)
    x = torch.randn(20, 8, 32, device="cuda", dtype=dtype)
    monkeypatch.setattr(ENGINES["native"].engine, "cache_devices", ())
    want = forward_backward(layer, x)
    monkeypatch.setattr(ENGINES["native"].engine, "cache_devices", ("cuda",))
    got = forward_backward(layer, x)
    weights = native._CACHE[layer][1]
    assert len({w.untyped_storage().data_ptr() for w in weights}) == 1  # one buffer: cuDNN copies nothing
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    for a, b in zip(want, got):
        assert torch.allclose(a.float(), b.float(), rtol=tol, atol=tol)
