import csv
import math

import pytest
import torch

from rnnforge import checkpoint
from rnnforge.errors import OptionError, UserError
from rnnforge.charlm.checkpoint import load_model
from rnnforge.charlm.train import BEST, LAST, Trainer, TrainConfig, learning_rate
from rnnforge.runtime import rank_device


def _losses(trainer, record):
    step = trainer.train_step

    def wrapped():
        loss = step()
        record.append(loss)
        return loss
    trainer.train_step = wrapped


def test_loss_falls(tiny):
    t = Trainer(tiny(steps=40, eval_every=40))
    losses = []
    _losses(t, losses)
    t.run()
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5
    # the held-out figure is bits per character of the real next characters
    assert t.best < math.log2(len(t.vocab))


def test_same_seed_same_run(tiny, tmp_path):
    runs = []
    for k in range(2):
        t = Trainer(tiny(out=str(tmp_path / f"r{k}"), dropout=0.1))
        losses = []
        _losses(t, losses)
        t.run()
        runs.append(losses)
    assert runs[0] == runs[1]


def test_resume_continues_the_same_trajectory(tiny, tmp_path):
    """Interrupt at step 5 (Ctrl-C), resume, and match an uninterrupted run."""
    cfg = dict(steps=12, eval_every=4, dropout=0.2)
    full = Trainer(tiny(out=str(tmp_path / "full"), **cfg))
    want = []
    _losses(full, want)
    full.run()

    part = Trainer(tiny(out=str(tmp_path / "part"), **cfg))
    got = []
    step = part.train_step

    def interrupting():
        if part.step == 5:
            raise KeyboardInterrupt
        loss = step()
        got.append(loss)
        return loss
    part.train_step = interrupting
    with pytest.raises(KeyboardInterrupt):
        part.run()
    assert len(got) == 5
    _, meta = checkpoint.load(tmp_path / "part" / LAST)
    assert meta["step"] == 5

    resumed = Trainer(tiny(out=str(tmp_path / "part"), resume=True, **cfg))
    assert resumed.step == 5
    _losses(resumed, got)
    resumed.run()
    assert len(got) == 12
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-6)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_checkpoint_round_trip_gives_the_same_model(tiny, tmp_path):
    t = Trainer(tiny(cell="gru", tie_weights=True))
    t.run()
    model, vocab, meta = load_model(tmp_path / "run" / LAST)
    assert vocab.chars == t.vocab.chars and meta["model"]["cell"] == "gru"
    ids = torch.randint(0, len(vocab), (2, 9))
    t.model.eval()
    torch.testing.assert_close(model(ids)[0], t.model(ids)[0], rtol=0, atol=0)
    assert model.readout.delta is model.embedding.weight  # tying survives the round trip
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [6, 12]
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "run" / BEST).exists()


def test_best_checkpoint_has_the_best_held_out_score(tiny, tmp_path):
    t = Trainer(tiny(steps=18, eval_every=6))
    t.run()
    with open(tmp_path / "run" / "metrics.csv") as f:
        best = min(float(r["val_bpc"]) for r in csv.DictReader(f))
    _, meta = checkpoint.load(tmp_path / "run" / BEST)
    assert meta["metrics"]["val_bpc"] == pytest.approx(best)
    assert "optimizer" not in meta  # the best checkpoint is for sampling, not resuming


@pytest.mark.parametrize("cell", ["rnn", "rnn-tanh", "gru", "lstm"])
def test_every_cell_trains(tiny, cell):
    t = Trainer(tiny(cell=cell, steps=3, eval_every=3))
    m = t.run()
    assert math.isfinite(m["val_bpc"])


