"""The VAE trainer: schedules, the run-folder guard, resume equal to an unbroken run, the stored posterior."""

import math

import pytest
import torch
from safetensors.torch import load_file

from rnnforge.runlog import RunExists
from rnnforge.vae.checkpoint import BEST, LAST, load_vae
from rnnforge.vae.train import Trainer, kl_weight, train


def test_kl_weight_schedules(tiny_vae):
    lin = tiny_vae(kl_anneal="linear", anneal_fraction=0.5)
    assert [kl_weight(lin, p) for p in (0.0, 0.25, 0.5, 0.9)] == [0.0, 0.5, 1.0, 1.0]
    cyc = tiny_vae(kl_anneal="cyclical", anneal_fraction=0.5, cycles=4)
    # each quarter of the budget: up over its first half, then 1
    assert [kl_weight(cyc, p) for p in (0.05, 0.2, 0.3, 0.45, 1.0)] == pytest.approx([0.4, 1.0, 0.4, 1.0, 1.0])
    assert kl_weight(tiny_vae(kl_anneal="none"), 0.0) == 1.0


@pytest.mark.parametrize("free_bits", [50.0, 1e-9])
def test_free_bits_floor_each_dimension_s_batch_mean_kl(tiny_vae, free_bits):
    t = Trainer(tiny_vae(free_bits=free_bits, char_dropout=0.3))
    ids, lengths = t._batch()
    state = t.gen.get_state()
    loss, _ = t.objective(ids, lengths, 1.0)
    again = torch.Generator()
    again.set_state(state)  # the same draws of u and of the dropout mask
    o = t.model(ids, lengths, generator=again, char_dropout=0.3)
    floor = free_bits * math.log(2)  # nats per dimension
    kl = torch.clamp(o["kl"].mean(0), min=floor).sum() * ids.shape[0]
    assert loss.item() == pytest.approx(((o["rec"].sum() + kl) / (lengths + 1).sum()).item(), rel=1e-6)
    if free_bits > 1:  # every dimension below the floor: the KL term is the constant floor
        assert kl.item() == pytest.approx(floor * t.cfg.latent * ids.shape[0])
    else:
        assert kl.item() == pytest.approx(o["kl"].sum().item())


def test_resume_equals_an_unbroken_run(tiny_vae, tmp_path, monkeypatch):
    opts = dict(kl_anneal="cyclical", free_bits=0.1, char_dropout=0.3, aggressive=0.5, aggressive_steps=2)
    train(tiny_vae(out=str(tmp_path / "whole"), **opts), log=lambda *a: None)

    real = Trainer.train_step

    def interrupted(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_vae(out=str(tmp_path / "broken"), **opts), log=lambda *a: None)
    monkeypatch.setattr(Trainer, "train_step", real)
    train(tiny_vae(out=str(tmp_path / "broken"), resume=True, **opts), log=lambda *a: None)

    a, b = load_file(tmp_path / "whole" / LAST), load_file(tmp_path / "broken" / LAST)
    weights = [k for k in a if k.startswith("model.") or k.startswith("posterior.")]
    assert len(weights) > 10 and all(torch.equal(a[k], b[k]) for k in weights)


def test_a_run_is_never_trained_over_and_the_posterior_is_stored(tiny_vae):
    cfg = tiny_vae()
    train(cfg, log=lambda *a: None)
    for name in (BEST, LAST):
        model, vocab, meta, post = load_vae(f"{cfg.out}/{name}")
        assert post is not None and post.dim == 3 and meta["kind"] == "vae"
    with pytest.raises(RunExists, match="holds a run"):
        train(tiny_vae(), log=lambda *a: None)
