"""The static generation step (graph-capturable): the same draws as sample_categorical and the
same text as the plain decoder loop, op by op on the CPU; replayed as a CUDA graph on a GPU."""

import math

import pytest
import torch

from rnnforge.charlm.data import Vocab
from rnnforge.charlm.generate import StaticGeneration, draw_static, generate
from rnnforge.charlm.model import CharLM, CharLMConfig
from rnnforge.errors import OptionError
from rnnforge.sampling import CategoricalStepper
from rnnforge.sampling.categorical import _draw

CHARS = "abcdefghijklmnopqrstuvwxyz .,\n"
OPTIONS = [dict(), dict(temperature=0.6), dict(top_k=4), dict(top_p=0.85),
           dict(top_k=9, top_p=0.7, temperature=1.4), dict(greedy=True)]


def model_of(cell, layers=2, device="cpu", scale=3.0):
    torch.manual_seed(0)
    m = CharLM(CharLMConfig(vocab_size=len(CHARS), cell=cell, hidden=20, layers=layers)).to(device).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)  # peaked distributions: a rounding slip would change characters
    return m


@torch.no_grad()
def plain_loop(model, vocab, prime, length, seed, temperature=1.0, top_k=None, top_p=None, greedy=False):
    """The generation loop written with the public pieces: decoder.step and CategoricalStepper."""
    gen = torch.Generator(device=model.embedding.weight.device).manual_seed(seed)
    logits, state = model(vocab.encode(prime).to(gen.device)[None])
    logits = logits[:, -1]
    dec = model.decoder(state)
    stepper = CategoricalStepper(1, len(vocab.chars), temperature=temperature, top_k=top_k, top_p=top_p,
                                 generator=gen, device=gen.device, block=min(length, 256))
    out = []
    for i in range(length):
        nxt = logits.argmax(-1) if greedy else stepper.draw(logits)
        out.append(vocab.chars[nxt.item()])
        if i + 1 < length:
            logits = dec.step(nxt)
    return "".join(out)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn-tanh"])
def test_static_steps_give_the_plain_loops_text(cell):
    vocab = Vocab.from_text(CHARS)
    model = model_of(cell)
    for opts in OPTIONS:
        for length in (1, 2, 300):  # 300: a second block of uniforms
            want = plain_loop(model, vocab, "the ", length, 5, **opts)
            got = "".join(generate(model, vocab, "the ", length, seed=5, **opts))
            assert got == want, (cell, opts, length)


def logit_rows():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 40, generator=g) * 4
    x[1] += 150.0           # exp overflows in float32: _build shifts by the row maxima
    x[2] -= 300.0           # every weight underflows: shifted as well
    x[3, 5:] = -math.inf    # a few categories only
    x[4] *= 30.0            # very peaked
    return x


