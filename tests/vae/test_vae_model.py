"""The sequence VAE's numbers against independent ones: a hand-worked ELBO, closed forms, Monte Carlo."""

import math
from statistics import NormalDist

import pytest
import torch

from rnnforge.vae.data import batch
from rnnforge.vae.model import (SequenceVAE, VAEConfig, gaussian_kl, log_normal, reparameterize,
                                uniforms)

F64 = torch.float64


def tiny(cell="rnn-tanh", bidirectional=False, **kw):
    cfg = dict(vocab_size=3, cell=cell, hidden=2, layers=1, embed=2, latent=2, bidirectional=bidirectional,
               max_len=10, engine="reference")
    cfg.update(kw)
    torch.manual_seed(0)
    return SequenceVAE(VAEConfig(**cfg)).double()


# -- the ELBO worked by hand, in plain Python from the notes' tanh RNN -------------------------
def _mv(W, x):
    return [sum(w * xi for w, xi in zip(row, x)) for row in W]


def _add(*vs):
    return [sum(t) for t in zip(*vs)]


def _rnn_step(cell, x, h):
    """z = tanh(alpha x + gamma z_prev + b), the notes' RNN with the tanh nonlinearity."""
    return [math.tanh(v) for v in _add(_mv(cell.alpha.tolist(), x), _mv(cell.gamma.tolist(), h), cell.b.tolist())]


def hand_elbo(m, line, u):
    """(reconstruction nats, KL nats per dimension) of one line for the uniforms ``u``."""
    E = m.embedding.weight.tolist()
    enc, dec = m.encoder.cell(0), m.decoder.cell(0)
    h = [0.0, 0.0]
    for c in line:
        h = _rnn_step(enc, E[c], h)
    mu = _add(_mv(m.to_mu.weight.tolist(), h), m.to_mu.bias.tolist())
    logvar = _add(_mv(m.to_logvar.weight.tolist(), h), m.to_logvar.bias.tolist())
    z = [mj + math.exp(0.5 * lj) * NormalDist().inv_cdf(uj) for mj, lj, uj in zip(mu, logvar, u)]
    kl = [0.5 * (mj * mj + math.exp(lj) - 1 - lj) for mj, lj in zip(mu, logvar)]
    h = [math.tanh(v) for v in _add(_mv(m.to_state.weight.tolist(), z), m.to_state.bias.tolist())]
    rec = 0.0
    for prev, target in zip([0] + line, line + [0]):
        h = _rnn_step(dec, E[prev] + z, h)
        seen = h + z if m.config.readout_z else h  # the readout's input: [h_t, z] with readout_z
        logits = _add(_mv(m.readout.delta.tolist(), seen), m.readout.b.tolist())
        rec += math.log(sum(math.exp(v) for v in logits)) - logits[target]
    return rec, kl


@pytest.mark.parametrize("readout_z", [False, True])
def test_elbo_equals_the_hand_worked_value_in_a_padded_batch(readout_z):
    m = tiny(readout_z=readout_z)
    assert m.readout.delta.shape == (3, 2 + 2 * readout_z)
    lines = [[1, 2, 2, 1], [2], [1, 1]]
    ids, lengths = batch([torch.tensor(x) for x in lines])
    u = torch.tensor([[0.3, 0.8], [0.05, 0.5], [0.97, 0.2]], dtype=F64)
    out = m(ids, lengths, u=u)
    for i, line in enumerate(lines):
        rec, kl = hand_elbo(m, line, u[i].tolist())
        assert out["rec"][i].item() == pytest.approx(rec, rel=1e-12, abs=1e-12)
        assert out["kl"][i].tolist() == pytest.approx(kl, rel=1e-12, abs=1e-12)


def test_closed_form_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(1)
    mu = torch.tensor([0.7, -1.2, 0.0], dtype=F64)
    logvar = torch.tensor([-1.0, 0.4, 0.0], dtype=F64)
    n = 200_000
    z = reparameterize(mu, logvar, uniforms((n, 3), generator=g))
    zero = torch.zeros(3, dtype=F64)
    # per dimension: log q(z_j) - log p(z_j)
    terms = torch.stack([log_normal(z[:, j:j + 1], mu[j:j + 1], logvar[j:j + 1])
                         - log_normal(z[:, j:j + 1], zero[:1], zero[:1]) for j in range(3)], 1)
    mc, se = terms.mean(0), terms.std(0) / math.sqrt(n)
    exact = gaussian_kl(mu, logvar)
    assert exact[2].item() == 0.0
    assert ((mc - exact).abs() <= 4 * se + 1e-12).all(), (mc, exact, se)


def test_reparameterised_draw_has_the_right_moments_and_gradient():
    g = torch.Generator().manual_seed(2)
    mu = torch.tensor([1.5, -0.5], dtype=F64, requires_grad=True)
    logvar = torch.tensor([math.log(0.25), math.log(4.0)], dtype=F64, requires_grad=True)
    n = 100_000
    u = uniforms((n, 2), generator=g)
    z = reparameterize(mu, logvar, u)
    sd = torch.tensor([0.5, 2.0], dtype=F64)
    assert ((z.mean(0) - mu).abs() < 4 * sd / math.sqrt(n)).all()
    # the sample variance's sd is sigma^2 sqrt(2 / n) for a normal
    assert ((z.var(0) - sd ** 2).abs() < 4 * sd ** 2 * math.sqrt(2 / n)).all()
    w = torch.tensor([1.0, -2.0], dtype=F64)
    (z * w).sum().backward()
    eps = torch.special.ndtri(u)
    assert torch.allclose(mu.grad, n * w)
    assert torch.allclose(logvar.grad, (w * 0.5 * sd * eps).sum(0))


