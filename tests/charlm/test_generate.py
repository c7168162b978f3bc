import pytest
import torch

from rnnforge.errors import UserError
from rnnforge.generate import generate, load_model
from rnnforge.train import LAST, Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_file):
    from rnnforge.train import TrainConfig

    d = tmp_path_factory.mktemp("gen")
    cfg = TrainConfig(data=str(text_file), hidden=24, layers=2, batch_size=4, seq_len=16,
                      steps=30, eval_every=30, lr=1e-2, warmup=2, out=str(d / "run"),
                      progress=False, tensorboard=False, threads=1)
    Trainer(cfg).run()
    return load_model(d / "run")


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
    with pytest.raises(UserError, match="--temperature must be > 0"):
        next(generate(model, vocab, "the", 5, temperature=0))
    with pytest.raises(UserError, match=r"--top-p must be in \(0, 1\]"):
        next(generate(model, vocab, "the", 5, top_p=1.5))
    with pytest.raises(UserError, match="--top-k must be at least 1"):
        next(generate(model, vocab, "the", 5, top_k=0))