def test_the_engine_reported_is_the_training_steps_one(tiny, tmp_path):
    """Evaluation runs forward only and may take another engine (auto keeps oneDNN for a
    forward-only LSTM above batch 4); the run reports the one its training steps ran."""
    from rnnforge import _ckernels
    if not _ckernels.available("rnn"):
        pytest.skip("no C compiler: the fused C loops, and so this engine split, are not there")
    t = Trainer(tiny(cell="lstm", steps=2, eval_every=2, batch_size=8))
    t.run()
    assert t.engine_used == "fused"              # training, batch 8: the C loops
    assert t.model.rnn.engine_used == "native"   # the last call, evaluation: oneDNN's forward
    _, meta = checkpoint.load(tmp_path / "run" / LAST)
    assert meta["engine"] == "fused"


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=110, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 0) == pytest.approx(1.0)
    assert learning_rate(cfg, 10, 0) == pytest.approx(1.0)
    assert learning_rate(cfg, 60, 0) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cosine midpoint
    assert learning_rate(cfg, 110, 0) == pytest.approx(0.1)
    timed = TrainConfig(minutes=1.0, warmup=0, lr=1.0, min_lr_ratio=0.0)
    assert learning_rate(timed, 5, 30.0) == pytest.approx(0.5)


def test_bad_inputs(tiny, tmp_path):
    with pytest.raises(UserError, match=r"too short: 37 training characters make 4 streams of 9, shorter "
                                        r"than one chunk of 16 \+ 1 characters"):
        short = tmp_path / "short.txt"
        short.write_text("abc" * 13)
        Trainer(tiny(data=str(short)))
    with pytest.raises(OptionError, match="^cell 'lstn' is unknown; choose one of rnn, rnn-tanh, gru, lstm$"):
        Trainer(tiny(cell="lstn"))
    with pytest.raises(OptionError, match="give a step budget, a time budget, or both"):
        Trainer(tiny(steps=0, minutes=0))
    with pytest.raises(UserError, match="does not exist"):
        Trainer(tiny(resume=True, out=str(tmp_path / "empty")))
    with pytest.raises(UserError, match="CUDA is not available"):
        if torch.cuda.is_available():
            pytest.skip("has CUDA")
        Trainer(tiny(device="cuda"))


def test_amp_choices_on_the_cpu(tiny):
    """auto means full precision on the CPU; a demanded half precision is refused, not ignored."""
    t = Trainer(tiny(amp="auto"))
    assert t.amp_dtype is None and t.scaler is None
    for amp in ("bf16", "fp16"):
        with pytest.raises(UserError, match=f"^amp {amp}: mixed precision runs on CUDA here, and the "
                                            f"device is cpu; use off"):
            Trainer(tiny(amp=amp))
    with pytest.raises(UserError, match="amp 'half': choose one of auto, bf16, fp16, off"):
        Trainer(tiny(amp="half"))


def test_each_rank_takes_its_own_gpu(monkeypatch):
    """Under torchrun, rank r trains on cuda:LOCAL_RANK; two ranks on one GPU (which NCCL
    refuses with 'Duplicate GPU detected') are an error that says what to do."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert rank_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(UserError, match="names one GPU for all 2 ranks; give cuda"):
        rank_device(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"local rank 1 has no GPU of its own \(1 visible\); start at most 1 processes "
                                        r"per node \(torchrun --nproc-per-node 1\), or train on cpu"):
        rank_device(torch.device("cuda"))
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process may name any GPU
    assert rank_device(torch.device("cuda", 3)) == torch.device("cuda", 3)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("cell", ["rnn", "rnn-tanh", "gru", "lstm"])
def test_mixed_precision_training_on_cuda(tiny, tmp_path, cell, amp):
    """Every cell trains under autocast with its state carried from chunk to chunk (which comes
    back in the half precision), float16 with the GradScaler, and its losses track a
    full-precision run's on the same GPU step for step."""
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    curves = {}
    for a in ("off", amp):
        t = Trainer(tiny(cell=cell, amp=a, device="cuda", steps=40, eval_every=40, out=str(tmp_path / a)))
        assert t.amp_dtype == {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a]
        assert (t.scaler is not None) == (a == "fp16")
        curves[a] = []
        _losses(t, curves[a])
        assert math.isfinite(t.run()["val_bpc"])
    full, half = torch.tensor(curves["off"]), torch.tensor(curves[amp])
    assert half.isfinite().all()
    assert half[-5:].mean() < 0.9 * half[:5].mean()  # it learns (the notes' sigmoid RNN the slowest)
    assert ((half - full).abs() / full).max() < 0.05, (half - full).abs().max()


