import pytest
import torch

from rnnforge.errors import OptionError, UserError
from rnnforge.charlm.checkpoint import load_model
from rnnforge.charlm.generate import generate
from rnnforge.charlm.train import LAST, Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_file):
    from rnnforge.charlm.train import TrainConfig

    d = tmp_path_factory.mktemp("gen")
    cfg = TrainConfig(data=str(text_file), hidden=24, layers=2, batch_size=4, seq_len=16,
                      steps=30, eval_every=30, lr=1e-2, warmup=2, out=str(d / "run"),
                      progress=False, tensorboard=False, threads=1, device="cpu")
    Trainer(cfg).run()
    model, vocab, meta = load_model(d / "run")
    return model, vocab, {**meta, "run": d / "run"}


def test_same_seed_same_text(trained):
    model, vocab, _ = trained
    a = "".join(generate(model, vocab, "the ", 60, seed=7, top_k=5))
    b = "".join(generate(model, vocab, "the ", 60, seed=7, top_k=5))
    c = "".join(generate(model, vocab, "the ", 60, seed=8, top_k=5))
    assert a == b and len(a) == 60
    assert a != c
    assert set(a) <= set(vocab.chars)


def test_greedy_is_the_argmax_of_the_full_forward(trained):
    """Carrying the state step by step gives what a forward over the whole text gives."""
    model, vocab, _ = trained
    prime = "pack my "
    text = "".join(generate(model, vocab, prime, 25, greedy=True))
    ids = vocab.encode(prime + text)
    logits, _ = model(ids[None])  # (1, P + 25, V)
    want = logits[0, len(prime) - 1:-1].argmax(-1)
    assert vocab.decode(want) == text


def test_sampled_characters_follow_the_model(trained):
    """Over many seeds, the first sampled character's frequencies match softmax(logits / T)."""
    from scipy.stats import chisquare

    model, vocab, _ = trained
    prime, temp = "the quick ", 1.5
    with torch.no_grad():
        logits, _ = model(vocab.encode(prime)[None])
    p = torch.softmax(logits[0, -1].double() / temp, -1)
    n = 4000
    counts = torch.zeros(len(vocab))
    for s in range(n):
        ch = next(generate(model, vocab, prime, 1, temperature=temp, seed=s))
        counts[vocab.index[ch]] += 1
    expected = p * n
    keep = expected > 5  # pool the rare characters into one cell for the chi-square test
    obs, exp = counts[keep], expected[keep]
    if (~keep).any():
        obs = torch.cat([obs, counts[~keep].sum()[None]])
        exp = torch.cat([exp, expected[~keep].sum()[None]])
    assert chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3


def test_bad_options(trained):
    model, vocab, _ = trained
    with pytest.raises(UserError, match="not in the model's vocabulary: 'Z', '@'"):
        next(generate(model, vocab, "Zebra@", 5))
    # the library names its parameters; the command line shows them as flags
    for kw, message in [(dict(temperature=0), "temperature must be > 0, got 0; greedy decoding"),
                        (dict(temperature=float("inf")), "temperature must be > 0, got inf"),
                        (dict(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
                        (dict(top_k=0), "top_k must be >= 1, got 0"),
                        (dict(length=-1), "length must be >= 0, got -1"),
                        (dict(seed=-1), "seed must be in \\[0, 18446744073709551615\\], got -1")]:
        with pytest.raises(OptionError, match="^" + message) as e:
            next(generate(model, vocab, "the", **{"length": 5, **kw}))
        assert e.value.option == next(iter(kw))
        assert "--" not in str(e.value)


def test_sample_and_evaluate_from_a_checkpoint(trained, tmp_path_factory):
    """The library calls read a run folder: sample gives generate's text, evaluate the bits per
    character of one forward over the text (cross-entropy / ln 2), the state carried across chunks."""
    import math

    import torch.nn.functional as F

    from rnnforge.charlm import evaluate, sample

    model, vocab, meta = trained
    run = meta["run"]
    assert "".join(sample(run, "the ", 40, seed=5, top_k=4)) == "".join(
        generate(model, vocab, "the ", 40, seed=5, top_k=4))
    text = "the lazy dog jumps over the quick brown fox. pack my box."
    ids = vocab.encode(text)
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
        want = F.cross_entropy(logits[0].double(), ids[1:]).item() / math.log(2)
    assert evaluate(run, text, seq_len=7) == pytest.approx(want, rel=1e-5)
    with pytest.raises(OptionError, match="^temperature must be > 0"):
        sample(run, "the ", 5, temperature=-1)  # checked when called, not at the first character


def _inverse_transform(logits, u, temperature, top_k, top_p):
    """Independent Ex2 in numpy float64: the first k with F_k >= u F_{V-1}, and u's distance to
    the nearest step of F (relative to the total) to tell float-rounding ties from errors."""
    import numpy as np

    z = logits.double().numpy() / temperature
    p = np.exp(z - z.max())
    order = np.argsort(-p, kind="stable")
    if top_k is not None:
        p[order[top_k:]] = 0.0
    if top_p is not None:
        q = p[order] / p.sum()
        drop = (np.cumsum(q) - q) >= top_p  # mass strictly before each reaches top_p
        p[order[drop]] = 0.0
    F = np.cumsum(p)
    t = u * F[-1]
    return int(np.searchsorted(F, t, side="left")), float(np.min(np.abs(F - t)) / F[-1])


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.7, None, None),
                                                      (1.3, 5, None), (1.0, None, 0.9), (0.9, 6, 0.8)])
