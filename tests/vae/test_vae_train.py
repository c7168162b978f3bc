"""The VAE trainer: schedules, the run-folder guard, resume equal to an unbroken run, the stored posterior."""

import math

import pytest
import torch
from safetensors.torch import load_file

from rnnforge.errors import OptionError
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


def _strip_option(path, name="readout_z"):
    """Rewrite a checkpoint as one written before the model had the option ``name``."""
    from rnnforge import checkpoint

    tensors, meta = checkpoint.load(path)
    meta = {k: v for k, v in meta.items() if k not in ("format", "versions")}
    meta["model"] = {k: v for k, v in meta["model"].items() if k != name}
    meta["train"] = {k: v for k, v in meta["train"].items() if k != name}
    checkpoint.save(path, tensors, meta)


@pytest.mark.parametrize("readout_z", [False, True])
def test_the_readout_option_survives_the_checkpoint(tiny_vae, readout_z):
    cfg = tiny_vae(readout_z=readout_z)
    t = Trainer(cfg, log=lambda *a: None)
    t.run()
    model, _, meta, _ = load_vae(f"{cfg.out}/{LAST}")
    assert model.config.readout_z is readout_z and meta["model"]["readout_z"] is readout_z
    assert model.readout.delta.shape[1] == cfg.hidden + readout_z * cfg.latent
    ids, lengths = t._batch()
    u = torch.full((ids.shape[0], cfg.latent), 0.3, dtype=torch.float64)
    t.model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids, lengths, u=u)["rec"], t.model(ids, lengths, u=u)["rec"])


def test_a_checkpoint_without_the_readout_option_loads_and_resumes(tiny_vae, monkeypatch):
    import importlib
    from dataclasses import dataclass

    from rnnforge.vae.train import VAETrainConfig, resolve_config

    cfg = tiny_vae(readout_z=False)
    train(cfg, log=lambda *a: None)
    for name in (BEST, LAST):
        _strip_option(f"{cfg.out}/{name}")
    model, _, meta, post = load_vae(cfg.out)
    assert "readout_z" not in meta["model"] and model.config.readout_z is False and post is not None

    @dataclass
    class ReadoutByDefault(VAETrainConfig):
        readout_z: bool = True

    # whatever the default of the day, a run saved without the option resumes without it
    vt = importlib.import_module("rnnforge.vae.train")  # the module; rnnforge.vae.train is also the function
    monkeypatch.setattr(vt, "VAETrainConfig", ReadoutByDefault)
    again = resolve_config({"out": cfg.out, "resume": True, "steps": 8})
    assert again.readout_z is False
    train(again, log=lambda *a: None)
    assert load_vae(cfg.out)[2]["step"] == 8 and load_vae(cfg.out)[0].config.readout_z is False
    with pytest.raises(OptionError, match=r"is True, but the run in .* was trained with False"):
        resolve_config({"out": cfg.out, "resume": True, "steps": 9, "readout_z": True})


def test_a_finished_run_says_so_and_names_the_budget(tiny_vae):
    cfg = tiny_vae()
    train(cfg, log=lambda *a: None)
    with pytest.raises(OptionError, match=r"6: the run in .* is finished \(6 of 6 steps done\); "
                                          r"give a larger value to train it further") as e:
        train(tiny_vae(resume=True), log=lambda *a: None)
    assert e.value.option == "steps"


def test_a_checkpoint_whose_step_is_not_a_number_is_refused(tiny_vae):
    from rnnforge import checkpoint
    from rnnforge.errors import UserError

    cfg = tiny_vae()
    train(cfg, log=lambda *a: None)
    path = f"{cfg.out}/{LAST}"
    tensors, meta = checkpoint.load(path)
    meta = {k: v for k, v in meta.items() if k not in ("format", "versions")}
    checkpoint.save(path, tensors, {**meta, "step": "6"})
    with pytest.raises(UserError, match=r"the checkpoint's 'step' is missing or not a number"):
        train(tiny_vae(resume=True, steps=12), log=lambda *a: None)
