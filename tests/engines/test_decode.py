"""The fast decode path (``engines/decode.py``) against the reference cells stepped by hand."""

import pytest
import torch

import rnnforge as rf
from rnnforge.engines import decode

MODES = ["lstm", "gru", "rnn_tanh", "rnn_sigmoid"]


def _layer(mode, engine="auto", **kw):
    if mode == "lstm":
        return rf.LSTM(5, 7, engine=engine, **kw)
    if mode == "gru":
        return rf.GRU(5, 7, engine=engine, **kw)
    return rf.RNN(5, 7, nonlinearity=mode[4:], engine=engine, **kw)


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("B", [1, 3])
def test_steps_match_reference(mode, bias, B):
    torch.manual_seed(0)
    fast = _layer(mode, num_layers=2, bias=bias, dtype=torch.float64)
    ref = _layer(mode, engine="reference", num_layers=2, bias=bias, dtype=torch.float64)
    ref.load_state_dict(fast.state_dict())
    xs = torch.randn(6, B, 5, dtype=torch.float64)
    s_fast = s_ref = None
    for x in xs:
        z_fast, s_fast = fast.step(x, s_fast)
        z_ref, s_ref = ref.step(x, s_ref)
        torch.testing.assert_close(z_fast, z_ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(_as_tuple(s_fast), _as_tuple(s_ref)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # and the same as one forward over the whole sequence
    out, state = fast(xs)
    torch.testing.assert_close(z_fast, out[-1], rtol=1e-12, atol=1e-12)
    assert not z_fast.requires_grad


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_cache_follows_parameter_updates(mode):
    torch.manual_seed(1)
    layer = _layer(mode, num_layers=2, bias=True)
    ref = _layer(mode, engine="reference", num_layers=2, bias=True)
    x = torch.randn(2, 5)
    layer.step(x)
    first = decode.packed(layer)
    assert decode.packed(layer) is first  # unchanged parameters: the cache is reused
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)  # an in-place update bumps _version
    out, _ = layer(torch.randn(3, 2, 5))
    out.sum().backward()
    opt.step()
    ref.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer.step(x)[0], ref.step(x)[0])
    assert decode.packed(layer) is not first
    with torch.no_grad():  # load_state_dict copies in place too
        layer.cell(1).gamma.mul_(2)
    ref.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer.step(x)[0], ref.step(x)[0])


def test_returned_states_are_not_overwritten_by_later_steps():
    torch.manual_seed(2)
    layer = _layer("lstm", num_layers=2)
    x = torch.randn(1, 5)
    z1, (h1, c1) = layer.step(x)
    kept = [t.clone() for t in (z1, h1, c1)]
    layer.step(torch.randn(1, 5), (h1, c1))
    for a, b in zip(kept, (z1, h1, c1)):
        assert torch.equal(a, b)


def test_batch_size_change_and_float32():
    torch.manual_seed(3)
    layer = _layer("gru", num_layers=1, bias=True)
    ref = _layer("gru", engine="reference", num_layers=1, bias=True)
    ref.load_state_dict(layer.state_dict())
    for B in (4, 1, 4):
        x = torch.randn(B, 5)
        torch.testing.assert_close(layer.step(x)[0], ref.step(x)[0], rtol=1e-5, atol=1e-6)


def test_inference_mode_then_no_grad():
    torch.manual_seed(4)
    layer = _layer("lstm")
    x = torch.randn(2, 5)
    with torch.inference_mode():
        a = layer.step(x)[0]
    b = layer.step(x)[0]  # buffers made under inference mode are not reused outside it
    torch.testing.assert_close(a.clone(), b)


def test_charlm_sampler_uses_the_fast_path():
    from rnnforge.charlm.model import CharLM, CharLMConfig

    torch.manual_seed(5)
    model = CharLM(CharLMConfig(vocab_size=11, hidden=8, layers=2)).eval()
    model.step(torch.tensor([3]))
    assert model.rnn in decode._CACHE


@pytest.mark.parametrize("mode", MODES)
def test_step_tokens_equals_step_of_the_embedding(mode):
    torch.manual_seed(6)
    layer = _layer(mode, num_layers=2, bias=True, dtype=torch.float64)
    emb = torch.nn.Embedding(11, 5, dtype=torch.float64)
    s_tok = s_ref = None
    for ids in torch.randint(11, (4, 3)):
        z_tok, s_tok = decode.step_tokens(layer, emb, ids, s_tok)
        z_ref, s_ref = layer.step(emb(ids).detach(), s_ref)
        torch.testing.assert_close(z_tok, z_ref, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # the table follows the embedding's updates
        emb.weight.mul_(3)
    z_tok, _ = decode.step_tokens(layer, emb, ids, s_tok)
    torch.testing.assert_close(z_tok, layer.step(emb(ids).detach(), s_ref)[0], rtol=1e-12, atol=1e-12)


def test_step_tokens_errors():
    layer = _layer("lstm")
    with pytest.raises(ValueError, match="must have 5 features"):
        decode.step_tokens(layer, torch.nn.Embedding(4, 6), torch.tensor([1]))
    with pytest.raises(ValueError, match="max_norm"):
        decode.step_tokens(layer, torch.nn.Embedding(4, 5, max_norm=1.0), torch.tensor([1]))
    with pytest.raises(ValueError, match="1-D integer"):
        decode.step_tokens(layer, torch.nn.Embedding(4, 5), torch.tensor([[1]]))
