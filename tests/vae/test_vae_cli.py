"""``rnnforge vae``: every bad input is one line on stderr and exit code 2; sampling is seeded."""

import pytest

from rnnforge import checkpoint
from rnnforge.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, lines_file):
    d = tmp_path_factory.mktemp("vae_cli") / "run"
    argv = ["vae", "train", "--data", lines_file, "--hidden", "12", "--embed", "6", "--latent", "3",
            "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--eval-lines", "10", "--max-len", "60",
            "--out", d, "--no-progress", "--device", "cpu", "--threads", "1"]
    assert main([str(a) for a in argv]) == 0
    return d


@pytest.mark.parametrize("source", ["prior", "posterior"])
def test_sample_prints_only_lines_and_the_same_seed_the_same_bytes(run_dir, capsys, source):
    argv = ["vae", "sample", str(run_dir), "--from", source, "--n", "4", "--seed", "11"]
    capsys.readouterr()
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    assert first.endswith("\n") and len(first.split("\n")) == 5
    assert main(argv[:-1] + ["12"]) == 0
    assert capsys.readouterr().out != first


def test_interpolate_prints_steps_lines(run_dir, capsys):
    capsys.readouterr()
    assert main(["vae", "interpolate", str(run_dir), "the quick fox.", "lazy dog jugs.", "--steps", "4"]) == 0
    assert len(capsys.readouterr().out.split("\n")) == 5


def test_resume_continues_a_finished_run_with_a_larger_budget(run_dir, tmp_path, capsys):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(run_dir, d)
    assert main(["vae", "train", "--out", str(d), "--resume", "--steps", "6", "--no-progress"]) == 0
    assert "step 6:" in capsys.readouterr().out


def test_lines_longer_than_the_model_takes(tmp_path, vae_cli_error):
    data = tmp_path / "long.txt"
    data.write_text("short line\n" + "x" * 45 + "\nanother one\n", encoding="utf-8")
    err = vae_cli_error(["vae", "train", "--data", data, "--max-len", "40", "--steps", "2", "--out", tmp_path / "r"])
    assert err == (f"rnnforge vae: error: {data}: line 2 has 45 characters, more than the model's maximum "
                   f"of 40; shorten it or train with a larger maximum line length")


def test_an_empty_data_file(tmp_path, vae_cli_error):
    data = tmp_path / "empty.txt"
    data.write_text("\n  \n", encoding="utf-8")
    err = vae_cli_error(["vae", "train", "--data", data, "--steps", "2", "--out", tmp_path / "r"])
    assert err == f"rnnforge vae: error: {data} holds no lines of text; give a file with one text per line"


@pytest.mark.parametrize("flag, value, message", [
    ("--latent", "0", "--latent must be >= 1, got 0"),
    ("--free-bits", "-0.5", "--free-bits must be >= 0, got -0.5"),
    ("--char-dropout", "1", "--char-dropout must be in [0, 1), got 1.0"),
])
def test_bad_training_options(tmp_path, vae_cli_error, lines_file, flag, value, message):
    err = vae_cli_error(["vae", "train", "--data", lines_file, "--steps", "2", "--out", tmp_path / "r", flag, value])
    assert err == f"rnnforge vae: error: {message}"


def test_a_checkpoint_of_another_kind(tmp_path, vae_cli_error):
    path = tmp_path / "lm.safetensors"
    checkpoint.save(path, {}, {"kind": "charlm"})
    for argv in (["vae", "sample", path], ["vae", "interpolate", path, "a b", "c d"],
                 ["vae", "evaluate", path, "--out", tmp_path / "ev"]):
        err = vae_cli_error(argv)
        assert err == (f"rnnforge vae: error: {path} is a 'charlm' checkpoint, not a sequence VAE; give the "
                       f"folder or file that 'rnnforge vae train' wrote")


def test_interpolating_a_line_with_characters_outside_the_vocabulary(run_dir, vae_cli_error):
    err = vae_cli_error(["vae", "interpolate", run_dir, "the quick fox.", "lazy \u00e9 dog \u2603!"])
    assert err == ("rnnforge vae: error: the second line holds characters outside the model's vocabulary: "
                   "'\u00e9', '\u2603', '!'")


def test_interpolating_a_line_longer_than_the_model_takes(run_dir, vae_cli_error):
    err = vae_cli_error(["vae", "interpolate", run_dir, "the " * 20, "lazy dog."])
    assert err == ("rnnforge vae: error: the line given first has 80 characters, more than the model's "
                   "maximum of 60; shorten it or train with a larger maximum line length")


def test_sampling_options(run_dir, vae_cli_error):
    assert vae_cli_error(["vae", "sample", run_dir, "--n", "0"]) == "rnnforge vae: error: --n must be >= 1, got 0"
    assert (vae_cli_error(["vae", "sample", run_dir, "--temperature", "0"])
            == "rnnforge vae: error: --temperature must be > 0, got 0.0")


def test_evaluate_writes_its_report(run_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["vae", "evaluate", str(run_dir), "--out", str(out), "--iw-samples", "3", "--max-lines", "4",
                 "--samples", "5", "--split", "test"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "metrics.csv", "pit_prior.png", "pit_posterior.png", "ks_per_dimension.png"} <= names
    report = (out / "report.md").read_text()
    assert "importance-weighted NLL (K=3)" in report and "## Ex1" in report


def test_sampling_the_posterior_of_a_checkpoint_without_one(run_dir, tmp_path, vae_cli_error):
    tensors, meta = checkpoint.load(run_dir / "best.safetensors")
    path = tmp_path / "bare.safetensors"
    checkpoint.save(path, {k: v for k, v in tensors.items() if not k.startswith("posterior.")},
                    {k: v for k, v in meta.items() if k not in ("format", "versions")})
    assert main(["vae", "sample", str(path), "--n", "2"]) == 0  # the prior needs no fit
    err = vae_cli_error(["vae", "sample", path, "--from", "posterior"])
    assert err == (f"rnnforge vae: error: {path} holds no fitted aggregate posterior; run evaluate on it, "
                   f"or sample from the prior")


def test_the_readout_flag_reaches_the_model_and_cannot_change_on_resume(run_dir, tmp_path, lines_file,
                                                                        vae_cli_error, capsys):
    from rnnforge.vae.checkpoint import load_vae

    d = tmp_path / "rz"
    argv = ["vae", "train", "--data", lines_file, "--hidden", "12", "--embed", "6", "--latent", "3",
            "--steps", "2", "--eval-every", "2", "--batch-size", "8", "--eval-lines", "10", "--max-len", "60",
            "--out", d, "--no-progress", "--device", "cpu", "--threads", "1", "--readout-z"]
    assert main([str(a) for a in argv]) == 0
    model = load_vae(d)[0]
    assert model.config.readout_z is True and model.readout.delta.shape[1] == 12 + 3
    err = vae_cli_error(["vae", "train", "--out", d, "--resume", "--steps", "4", "--no-readout-z"])
    assert err == (f"rnnforge vae: error: --readout-z is False, but the run in {d} was trained with True; "
                   f"leave it out to resume with the run's value")
    capsys.readouterr()
    assert main(["vae", "sample", str(d), "--n", "3", "--seed", "2"]) == 0
    assert len(capsys.readouterr().out.split("\n")) == 4