def test_every_sampled_character_is_the_inverse_transform_of_the_full_forward(
        trained, temperature, top_k, top_p):
    """Character i is F^{-1}(u_i) of the full forward's distribution at position i, where u_i is
    the generator's i-th uniform (1 - torch.rand, one per character): the decoder, its state
    and the sampler together compute exactly what the notes' Ex2 says, at every step."""
    model, vocab, _ = trained
    prime, n = "the lazy ", 120
    for seed in (0, 1):
        text = "".join(generate(model, vocab, prime, n, seed=seed, temperature=temperature,
                                top_k=top_k, top_p=top_p))
        g = torch.Generator().manual_seed(seed)
        u = 1.0 - torch.rand(n, dtype=torch.float64, generator=g)
        with torch.no_grad():
            logits, _ = model(vocab.encode(prime + text)[None])  # (1, P + n, V)
        logits = logits[0, len(prime) - 1:]
        for i, ch in enumerate(text):
            want, gap = _inverse_transform(logits[i], float(u[i]), temperature, top_k, top_p)
            if vocab.chars[want] != ch:
                # only a float32 rounding difference (decode path vs full forward) may move a
                # draw, and only when u sits on a step of F; later characters then differ
                assert gap < 1e-5, f"seed {seed}, char {i}: {ch!r} != {vocab.chars[want]!r}"
                break


def test_second_characters_follow_the_model(trained):
    """Chi-square of the second sampled character (drawn after one decoder step) against its
    exact law from full forwards: P(c2) = sum over c1 of P(c1 | prime) P(c2 | prime c1)."""
    from scipy.stats import chisquare

    model, vocab, _ = trained
    prime, temp, n = "the quick ", 1.2, 3000
    with torch.no_grad():
        logits, _ = model(vocab.encode(prime)[None])
        p1 = torch.softmax(logits[0, -1].double() / temp, -1)  # (V,)
        nxt = torch.stack([model(vocab.encode(prime + c)[None])[0][0, -1] for c in vocab.chars])
        p2 = p1 @ torch.softmax(nxt.double() / temp, -1)  # (V,)
    counts = torch.zeros(len(vocab))
    for s in range(n):
        counts[vocab.index["".join(generate(model, vocab, prime, 2, temperature=temp, seed=s))[1]]] += 1
    expected = p2 * n
    keep = expected > 5
    obs, exp = counts[keep], expected[keep]
    if (~keep).any():
        obs = torch.cat([obs, counts[~keep].sum()[None]])
        exp = torch.cat([exp, expected[~keep].sum()[None]])
    assert chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn-tanh"])
@pytest.mark.parametrize("layers, bias, batch", [(1, True, 1), (2, True, 1), (3, False, 2)])
def test_decoder_matches_the_full_forward(cell, layers, bias, batch):
    """CharLM.decoder stepped token by token gives the full forward's logits and final state,
    for every cell, with the alternating product order (layers >= 2) exercised."""
    from rnnforge.charlm.model import CharLM, CharLMConfig

    torch.manual_seed(0)
    model = CharLM(CharLMConfig(vocab_size=13, cell=cell, hidden=20, layers=layers, embed=7,
                                bias=bias)).eval()
    ids = torch.randint(0, 13, (batch, 9))
    with torch.no_grad():
        want, want_state = model(ids)  # (B, 9, V)
        prime_logits, state = model(ids[:, :2])
        dec = model.decoder(state, batch=batch)
        got = [prime_logits[:, -1].clone()] + [dec.step(ids[:, t]).clone() for t in range(2, 9)]
    torch.testing.assert_close(torch.stack(got, 1), want[:, 1:], atol=2e-5, rtol=1e-5)
    for a, b in zip(dec.state() if isinstance(want_state, tuple) else [dec.state()],
                    want_state if isinstance(want_state, tuple) else [want_state]):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_decoder_sees_parameters_changed_between_steps():
    from rnnforge.charlm.model import CharLM, CharLMConfig

    torch.manual_seed(1)
    model = CharLM(CharLMConfig(vocab_size=11, hidden=16, layers=2)).eval()
    ids = torch.tensor([3])
    with torch.no_grad():
        dec = model.decoder(None)
        dec.step(ids)
        state = dec.state()
        model.rnn.cell(1).gamma.mul_(0.5)  # an in-place update, as an optimizer step
        model.embedding.weight.add_(0.1)
        model.readout.b.add_(1.0)
        got = dec.step(ids).clone()
        want, _ = model.step(ids, state)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_decoder_bad_arguments():
    from rnnforge.charlm.model import CharLM, CharLMConfig
    from rnnforge.engines.decode import TokenDecoder

    model = CharLM(CharLMConfig(vocab_size=11, hidden=16, layers=1))
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        model.decoder(None, batch=0)
    with pytest.raises(ValueError, match="embedding rows must have 16 features"):
        TokenDecoder(model.rnn, torch.nn.Embedding(11, 5), model.readout)
    with pytest.raises(ValueError, match="readout must map 16 features"):
        TokenDecoder(model.rnn, model.embedding, torch.nn.Linear(5, 11))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(1, 2, 16\)"):
        model.decoder((torch.zeros(1, 1, 16), torch.zeros(1, 1, 16)), batch=2)