@pytest.mark.parametrize("opts", [dict(), dict(temperature=0.3), dict(temperature=7.0), dict(top_k=3),
                                  dict(top_p=0.5), dict(top_k=10, top_p=0.95, temperature=2.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_draw_static_is_the_eager_draw(opts, dtype):
    x = logit_rows().to(dtype)
    u = torch.linspace(1e-9, 1.0, 97, dtype=torch.float64)
    for rows in (slice(0, 1), slice(1, 2), slice(2, 3), slice(0, 6)):  # the shift is decided per batch
        xr = x[rows]
        for v in u:
            t = torch.full((xr.shape[0], 1), float(v), dtype=torch.float64)
            want = _draw(xr, opts.get("temperature", 1.0), opts.get("top_k"), opts.get("top_p"), t.clone())
            got, bad, _ = draw_static(xr, t.clone(), opts.get("temperature", 1.0), opts.get("top_k"),
                                      opts.get("top_p"))
            assert torch.equal(got, want) and not bool(bad), (opts, rows, float(v))


def test_draw_static_flags_what_the_eager_draw_refuses():
    t = torch.full((1, 1), 0.5, dtype=torch.float64)
    for row, nan, message in ((torch.tensor([[0.0, float("nan"), 1.0]]), True, "logits contain NaN"),
                              (torch.tensor([[0.0, math.inf, 1.0]]), False, "entirely -inf"),
                              (torch.full((1, 3), -math.inf), False, "entirely -inf")):
        with pytest.raises(ValueError, match=message):
            _draw(row, 1.0, None, None, t.clone())
        _, bad, isnan = draw_static(row, t.clone(), 1.0, None, None)
        assert bool(bad) and bool(isnan) == nan


def test_bad_logits_stop_generation_after_the_good_characters():
    vocab = Vocab.from_text(CHARS)
    model = model_of("gru")
    good = "".join(generate(model, vocab, "the ", 5, seed=1))
    run = StaticGeneration.of(model, batch=1, block=5)
    # the third step's logits are NaN: two characters come out, then the eager error
    steps = iter(range(10))
    advance = run.dec.advance

    def poisoned(ids, swap):
        out = advance(ids, swap)
        if next(steps) == 1:
            out.fill_(float("nan"))
        return out

    run.dec.advance = poisoned
    logits, state = model(vocab.encode("the ")[None])
    gen = torch.Generator().manual_seed(1)
    got = []
    with pytest.raises(ValueError, match="logits contain NaN"):
        for block in run.blocks(logits[:, -1], state, 5, gen):
            got += [vocab.chars[t[0]] for t in block]
    assert "".join(got) == good[:2]


def test_parameters_changed_between_calls_are_seen():
    vocab = Vocab.from_text(CHARS)
    model = model_of("lstm")
    before = "".join(generate(model, vocab, "the ", 80, seed=3))
    with torch.no_grad():
        model.rnn.cells[1].v.mul_(-1.0)  # in place: the cached packed weights are stale
    after = "".join(generate(model, vocab, "the ", 80, seed=3))
    assert after == plain_loop(model, vocab, "the ", 80, 3) and after != before


def test_interleaved_generations_keep_their_own_state():
    vocab = Vocab.from_text(CHARS)
    model = model_of("lstm")
    a, b = generate(model, vocab, "the ", 600, seed=1), generate(model, vocab, "fox ", 600, seed=2)
    text_a, text_b = [], []
    for _ in range(600):  # alternate, so that each block of one is computed between the other's
        text_a.append(next(a))
        text_b.append(next(b))
    assert "".join(text_a) == plain_loop(model, vocab, "the ", 600, 1)
    assert "".join(text_b) == plain_loop(model, vocab, "fox ", 600, 2)


def test_cuda_graph_needs_a_cuda_model():
    vocab = Vocab.from_text(CHARS)
    with pytest.raises(OptionError, match="needs a model on a CUDA device; this one is on cpu"):
        next(generate(model_of("lstm"), vocab, "the ", 5, cuda_graph=True))
    # False is the op-by-op step, allowed everywhere
    assert len("".join(generate(model_of("lstm"), vocab, "the ", 5, cuda_graph=False))) == 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph replay needs a CUDA GPU")
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_graph_replay_gives_the_eager_text_on_cuda(cell):
    vocab = Vocab.from_text(CHARS)
    model = model_of(cell, device="cuda")
    for opts in OPTIONS:
        eager = "".join(generate(model, vocab, "the ", 600, seed=9, cuda_graph=False, **opts))
        graph = "".join(generate(model, vocab, "the ", 600, seed=9, cuda_graph=True, **opts))
        again = "".join(generate(model, vocab, "the ", 600, seed=9, **opts))  # the cached graphs
        assert graph == eager == again, (cell, opts)
    with torch.no_grad():
        model.readout.delta.mul_(0.5)  # a new weights version: captured again
    assert ("".join(generate(model, vocab, "the ", 300, seed=2, cuda_graph=True))
            == "".join(generate(model, vocab, "the ", 300, seed=2, cuda_graph=False)))


def test_cli_cuda_graph_on_a_cpu_device(tiny, cli_error, capsys):
    from rnnforge.charlm.train import Trainer
    from rnnforge.cli import main

    cfg = tiny(steps=2, eval_every=2)
    Trainer(cfg).run()
    err = cli_error(["sample", cfg.out, "--cuda-graph", "on", "--device", "cpu"])
    assert err == "rnnforge sample: error: --cuda-graph needs a CUDA device, got device cpu"
    assert main(["sample", cfg.out, "--prime", "the ", "--length", "20", "--seed", "2", "--cuda-graph", "off"]) == 0
    off = capsys.readouterr().out
    assert main(["sample", cfg.out, "--prime", "the ", "--length", "20", "--seed", "2"]) == 0
    assert capsys.readouterr().out == off and len(off) == 4 + 20 + 1


def test_a_failed_capture_warns_and_steps_op_by_op_unless_the_graph_was_demanded(monkeypatch):
    """The CPU stands in for a GPU whose capture fails: the step's CudaGraph raises."""
    import rnnforge.engines.decode as decode

    def refuse(*args, **kwargs):
        raise RuntimeError("capture refused")

    monkeypatch.setattr(decode, "CudaGraph", refuse)
    vocab = Vocab.from_text(CHARS)
    model = model_of("gru")
    logits, state = model(vocab.encode("the ")[None])
    logits = logits[:, -1].detach()
    for strict in (False, True):
        run = StaticGeneration(model, 1, 40, 1.0, None, None, False, graph=False, strict=strict)
        run.graph = True
        blocks = run.blocks(logits, state, 40, torch.Generator().manual_seed(6))
        if strict:
            with pytest.raises(RuntimeError, match="capture refused"):
                list(blocks)
            continue
        with pytest.warns(RuntimeWarning, match=r"generate: the CUDA graph capture failed \(capture refused\)"):
            text = "".join(vocab.chars[t[0]] for block in blocks for t in block)
        assert text == plain_loop(model, vocab, "the ", 40, 6) and not run.graph
