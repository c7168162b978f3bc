"""``rnnforge inspect`` end to end, and every bad input as one line with exit code 2."""

import csv

import pytest
import torch

from rnnforge import checkpoint
from rnnforge.charlm import Vocab
from rnnforge.cli import main

from inspect_helpers import TEXT, save_charlm, tiny_model

FAST = ["--look-back", "8", "--look-back-units", "3", "--look-back-positions", "4"]


def _error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err == f"rnnforge inspect: error: {message}", err


def test_inspect_writes_the_page_plots_and_tables(run_dir, corpus_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["inspect", str(run_dir), "--out", str(out), "--length", "0", "--unit", "5", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "resolved config" in printed and "in_quote" in printed
    for name in ("index.html", "heatmap.png", "saturation.png", "time_constants.png", "units.csv", "report.md"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "units.csv").open(encoding="utf-8")))
    assert len(rows) == 2 * 6 * 6  # layers x LSTM quantities x units
    assert {r["quantity"] for r in rows} == {"f", "i", "o", "C~", "C", "z"}
    assert all(r["left_saturated"] for r in rows if r["quantity"] in "fio")
    assert not any(r["left_saturated"] for r in rows if r["quantity"] in ("C", "z"))
    assert sum(1 for r in rows if r["look_back"]) == 2 * 3 * 6  # the sampled units, on every quantity row
    # the default text: the held-out quarter of the run's training text
    corpus = corpus_file.read_text(encoding="utf-8")
    n_val = int(len(corpus) * 0.25)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"{n_val} characters of the run's held-out text" in report
    assert "| in_quote | " in report and "index.html#layer=" in report


def test_inspect_a_given_text_into_the_default_folder(run_dir, capsys):
    assert main(["inspect", str(run_dir / "best.safetensors"), "--prime", 'say "hi" (x)', *FAST]) == 0
    assert "12 characters of the given text" in (run_dir / "inspect" / "report.md").read_text(encoding="utf-8")


def test_bad_input(run_dir, tmp_path, capsys):
    ck = str(run_dir)
    other = tmp_path / "forecast.safetensors"
    checkpoint.save(other, {"w": torch.zeros(2)}, {"kind": "forecast"})
    _error(capsys, ["inspect", str(other)], f"{other} is a 'forecast' checkpoint, not a character model")
    _error(capsys, ["inspect", ck, "--prime", "The ~€"],
           "characters not in the model's vocabulary: '~', '€'; remove them from the text")
    _error(capsys, ["inspect", ck, "--prime", ""], "the text to inspect is empty")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _error(capsys, ["inspect", ck, "--text", str(empty)], "the text to inspect is empty")
    _error(capsys, ["inspect", ck, "--unit", "6"], "--unit must be in [0, 5] for 6 units per layer, got 6")
    _error(capsys, ["inspect", ck, "--unit", "-1"], "--unit must be >= 0, got -1")
    _error(capsys, ["inspect", ck, "--layer", "2"], "--layer must be in [0, 1] for a 2-layer model, got 2")
    _error(capsys, ["inspect", ck, "--quantity", "s"],
           "--quantity 's' is not recorded for the lstm cell; choose one of f, i, o, C~, C, z")
    _error(capsys, ["inspect", ck, "--look-back", "0"], "--look-back must be >= 1, got 0")
    _error(capsys, ["inspect", ck, "--long-term", "nan"], "--long-term must be >= 1.0, got nan")
    _error(capsys, ["inspect", str(tmp_path / "nothing")], f"checkpoint {tmp_path / 'nothing'} does not exist")


def test_missing_training_text_is_named(tmp_path, capsys):
    vocab = Vocab.from_text(TEXT)
    save_charlm(tmp_path / "best.safetensors", tiny_model("gru", vocab), vocab, data=str(tmp_path / "gone.txt"))
    _error(capsys, ["inspect", str(tmp_path)],
           f"the run's training text '{tmp_path / 'gone.txt'}' is not found here, so its held-out part "
           f"cannot be inspected; give a text to inspect instead")