@cuda
def test_fp16_resume_restores_the_loss_scale(tiny):
    t = Trainer(tiny(amp="fp16", device="cuda", steps=4, eval_every=4))
    t.run()
    t.scaler.update(1234.0)  # a scale no fresh scaler starts from
    t.save(LAST, {}, with_training_state=True)
    r = Trainer(tiny(amp="fp16", device="cuda", steps=8, resume=True))
    assert r.scaler.get_scale() == 1234.0


def test_resume_with_other_model_flags_is_refused(tiny):
    Trainer(tiny(steps=2, eval_every=2)).run()
    with pytest.raises(UserError, match="differs from the requested"):
        Trainer(tiny(steps=4, hidden=32, resume=True))


def test_a_torn_checkpoint_write_leaves_the_old_one(tiny, tmp_path, monkeypatch):
    t = Trainer(tiny(steps=6, eval_every=6))
    t.run()
    path = tmp_path / "run" / LAST
    before = path.read_bytes()

    def dies(*a, **k):
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr("safetensors.torch.save_file", dies)
    with pytest.raises(KeyboardInterrupt):
        t.save(LAST, {}, with_training_state=True)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("cell", ["rnn", "rnn-tanh", "gru", "lstm"])
@pytest.mark.parametrize("tie, bias, layers", [(False, True, 1), (True, True, 3), (False, False, 2)])
def test_parameter_count_from_the_config_alone(cell, tie, bias, layers):
    from rnnforge.charlm.model import CharLM, CharLMConfig, parameter_count

    cfg = CharLMConfig(11, cell, 7, layers, 0 if tie else 5, tie_weights=tie, bias=bias)
    assert parameter_count(cfg) == sum(p.numel() for p in CharLM(cfg).parameters())


def test_a_model_beyond_the_memory_is_refused_before_it_is_built(tiny, monkeypatch):
    from rnnforge.charlm import model

    monkeypatch.setattr(model, "memory_bytes", lambda device: 4 * 2**20)  # a 4 MiB machine
    # LSTM, hidden = embed = 256, V = 29: 4 gates of 256 x 512 weights and 256 biases, embedding and
    # readout 29 x 256 each, readout bias 29; 16 bytes a parameter (weights, gradients, 2 moments)
    n = 4 * 256 * 512 + 4 * 256 + 2 * 29 * 256 + 29
    with pytest.raises(OptionError, match=rf"^hidden 256 is too large: the model would have {n:,} parameters, "
                                          rf"about {16 * n / 2**20:.1f} MiB to train \(float32 weights, "
                                          rf"gradients and two AdamW moments\), more than the 4\.0 MiB of "
                                          rf"memory of cpu; use a smaller value$"):
        Trainer(tiny(hidden=256, embed=256))


def test_train_returns_the_result_and_resolve_config_reads_the_run(tiny, tmp_path):
    from rnnforge.charlm import resolve_config, train

    cfg = tiny(steps=4, eval_every=2)
    res = train(cfg, log=lambda *a: None)
    assert (res.step, res.out, res.main) == (4, tmp_path / "run", True)
    assert res.metrics["step"] == 4 and res.best_val_bpc == min(res.best_val_bpc, res.metrics["val_bpc"])
    again = resolve_config({"resume": True, "out": str(tmp_path / "run"), "steps": 8, "hidden": None})
    assert again.hidden == 24 and again.steps == 8 and again.seq_len == 16 and again.resume
    assert again.data == str(tmp_path / "corpus.txt")
    with pytest.raises(OptionError, match=r"^seq_len is 8, but the run in .* was trained with 16") as e:
        resolve_config({"resume": True, "out": str(tmp_path / "run"), "seq_len": 8})
    assert e.value.option == "seq_len"
    assert resolve_config({"steps": 3}, tiny()).steps == 3  # fresh: the rest from the defaults given
