"""A model whose weights make one unit copy the in-quote feature: the analysis must find it."""

import numpy as np
import torch

from rnnforge.charlm import CharLM, CharLMConfig, Vocab
from rnnforge.inspect import analyze, record


def test_a_planted_quote_unit_is_found():
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list('ab "'), size=600, p=[0.4, 0.3, 0.2, 0.1]))
    vocab = Vocab.from_text(text)
    assert vocab.chars == ' "ab'
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(len(vocab), cell="gru", hidden=2, layers=1, embed=1)).eval()
    cell = model.rnn.cell(0)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.tensor([[0.0], [1.0], [0.0], [0.0]]))  # only '"' is 1
        # unit 0 (unit 1 keeps its random weights but does not reach unit 0):
        # s = σ(20 - 40 x): keep the state (s ≈ 1) except on a quote (s ≈ 0);
        # r = σ(20) ≈ 1; z~ = tanh(x - 10 z_prev): on a quote, flip the sign of the state
        for name in ("gamma_s", "gamma_r", "gamma"):
            getattr(cell, name)[0] = 0.0
        cell.alpha_s[0], cell.b_s[0] = -40.0, 20.0
        cell.alpha_r[0], cell.b_r[0] = 0.0, 20.0
        cell.alpha[0], cell.b_z[0], cell.gamma[0, 0], cell.b_gamma[0] = 1.0, 0.0, -10.0, 0.0
    # the state starts at -1 (outside a quotation): a quote sends it to +1, the next back to -1
    rec = record(model, text, vocab, state=torch.tensor([[-1.0, 0.0]]))
    an = analyze(rec, model, look_back_k=8, look_back_units=2, look_back_positions=4)
    in_quote = an.features["in_quote"]
    assert 0.2 < in_quote.mean() < 0.8  # the text has quotations to find
    best = next(b for b in an.best if b["feature"] == "in_quote")
    assert (best["layer"], best["unit"]) == (0, 0) and abs(best["r"]) > 0.99, best
    assert an.correlations[0, "z"][0, 0] > 0.99
