"""Every flag of ``rnnforge forecast`` checked before any work (exit 2, one line naming the flag),
the overwrite guard on OUT, and the library calls behind the command line."""

import json

import numpy as np
import pytest
import torch

from rnnforge.errors import OptionError, UserError
from rnnforge.forecast import ForecastConfig, evaluate, load_checkpoint, predict, train
from rnnforge.forecast.series import parse_csv

PREFIX = "rnnforge forecast: error: "
TINY = ["--context", "8", "--horizon", "2", "--hidden", "4", "--layers", "1", "--steps", "2",
        "--batch-size", "2", "--val-windows", "0"]


@pytest.fixture
def sine_csv(tmp_path):
    p = tmp_path / "sine.csv"
    p.write_text("y\n" + "\n".join(f"{np.sin(i / 3):.4f}" for i in range(40)) + "\n")
    return p


BAD_FLAGS = [
    (["--lr", "nan"], "--lr must be > 0, got nan"),
    (["--lr", "inf"], "--lr must be > 0, got inf"),
    (["--lr", "-1"], "--lr must be > 0, got -1.0"),
    (["--minutes", "nan"], "--minutes must be >= 0, got nan"),
    (["--minutes", "inf"], "--minutes must be >= 0, got inf"),
    (["--steps", "-5"], "--steps must be >= 0, got -5"),
    (["--steps", "0"], "--steps and --minutes are both 0: give a step budget, a time budget, or both"),
    (["--batch-size", "0"], "--batch-size must be in [1, 1048576], got 0"),
    (["--hidden", "0"], "--hidden must be >= 1, got 0"),
    (["--layers", "0"], "--layers must be in [1, 64], got 0"),
    (["--horizon", "0"], "--horizon must be >= 1, got 0"),
    (["--context", "1"], "--context must be >= 2 steps (a window is scaled by its context's spread), got 1"),
    (["--season", "0"], "--season must be >= 1, got 0"),
    (["--threads", "-2"], "--threads must be in [0, 4096], got -2"),
    (["--seed", "-1"], "--seed must be in [0, 18446744073709551615], got -1"),
    (["--seed", str(2 ** 64)], "--seed must be in [0, 18446744073709551615], got 18446744073709551616"),
    (["--seed", str(2 ** 64 - 1), "--ensemble", "2"],
     "--seed 18446744073709551615 + 1 (one seed per ensemble member) is beyond 64 bits"),
    (["--ensemble", "0"], "--ensemble must be in [1, 1000], got 0"),
    (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    (["--dropout", "nan"], "--dropout must be in [0, 1), got nan"),
    (["--dropout", "-0.1"], "--dropout must be in [0, 1), got -0.1"),
    (["--val-windows", "-1"], "--val-windows must be >= 0, got -1"),
    (["--holdout-windows", "-1"], "--holdout-windows must be >= 0, got -1"),
    (["--device", "tpu"], "--device 'tpu' is not a device; use cpu, cuda, cuda:N or auto"),
    (["--delimiter", "ab"], "--delimiter must be one character that cannot be part of a number or a quoted "
                            "cell (, ; tab |), got 'ab'"),
    (["--lags", "2,3"], "--lags must be 'auto' or whole numbers >= 1 that include 1, got [2, 3]"),
    (["--rollout-steps", "3", "--rollout-lr", "nan"], "--rollout-lr must be > 0, got nan"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_bad_train_flag(flags, message, sine_csv, tmp_path, refused):
    line = refused(["forecast", "train", "--data", sine_csv, *TINY, *flags, "--out", tmp_path / "run"])
    assert line == PREFIX + message
    assert not (tmp_path / "run").exists()


def test_absurd_hidden_says_how_much_memory(sine_csv, tmp_path, refused):
    line = refused(["forecast", "train", "--data", sine_csv, *TINY, "--hidden", "1000000", "--out", tmp_path / "r"])
    # 4 gates x (1e6 x (64 + 1e6 + 2)) weights x 16 bytes (weights, gradients, Adam's two moments)
    assert line.startswith(PREFIX + "--hidden 1000000 would need about 58.2 TB for the weights, gradients and "
                                    "optimizer state of 1 layer; this machine has ")


@pytest.mark.parametrize("action, flags, message", [
    ("evaluate", ["--windows", "0"], "--windows must be >= 1, got 0"),
    ("evaluate", ["--samples", "0"], "--samples must be in [1, 1000000], got 0"),
    ("evaluate", ["--gluonts-epochs", "-1"], "--gluonts-epochs must be >= 0, got -1"),
    ("evaluate", ["--lr", "nan"], "--lr must be > 0, got nan"),
    ("evaluate", ["--fan-charts", "-1"], "--fan-charts must be >= 0, got -1"),
    ("evaluate", ["--fan-charts", "some"], "--fan-charts must be 'all' or a whole number, got 'some'"),
    ("predict", ["--samples", "0"], "--samples must be in [1, 1000000], got 0"),
    ("predict", ["--fan-charts", "-3"], "--fan-charts must be >= 0, got -3"),
    ("predict", ["--seed", "-3"], "--seed must be in [0, 18446744073709551615], got -3"),
])
def test_bad_evaluate_and_predict_flags(action, flags, message, sine_csv, tmp_path, refused):
    extra = TINY if action == "evaluate" else []
    line = refused(["forecast", action, "--data", sine_csv, *extra, *flags, "--out", tmp_path / "run"])
    assert line == PREFIX + message


# -- OUT ----------------------------------------------------------------------------------------
def test_overwrite_guard_and_force(sine_csv, tmp_path, refused, capsys):
    from rnnforge.cli import main

    out = tmp_path / "run"
    args = ["forecast", "train", "--data", str(sine_csv), *TINY, "--out", str(out)]
    assert main(args) == 0
    ckpt = out / "forecaster.safetensors"
    before = ckpt.read_bytes()
    message = (f"{out} holds a forecaster (forecaster.safetensors); forecasting has no --resume: use --force "
               f"to replace it, or another --out")
    assert refused([*args, "--seed", "5"]) == PREFIX + message
    assert ckpt.read_bytes() == before  # untouched
    # evaluate trains too, so it is refused the same way; with --checkpoint it writes no forecaster
    assert refused(["forecast", "evaluate", "--data", sine_csv, *TINY, "--windows", "1", "--baselines", "none",
                    "--out", out]) == PREFIX + message
    capsys.readouterr()
    assert main([*args, "--seed", "5", "--force"]) == 0
    assert f"--force: replacing the forecaster {ckpt}" in capsys.readouterr().out
    assert ckpt.read_bytes() != before
    _, meta = load_checkpoint(ckpt)
    assert meta["training"]["seed"] == 5


def test_out_is_a_file_or_under_one(sine_csv, tmp_path, refused):
    f = tmp_path / "file.txt"
    f.write_text("x")
    base = ["forecast", "train", "--data", sine_csv, *TINY]
    assert refused([*base, "--out", f]) == PREFIX + f"--out {f} is a file, not a folder"
    assert refused([*base, "--out", f / "run"]) == PREFIX + f"--out {f / 'run'}: {f} is a file, not a folder"
    assert f.read_text() == "x"


# -- the library calls ----------------------------------------------------------------------------
def test_library_calls_match_the_command_line(sine_csv, tmp_path):
    """train() gives the weights the command line saves; predict() and evaluate() log through
    ``log`` only, and their errors name parameters, not flags."""
    from rnnforge.cli import main

    out = tmp_path / "cli"
    assert main(["forecast", "train", "--data", str(sine_csv), *TINY, "--out", str(out)]) == 0
    cli_model, _ = load_checkpoint(out / "forecaster.safetensors")
    notes = []
    cfg = ForecastConfig(hidden=4, layers=1, steps=2, batch_size=2, val_windows=0)
    model, meta = train(str(sine_csv), cfg, horizon=2, context=8, log=notes.append)
    for name, t in model.state_dict().items():
        assert torch.equal(t, cli_model.state_dict()[name]), name
    assert notes[0] == "data: 1 series (y) of 40 steps, frequency none, season 1; horizon 2, context 8"
    assert meta["data"] == str(sine_csv) and meta["horizon"] == 2 and meta["context"] == 8

    paths = predict((model, meta), out=tmp_path / "lib", samples=6, log=notes.append)
    assert paths.shape == (1, 6, 2) and np.isfinite(paths).all()
    scores = evaluate(str(sine_csv), cfg, out=tmp_path / "ev", windows=1, baselines=["seasonal-naive"],
                      samples=8, horizon=2, context=8, log=notes.append)
    assert set(scores) == {"rnn/quantile/mix x3", "seasonal-naive"}  # no validation windows: the mixture
    assert set(json.loads((tmp_path / "ev" / "scores.json").read_text())) == set(scores)
    for message in notes:
        assert "--" not in message, message

    with pytest.raises(OptionError, match=r"^samples must be in \[1, 1000000\], got 0$"):
        predict((model, meta), out=tmp_path / "lib", samples=0, log=notes.append)
    with pytest.raises(UserError, match=r"^series 'y' has 40 values, too short for context 8 \+ horizon 2 \+ "
                                        r"40 held-out steps \(50 needed\); lower the context or the horizon"):
        train(parse_csv("y\n" + "\n".join(str(i % 7) for i in range(40))), ForecastConfig(steps=1, val_windows=20),
              horizon=2, context=8, log=notes.append)


def test_damaged_checkpoints_are_one_line(sine_csv, tmp_path, refused):
    """A checkpoint with a tensor missing, extra, of the wrong shape or dtype, or not finite."""
    from rnnforge import checkpoint
    from rnnforge.cli import main

    out = tmp_path / "run"
    assert main(["forecast", "train", "--data", str(sine_csv), *TINY, "--out", str(out)]) == 0
    tensors, meta = checkpoint.load(out / "forecaster.safetensors")
    name = "member0.readout.delta"
    assert name in tensors
    damaged = {
        "missing": ({k: v for k, v in tensors.items() if k != name}, f"tensor {name} is missing"),
        "extra": ({**tensors, "member0.extra": torch.zeros(2)},
                  "tensor member0.extra is not part of a forecaster of cell rnn"),
        "shape": ({**tensors, name: torch.zeros(3)},
                  f"tensor {name} is torch.float32 (3,), expected torch.float32 {tuple(tensors[name].shape)}"),
        "dtype": ({**tensors, name: tensors[name].to(torch.int32)},
                  f"tensor {name} is torch.int32 {tuple(tensors[name].shape)}, expected torch.float32"),
        "nan": ({**tensors, name: torch.full_like(tensors[name], float("nan"))},
                f"tensor {name} holds NaN or infinite values"),
    }
    for what, (t, message) in damaged.items():
        path = tmp_path / f"{what}.safetensors"
        checkpoint.save(path, t, {k: v for k, v in meta.items() if k not in ("format", "versions")})
        line = refused(["forecast", "predict", "--checkpoint", path, "--out", tmp_path / "p"])
        assert line.startswith(PREFIX + f"{path}: {message}"), (what, line)
