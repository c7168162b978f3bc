"""The command line: every bad input is one line on stderr and exit code 2, and no run is lost."""

import csv
import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from rnnforge.cli import main
from rnnforge.charlm import sample
from rnnforge.charlm.train import BEST, LAST, Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, text_file, tiny_argv):
    """A finished 4-step run, evaluated at steps 2 and 4; tests copy it before changing it."""
    d = tmp_path_factory.mktemp("cli") / "run"
    assert main(tiny_argv(text_file, d)) == 0
    return d


@pytest.fixture
def run_copy(run_dir, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(run_dir, d)
    return d


def _rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


# -- sample ---------------------------------------------------------------------------------
def test_sample_writes_only_the_text_to_stdout(run_dir, capsys):
    assert main(["sample", str(run_dir), "--prime", "the ", "--length", "30", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    want = "the " + "".join(sample(run_dir, "the ", 30, temperature=0.8, seed=1)) + "\n"
    assert out == want
    assert "resolved config" in err and "seed = 1" in err


def test_sample_output_file(run_dir, tmp_path, capsys):
    target = tmp_path / "deep" / "sample.txt"
    assert main(["sample", str(run_dir), "--prime", "a", "--length", "25", "--seed", "4",
                 "--output", str(target)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert target.read_text() == "a" + "".join(sample(run_dir, "a", 25, temperature=0.8, seed=4)) + "\n"
    assert f"wrote 27 characters to {target}" in err
    assert [p.name for p in target.parent.iterdir()] == ["sample.txt"]  # no temporary left


def test_bad_checkpoints(run_dir, tmp_path, cli_error):
    assert "does not exist" in cli_error(["sample", tmp_path / "missing.safetensors"])
    assert "holds no checkpoint" in cli_error(["sample", tmp_path])
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes((run_dir / LAST).read_bytes()[:500])
    assert "corrupt or truncated" in cli_error(["sample", torn])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    assert "not a readable checkpoint" in cli_error(["sample", junk])


@pytest.mark.parametrize("flags, message", [
    (["--prime", "Q#"], "not in the model's vocabulary: 'Q', '#'"),
    (["--prime", ""], "--prime must hold at least one character"),
    (["--temperature", "0"], "--temperature must be > 0, got 0.0; greedy decoding (--greedy) takes the most likely"),
    (["--temperature", "inf"], "--temperature must be > 0, got inf"),
    (["--temperature", "nan"], "--temperature must be > 0, got nan"),
    (["--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["--top-p", "2"], "--top-p must be in (0, 1], got 2.0"),
    (["--top-k", "0"], "--top-k must be >= 1, got 0"),
    (["--length", "-1"], "--length must be >= 0, got -1"),
    (["--seed", "-1"], "--seed must be in [0, 18446744073709551615], got -1"),
    (["--seed", str(2**64)], f"--seed must be in [0, 18446744073709551615], got {2**64}"),
    (["--device", "tpu"], "--device 'tpu' is not a device"),
])
def test_bad_sampling_options(run_dir, cli_error, flags, message):
    err = cli_error(["sample", run_dir, *flags])
    assert err.startswith("rnnforge sample: error: ") and message in err


def test_sample_output_naming_a_folder(run_dir, tmp_path, cli_error):
    err = cli_error(["sample", run_dir, "--output", tmp_path])
    assert err == f"rnnforge sample: error: --output {tmp_path} is a folder; give a file name"


# -- bad training options ---------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--lr", "nan"], "--lr must be in (0, 1000], got nan"),
    (["--lr", "inf"], "--lr must be in (0, 1000], got inf"),
    (["--lr", "-1"], "--lr must be in (0, 1000], got -1.0"),
    (["--minutes", "nan"], "--minutes must be >= 0, got nan"),
    (["--minutes", "inf"], "--minutes must be >= 0, got inf"),
    (["--minutes", "-1"], "--minutes must be >= 0, got -1.0"),
    (["--steps", "0"], "--steps and --minutes are both 0: give a step budget, a time budget, or both"),
    (["--steps", "-3"], "--steps must be >= 0, got -3"),
    (["--clip", "-1"], "--clip must be >= 0, got -1.0"),
    (["--min-lr-ratio", "-5"], "--min-lr-ratio must be in [0, 1], got -5.0"),
    (["--threads", "-2"], "--threads must be in [0, 4096], got -2"),
    (["--embed", "-4"], "--embed must be >= 0, got -4"),
    (["--hidden", "0"], "--hidden must be >= 1, got 0"),
    (["--layers", "0"], "--layers must be >= 1, got 0"),
    (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    (["--seed", "-1"], "--seed must be in [0, 18446744073709551615], got -1"),
    (["--seed", str(2**64)], f"--seed must be in [0, 18446744073709551615], got {2**64}"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--seq-len", "0"], "--seq-len must be >= 1, got 0"),
    (["--eval-every", "0"], "--eval-every must be >= 1, got 0"),
    (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    (["--weight-decay", "nan"], "--weight-decay must be >= 0, got nan"),
    (["--val-fraction", "0.7"], "--val-fraction must be in (0, 0.5), got 0.7"),
    (["--val-fraction", "0"], "--val-fraction must be in (0, 0.5), got 0.0"),
    (["--engine", "warp"], "--engine 'warp' is unknown; choose auto or one of "),
    (["--engine", "native", "--cell", "rnn"],
     "--engine native cannot train the rnn cell here: torch's kernels have no rnn_sigmoid cell"),
    (["--tie-weights", "--embed", "4"], "--tie-weights needs the embedding as wide as the hidden layer "
                                        "(embed 4 != hidden 8)"),
    (["--resume", "--force"], "--force starts a run over, which contradicts resuming it"),
    (["--device", "cpu", "--amp", "fp16"], "--amp fp16: mixed precision runs on CUDA here, and the device is cpu"),
    (["--glob", ""], "--glob must be a file name pattern such as '*.txt', got ''"),
])
def test_bad_training_options(text_file, tmp_path, cli_error, flags, message, tiny_argv):
    out = tmp_path / "run"
    err = cli_error(tiny_argv(text_file, out, *flags))
    assert err.startswith("rnnforge train: error: ") and message in err
    assert not out.exists() or list(out.iterdir()) == []


def test_absurd_model_size_says_how_much_memory(text_file, tmp_path, cli_error, tiny_argv):
    err = cli_error(tiny_argv(text_file, tmp_path / "run", "--hidden", 1_000_000))
    # LSTM: 4 gates of (H, E + H) weights and H biases, E = H = 1e6, plus embedding and readout
    V = len(set(text_file.read_text()))
    n = 4 * 10**6 * (2 * 10**6) + 4 * 10**6 + 2 * V * 10**6 + V
    assert f"--hidden 1000000 is too large: the model would have {n:,} parameters, about " in err
    assert f"{16 * n / 2**40:.1f} TiB to train" in err


def test_bad_training_data(tmp_path, cli_error, tiny_argv):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok text \xff\xfe more")
    assert "byte 0xff at offset 8" in cli_error(tiny_argv(bad, tmp_path / "r1"))
    short = tmp_path / "short.txt"
    short.write_text("tiny")
    assert "corpus is too short" in cli_error(tiny_argv(short, tmp_path / "r2"))
    err = cli_error(tiny_argv(tmp_path / "none.txt", tmp_path / "r3"))
    assert f"--data {tmp_path / 'none.txt'}: no such file or folder" in err


def test_folder_corpus_skips_files_that_are_not_text(tmp_path, capsys, text_file, tiny_argv):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    shutil.copy(text_file, corpus / "sub" / "a.txt")
    (corpus / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    assert main(tiny_argv(corpus, tmp_path / "run", "--steps", 2)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rnnforge: warning: {corpus}: skipped 1 of 2 files that are not UTF-8 text: logo.png"]
    # with --glob the picture is not even looked at
    assert main(tiny_argv(corpus, tmp_path / "run2", "--steps", 2, "--glob", "*.txt")) == 0
    assert capsys.readouterr().err == ""


def test_out_naming_a_file(text_file, tmp_path, cli_error, tiny_argv):
    f = tmp_path / "file"
    f.write_text("keep me")
    assert f"--out {f} is a file, not a folder" in cli_error(tiny_argv(text_file, f))
    assert f"--out {f / 'run'}: {f} is a file" in cli_error(tiny_argv(text_file, f / "run"))
    assert f.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root writes into read-only folders")
def test_out_unwritable(text_file, tmp_path, cli_error, tiny_argv):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        err = cli_error(tiny_argv(text_file, ro / "run"))
    finally:
        ro.chmod(0o755)
    assert f"--out {ro / 'run'}: cannot write there (Permission denied)" in err


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's /sys")
def test_out_where_nobody_may_write(text_file, cli_error, tiny_argv):
    err = cli_error(tiny_argv(text_file, "/sys/rnnforge-test-run"))
    assert "--out /sys/rnnforge-test-run: cannot write there (" in err


# -- runs are never lost ------------------------------------------------------------------------
def test_a_folder_holding_a_run_is_not_overwritten(run_copy, text_file, cli_error, tiny_argv):
    before = _snapshot(run_copy)
    err = cli_error(tiny_argv(text_file, run_copy, "--steps", 2))
    assert err == (f"rnnforge train: error: {run_copy} holds a run (best.safetensors, last.safetensors, "
                   f"metrics.csv); use --resume to continue or --force to start over")
    assert _snapshot(run_copy) == before


def test_force_says_what_it_replaces_and_starts_fresh(run_copy, text_file, capsys, tiny_argv):
    assert main(tiny_argv(text_file, run_copy, "--steps", 2, "--eval-every", 1, "--force")) == 0
    out = capsys.readouterr().out
    assert (f"starting over in {run_copy}: removing best.safetensors, last.safetensors, metrics.csv, "
            f"learning_curve.png") in out
    assert [r["step"] for r in _rows(run_copy)] == ["1", "2"]


def test_resume_needs_only_the_folder_and_matches_an_unbroken_run(text_file, tmp_path, monkeypatch, capsys,
                                                                  tiny_argv):
    """Ctrl-C at step 3, then `train --resume --out RUN`: the same weights and metrics as one run."""
    flags = ("--steps", 6, "--dropout", 0.1, "--lr", 0.01, "--warmup", 1)
    assert main(tiny_argv(text_file, tmp_path / "full", *flags)) == 0

    step = Trainer.train_step

    def interrupted(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return step(self)
    monkeypatch.setattr(Trainer, "train_step", interrupted)
    capsys.readouterr()
    part = tmp_path / "part"
    assert main(tiny_argv(text_file, part, *flags)) == 130
    out, err = capsys.readouterr()
    assert f"interrupted at step 3: saved {part / LAST}" in out and err.strip() == "rnnforge train: interrupted"
    assert (part / "learning_curve.png").stat().st_size > 1000  # the curve is drawn on Ctrl-C too
    monkeypatch.setattr(Trainer, "train_step", step)

    assert main(["train", "--resume", "--out", str(part)]) == 0
    out = capsys.readouterr().out
    assert "step 6/6: train loss" in out and "steps = 6" in out and "hidden = 8" in out
    a, b = load_file(tmp_path / "full" / LAST), load_file(part / LAST)
    assert sorted(a) == sorted(b)
    for name in a:
        if name.startswith(("model.", "optim.", "carry.")):
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    cols = ("step", "lr", "train_loss", "train_bpc", "val_bpc")
    want = [{c: r[c] for c in cols} for r in _rows(tmp_path / "full")]
    assert [{c: r[c] for c in cols} for r in _rows(part)] == want


def test_resume_flags_must_agree_with_the_run(run_copy, text_file, cli_error):
    before = _snapshot(run_copy)
    err = cli_error(["train", "--resume", "--out", run_copy, "--hidden", 16])
    assert err == (f"rnnforge train: error: --hidden is 16, but the run in {run_copy} was trained with 8; "
                   f"leave it out to resume with the run's value")
    err = cli_error(["train", "--resume", "--out", run_copy, "--data", text_file.parent / "other.txt"])
    assert "--data is " in err and "was trained with" in err
    assert _snapshot(run_copy) == before


def test_resume_a_finished_run(run_copy, cli_error, capsys):
    before = _snapshot(run_copy)
    err = cli_error(["train", "--resume", "--out", run_copy])
    assert err == (f"rnnforge train: error: --steps 4: the run in {run_copy} is finished (4 of 4 steps "
                   f"done); give a larger value to train it further")
    assert _snapshot(run_copy) == before
    # a larger budget trains it further, the given flags agreeing with the run's
    assert main(["train", "--resume", "--out", str(run_copy), "--steps", "6", "--hidden", "8"]) == 0
    assert "step 6/6: train loss" in capsys.readouterr().out
    assert [r["step"] for r in _rows(run_copy)] == ["2", "4", "6"]


def test_resume_without_a_run(tmp_path, cli_error):
    err = cli_error(["train", "--resume", "--out", tmp_path / "nothing"])
    assert f"{tmp_path / 'nothing' / LAST} does not exist: there is no run to resume" in err


def test_a_kill_leaves_nothing_that_resume_repeats(run_copy, capsys):
    """A kill between a metrics row and its checkpoint, and during a checkpoint write: resume
    drops the row past the checkpoint and the temporary file."""
    last = _rows(run_copy)[-1]
    with open(run_copy / "metrics.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(last)).writerow({**last, "step": "5"})
    stale = run_copy / f".{LAST}.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", "--out", str(run_copy), "--steps", "6"]) == 0
    assert [r["step"] for r in _rows(run_copy)] == ["2", "4", "6"]
    assert not stale.exists()


def test_a_full_disk_keeps_the_previous_checkpoint(run_copy, monkeypatch, cli_error):
    before = _snapshot(run_copy)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("safetensors.torch.save_file", full)
    err = cli_error(["train", "--resume", "--out", run_copy, "--steps", 6])
    assert err.startswith(f"rnnforge train: error: {run_copy}/") and err.endswith(
        ".safetensors: No space left on device")
    after = _snapshot(run_copy)
    assert {k: after[k] for k in (BEST, LAST)} == {k: before[k] for k in (BEST, LAST)}
    assert not [p for p in run_copy.iterdir() if p.name.endswith(".tmp")]


def test_nan_weights_are_never_written(tiny, tmp_path):
    """Weights that became NaN (a step that blew up) do not replace the last good checkpoint."""
    from rnnforge.errors import OptionError

    t = Trainer(tiny(steps=2, eval_every=2))
    t.run()
    before = (tmp_path / "run" / LAST).read_bytes()
    with torch.no_grad():
        t.model.readout.b[0] = float("nan")
    with pytest.raises(OptionError, match="training diverged at step 2 .*the last good checkpoint, .* at "
                                          "step 2, is kept") as e:
        t.save(LAST, {}, with_training_state=True)
    assert e.value.option == "lr"
    assert (tmp_path / "run" / LAST).read_bytes() == before


def test_divergence_at_a_given_step(text_file, tmp_path, monkeypatch, cli_error, tiny_argv):
    """The loss of the fourth training step is NaN: the run stops there, the step-2 checkpoint stays."""
    import torch.nn.functional as F

    real, calls = F.cross_entropy, []

    def nan_at_step_4(*a, **k):
        loss = real(*a, **k)
        if torch.is_grad_enabled():  # training steps, not the held-out evaluation
            calls.append(1)
            if len(calls) == 4:
                return loss * float("nan")
        return loss
    monkeypatch.setattr(F, "cross_entropy", nan_at_step_4)
    out = tmp_path / "run"
    err = cli_error(tiny_argv(text_file, out, "--steps", 6, "--lr", 0.01))
    assert err == (f"rnnforge train: error: --lr 0.01 is likely too high: training diverged at step 4 "
                   f"(the loss became nan) and stopped; the last good checkpoint, {out / LAST} at step 2, "
                   f"is kept")
    monkeypatch.undo()
    assert [r["step"] for r in _rows(out)] == ["2"]
    from rnnforge import checkpoint
    assert checkpoint.read_meta(out / LAST)["step"] == 2


def test_one_line_per_evaluation(text_file, tmp_path, capsys, tiny_argv):
    for progress in ("--no-progress", "--progress"):
        assert main(tiny_argv(text_file, tmp_path / progress, "--steps", 6, progress)) == 0
        lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
        rows = _rows(tmp_path / progress)
        assert len(lines) == 4  # evaluations at 2, 4, 6, then the summary
        for line, row in zip(lines, rows):
            assert line.startswith(f"step {row['step']}/6: train loss {float(row['train_loss']):.4f} "
                                   f"({float(row['train_bpc']):.3f} bpc), held-out {float(row['val_bpc']):.3f} "
                                   f"bpc, best ")


def test_checkpoints_get_the_usual_file_mode(run_dir):
    mask = os.umask(0)
    os.umask(mask)
    for name in (BEST, LAST, "learning_curve.png"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_demo_trains_and_samples(tmp_path, capsys, cli_error):
    out = tmp_path / "demo"
    text = tmp_path / "t.txt"
    text.write_text("The cat sat on the mat. " * 60)
    argv = ["demo", "--data", str(text), "--hidden", "8", "--layers", "1", "--steps", "2",
            "--minutes", "0", "--seq-len", "8", "--batch-size", "2", "--out", str(out), "--no-progress",
            "--sample-length", "20"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "held-out bits per character: " in printed and "sample (temperature 0.7, seed 1337)" in printed
    assert "holds a run" in cli_error(argv)
    assert "--temperature must be > 0" in cli_error(argv + ["--force", "--temperature", "-1"])


def test_an_unexpected_error_shows_its_traceback_and_asks_for_a_report(run_dir, monkeypatch, capsys):
    def broken(*a, **k):
        raise RuntimeError("boom")
    # the package's names `generate`/`sample` are functions, so patch the module itself
    monkeypatch.setattr(sys.modules["rnnforge.charlm.generate"], "sample", broken)
    assert main(["sample", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback (most recent call last):" in err and "RuntimeError: boom" in err
    assert err[-1] == ("rnnforge sample: internal error: this is a bug in rnnforge; please report it with "
                       "the command line and the traceback above")


@pytest.mark.parametrize("argv, message", [
    (["train", "--cell", "transformer"],
     "rnnforge train: error: argument --cell: invalid choice: 'transformer' (choose from 'rnn', 'rnn-tanh', "
     "'gru', 'lstm') (see rnnforge train --help)"),
    (["forecast", "evaluate", "--rolling-recalibration", "maybe"],
     "rnnforge forecast evaluate: error: argument --rolling-recalibration: invalid choice: 'maybe' (choose "
     "from 'on', 'off') (see rnnforge forecast evaluate --help)"),
    (["bogus"], "rnnforge: error: argument COMMAND: invalid choice: 'bogus' (choose from "
                + ", ".join(f"'{c}'" for c in ("train", "sample", "demo", "forecast", "experiment", "bench",
                                               "inspect", "export", "vae")) + ") (see rnnforge --help)"),
])
def test_a_usage_error_is_one_line(argv, message, capsys):
    """argparse's own errors (a bad choice, an unknown subcommand): one line, exit code 2, no usage block."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [message]


def test_python_dash_m_works():
    res = subprocess.run([sys.executable, "-m", "rnnforge", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("rnnforge ")
