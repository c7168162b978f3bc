"""Checkpoint files built by hand with safetensors: a bad one is refused in one line naming what
is wrong; one with the layout written before the package move loads and resumes."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from rnnforge.checkpoint import FORMAT
from rnnforge.cli import main
from rnnforge.charlm import CharLM, CharLMConfig, load_model
from rnnforge.charlm.train import BEST, LAST

VOCAB = " abcdefg"


def _write(path, tensors, meta):
    save_file(tensors, str(path), metadata={"rnnforge": json.dumps({"format": FORMAT, **meta})})
    return path


@pytest.fixture(scope="module")
def good():
    """The tensors and metadata of a valid sampling checkpoint of a tiny GRU."""
    torch.manual_seed(0)
    cfg = CharLMConfig(len(VOCAB), "gru", 6, 2, 4)
    model = CharLM(cfg)
    tensors = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    return tensors, {"kind": "charlm", "model": model.config_dict(), "vocab": VOCAB}


def test_a_hand_built_checkpoint_loads(good, tmp_path):
    tensors, meta = good
    model, vocab, _ = load_model(_write(tmp_path / "ok.safetensors", tensors, meta))
    assert vocab.chars == VOCAB
    for k, v in model.state_dict().items():
        assert torch.equal(v, tensors[f"model.{k}"])


def _broken(good, change):
    tensors, meta = copy.deepcopy(good[0]), copy.deepcopy(good[1])
    change(tensors, meta)
    return tensors, meta


CASES = [
    ("no vocab", lambda t, m: m.pop("vocab"), "the checkpoint's metadata has no 'vocab'"),
    ("model not an object", lambda t, m: m.update(model=[1, 2]),
     "the checkpoint's 'model' must be an object, got list"),
    ("no hidden", lambda t, m: m["model"].pop("hidden"), "the checkpoint's model config has no 'hidden'"),
    ("hidden a string", lambda t, m: m["model"].update(hidden="6"),
     "the checkpoint's model 'hidden' must be an integer, got '6'"),
    ("hidden a boolean", lambda t, m: m["model"].update(hidden=True),
     "the checkpoint's model 'hidden' must be an integer, got True"),
    ("tie_weights a number", lambda t, m: m["model"].update(tie_weights=1),
     "the checkpoint's model 'tie_weights' must be true or false, got 1"),
    ("unknown key", lambda t, m: m["model"].update(heads=4), "model config has unknown keys ['heads']"),
    ("negative layers", lambda t, m: m["model"].update(layers=-1),
     "the checkpoint's model config is invalid: layers must be >= 1, got -1"),
    ("unknown cell", lambda t, m: m["model"].update(cell="mamba"), "cell 'mamba' is unknown"),
    ("vocab size", lambda t, m: m.update(vocab=VOCAB + "h"),
     "the checkpoint's vocabulary has 9 characters (9 distinct) for a vocab_size of 8"),
    # GRU, H = 1e9, E = 4, V = 8: layer 0 3H(E + H) + 4H, layer 1 3H(2H) + 4H, embedding VE,
    # readout VH + V: 9H^2 + 28H + 40; the file holds the 532 weights of H = 6
    ("absurd hidden", lambda t, m: m["model"].update(hidden=10**9),
     "(cell gru, hidden 1000000000, layers 2, embed 4) means 9,000,000,028,000,000,040 parameters, "
     "but the file holds 532 weights"),
    ("hidden beyond any memory", lambda t, m: m["model"].update(hidden=10**15), "but the file holds 532 weights"),
    ("NaN weight", lambda t, m: t["model.rnn.cells.1.gamma"].view(-1).__setitem__(3, float("nan")),
     "tensor 'model.rnn.cells.1.gamma' holds NaN or infinite values"),
    ("inf weight", lambda t, m: t["model.readout.b"].__setitem__(0, float("-inf")),
     "tensor 'model.readout.b' holds NaN or infinite values"),
    ("integer weights", lambda t, m: t.update({"model.readout.b": torch.zeros(8, dtype=torch.int64)}),
     "tensor 'model.readout.b' holds torch.int64, not floating-point weights"),
    ("missing tensor", lambda t, m: t.pop("model.rnn.cells.0.b_r"), "tensor 'model.rnn.cells.0.b_r' is missing"),
    ("extra tensor", lambda t, m: t.update({"model.rnn.cells.2.b_r": torch.zeros(6)}),
     "tensor 'model.rnn.cells.2.b_r' is not part of a gru model"),
    ("wrong shape", lambda t, m: t.update({"model.readout.delta": torch.zeros(8, 5)}),
     "tensor 'model.readout.delta' has shape [8, 5], the model config needs [8, 6]"),
    ("foreign kind", lambda t, m: m.update(kind="forecast"), "is a 'forecast' checkpoint, not a character model"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_checkpoint_is_one_line(good, tmp_path, cli_error, change, message):
    tensors, meta = _broken(good, change)
    path = _write(tmp_path / "bad.safetensors", tensors, meta)
    err = cli_error(["sample", path, "--prime", "a", "--length", "3"])
    assert err.startswith(f"rnnforge sample: error: {path}: ") or err.startswith(f"rnnforge sample: error: {path} ")
    assert message in err


def test_metadata_that_is_not_an_object(tmp_path, cli_error):
    path = tmp_path / "list.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"rnnforge": "[1, 2]"})
    assert cli_error(["sample", path]).endswith("checkpoint metadata is a JSON list, not an object")


def test_resume_refuses_nan_weights_and_a_torn_optimizer(tiny, tmp_path, cli_error):
    from rnnforge.charlm.train import Trainer

    Trainer(tiny(steps=2, eval_every=2)).run()
    last = tmp_path / "run" / LAST
    tensors = load_file(str(last))
    from rnnforge.checkpoint import read_meta

    meta = read_meta(last)
    bad = dict(tensors)
    bad["model.embedding.weight"] = bad["model.embedding.weight"].clone()
    bad["model.embedding.weight"][0, 0] = float("nan")
    _write(last, bad, meta)
    err = cli_error(["train", "--resume", "--out", tmp_path / "run", "--steps", 4])
    assert err.endswith(f"{last}: tensor 'model.embedding.weight' holds NaN or infinite values")
    torn = {k: v for k, v in tensors.items() if k != "rng.torch"}
    _write(last, torn, meta)
    err = cli_error(["train", "--resume", "--out", tmp_path / "run", "--steps", 4])
    assert err.endswith(f"{last}: the training state cannot be restored ('rng.torch' is missing)")


def test_the_layout_written_before_the_package_move_still_loads(tiny, tmp_path, capsys):
    """Metadata exactly as the trainer wrote it before charlm/ was a package (Trainer._meta of
    4952a16: these keys, and its TrainConfig's fields): sample and resume both read it."""
    from rnnforge.charlm.train import Trainer
    from rnnforge.checkpoint import read_meta

    Trainer(tiny(steps=2, eval_every=2)).run()
    old_train = ["data", "cell", "hidden", "layers", "embed", "dropout", "tie_weights", "engine",
                 "batch_size", "seq_len", "steps", "minutes", "lr", "min_lr_ratio", "warmup",
                 "weight_decay", "clip", "eval_every", "val_fraction", "seed", "device", "amp", "out",
                 "resume", "threads", "progress", "tensorboard"]
    old_keys = ["kind", "model", "vocab", "train", "step", "elapsed", "best_val_bpc", "metrics", "engine",
                "world"]
    for name, extra in ((BEST, []), (LAST, ["optimizer"])):
        path = tmp_path / "run" / name
        tensors, meta = load_file(str(path)), read_meta(path)
        old = {k: meta[k] for k in old_keys + extra}
        old["train"] = {k: meta["train"][k] for k in old_train}
        old["train"]["data"] = tiny().data  # written as given, relative or not
        old["versions"] = {"rnnforge": "0.1.0", "torch": "2.4.0", "python": "3.11.9"}
        _write(path, tensors, old)
        assert sorted(read_meta(path)) == sorted(old_keys + extra + ["format", "versions"])
    model, vocab, meta = load_model(tmp_path / "run")
    assert meta["step"] == 2 and model.config.hidden == 24
    assert main(["sample", str(tmp_path / "run"), "--prime", "the", "--length", "5", "--seed", "0"]) == 0
    assert main(["train", "--resume", "--out", str(tmp_path / "run"), "--steps", "4"]) == 0
    assert "step 4/4: train loss" in capsys.readouterr().out