def test_importance_weighted_bound_is_below_the_negative_elbo_and_tightens_with_k():
    m = tiny(cell="gru", bidirectional=True, hidden=3)
    with torch.no_grad():  # a decoder that leans on z, so that the bounds differ visibly
        m.to_state.weight.mul_(4)
        m.to_logvar.bias.fill_(0.5)
    lines = [[1, 2, 2, 1, 1], [2, 1]]
    ids, lengths = batch([torch.tensor(x) for x in lines])
    g = torch.Generator().manual_seed(3)
    m.eval()
    R = 4000
    with torch.no_grad():  # R one-sample ELBOs of each line in one batch
        d = m(ids.repeat(R, 1), lengths.repeat(R), generator=g)
    neg_elbo = (d["rec"] + d["kl"].sum(1)).view(R, 2).mean(0)  # (B,)
    means = {k: m.importance_nll(ids.repeat(1200 // k, 1), lengths.repeat(1200 // k), k, generator=g,
                                 chunk=k).view(-1, 2).mean(0)
             for k in (1, 5, 50)}
    # K = 1 is an unbiased estimate of -ELBO
    assert torch.allclose(means[1], neg_elbo, rtol=0.02)
    assert (means[5] < means[1]).all() and (means[50] < means[5]).all()
    assert (means[50] < neg_elbo - 0.01).all()


def test_character_dropout_is_for_training_only():
    m = tiny()
    ids, lengths = batch([torch.tensor([1, 2, 1, 1, 2, 2, 1, 2])])
    u = torch.full((1, 2), 0.4, dtype=F64)
    m.train()
    g = torch.Generator().manual_seed(0)
    masked = m.decoder_inputs(ids, 0.9, g)
    assert (masked[0, 1:] == m.mask_id).sum() >= 4 and masked[0, 0] == 0
    m.eval()
    assert torch.equal(m.decoder_inputs(ids, 0.9, g), torch.cat([torch.zeros(1, 1, dtype=torch.long), ids], 1))
    assert m(ids, lengths, u=u, char_dropout=0.9)["rec"].item() == m(ids, lengths, u=u)["rec"].item()


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_padding_never_changes_a_result(cell):
    m = tiny(cell=cell, bidirectional=True, engine="auto")
    line = torch.tensor([2, 1, 1, 2])
    u = torch.tensor([[0.2, 0.6]], dtype=F64)
    alone = m(*batch([line]), u=u)
    ids, lengths = batch([torch.tensor([1, 2, 1, 2, 1, 1, 2, 2, 1]), line])
    ids[1, 4:] = torch.tensor([2, 1, 2, 2, 1])  # junk in the padding
    both = m(ids, lengths, u=torch.cat([u, u]))
    for key in ("rec", "kl", "mu"):
        torch.testing.assert_close(both[key][1], alone[key][0], rtol=1e-12, atol=1e-12)


def test_the_readout_s_share_of_z_changes_the_reconstruction_and_the_shuffled_codes():
    m = tiny(readout_z=True)
    ids, lengths = batch([torch.tensor([1, 2, 2, 1]), torch.tensor([2, 1])])
    z = torch.tensor([[1.5, -0.5], [-1.0, 2.0]], dtype=F64)
    own, shuffled = m.reconstruction(ids, lengths, z), m.reconstruction(ids, lengths, z.roll(1, 0))
    with torch.no_grad():
        m.readout.delta[:, 2:] = 0  # the readout's columns for z off: only the recurrence carries z
    own0, shuffled0 = m.reconstruction(ids, lengths, z), m.reconstruction(ids, lengths, z.roll(1, 0))
    assert not torch.allclose(own, own0) and not torch.allclose(shuffled - own, shuffled0 - own0)


@pytest.mark.parametrize("readout_z", [False, True])
def test_greedy_generation_follows_the_teacher_forced_decoder(readout_z):
    """Each greedily generated character is the argmax of decode() run on the line so far, so the
    step-by-step path feeds the readout the same input as the batched one."""
    m = tiny(cell="gru", readout_z=readout_z, vocab_size=4, hidden=5, max_len=8).eval()
    with torch.no_grad():
        m.readout.b[0] = -2.0  # the boundary less likely, so that lines have characters to compare
    z = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(4)) * 2
    for line, code in zip(m.generate(z, greedy=True), z):
        ids, lengths = batch([line])
        with torch.no_grad():
            logits = m.decode(m.decoder_inputs(ids), lengths, code.unsqueeze(0))[0]
        want = line.tolist() + ([0] if len(line) < 8 else [])
        assert logits.argmax(-1)[:len(want)].tolist() == want


def test_generation_is_seeded_and_stops_at_the_boundary():
    m = tiny(max_len=6).eval()
    z = torch.randn(5, 2, dtype=F64)
    a = m.generate(z, generator=torch.Generator().manual_seed(7))
    b = m.generate(z, generator=torch.Generator().manual_seed(7))
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert all(len(x) <= 6 and 0 not in x.tolist() for x in a)


def test_the_extreme_uniforms_give_finite_codes():
    from rnnforge.vae.model import U_MAX, U_MIN

    u = torch.tensor([U_MIN, 0.5, U_MAX], dtype=F64)
    z = reparameterize(torch.zeros(3, dtype=F64), torch.zeros(3, dtype=F64), u)
    assert torch.isfinite(z).all() and z[0] < -8 and z[1] == 0 and z[2] > 8
    assert U_MAX < 1.0 and U_MIN > 0.0
