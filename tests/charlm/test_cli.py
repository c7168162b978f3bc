"""The command line: every bad input is one line on stderr and exit code 2."""

import subprocess
import sys

import pytest

from rnnforge.cli import main
from rnnforge.charlm.train import LAST


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, text_file):
    d = tmp_path_factory.mktemp("cli")
    code = main(["train", "--data", str(text_file), "--steps", "4", "--eval-every", "2",
                 "--hidden", "16", "--layers", "1", "--batch-size", "2", "--seq-len", "8",
                 "--out", str(d / "run"), "--no-progress", "--no-tensorboard", "--device", "cpu"])
    assert code == 0
    return d


def _error(capsys, argv, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert pattern in err, err


def test_sample_streams_text(run_dir, capsys):
    assert main(["sample", str(run_dir / "run"), "--prime", "the ", "--length", "30", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "resolved config" in out and "seed = 1" in out


def test_bad_checkpoints(run_dir, tmp_path, capsys):
    _error(capsys, ["sample", str(tmp_path / "missing.safetensors")], "does not exist")
    _error(capsys, ["sample", str(tmp_path)], "holds no checkpoint")
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes((run_dir / "run" / LAST).read_bytes()[:500])
    _error(capsys, ["sample", str(torn)], "corrupt or truncated")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    _error(capsys, ["sample", str(junk)], "not a readable checkpoint")


def test_bad_sampling_options(run_dir, capsys):
    ck = str(run_dir / "run")
    _error(capsys, ["sample", ck, "--prime", "Q#"], "not in the model's vocabulary: 'Q', '#'")
    _error(capsys, ["sample", ck, "--temperature", "0"], "--temperature must be > 0")
    _error(capsys, ["sample", ck, "--top-p", "0"], "--top-p must be in (0, 1]")
    _error(capsys, ["sample", ck, "--top-k", "0"], "--top-k must be at least 1")


def test_bad_training_input(run_dir, tmp_path, capsys, text_file):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok text \xff\xfe more")
    _error(capsys, ["train", "--data", str(bad), "--steps", "1"], "byte 0xff at offset 8")
    short = tmp_path / "short.txt"
    short.write_text("tiny")
    _error(capsys, ["train", "--data", str(short), "--steps", "1"], "corpus is too short")
    _error(capsys, ["train", "--data", str(tmp_path / "none.txt"), "--steps", "1"], "no such file")
    # a demanded half precision where it cannot run is refused, not ignored
    _error(capsys, ["train", "--data", str(text_file), "--steps", "1", "--device", "cpu", "--amp", "fp16"],
           "--amp fp16: mixed precision runs on CUDA here, and the device is cpu")


def test_unknown_cell_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--cell", "transformer"])
    assert e.value.code == 2
    assert "invalid choice: 'transformer'" in capsys.readouterr().err


def test_python_dash_m_works():
    res = subprocess.run([sys.executable, "-m", "rnnforge", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("rnnforge ")
