"""``rnnforge export``: character models and forecasters to pt2 and ONNX, and what it refuses."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from rnnforge import checkpoint
from rnnforge.charlm.model import CharLM, CharLMConfig
from rnnforge.cli import main
from rnnforge.forecast import checkpoint as forecast_checkpoint
from rnnforge.forecast.model import Ensemble, Forecaster, ModelConfig
from rnnforge_testing import assert_close


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """A run folder holding an (untrained) GRU character model's best checkpoint."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("charlm")
    config = CharLMConfig(vocab_size=4, cell="gru", hidden=5, layers=2)
    model = CharLM(config).eval()
    checkpoint.save(run / "best.safetensors", {"model." + k: v for k, v in model.state_dict().items()},
                    {"kind": "charlm", "model": asdict(config), "vocab": "abcd"})
    return run, model


@pytest.fixture(scope="module")
def forecaster_run(tmp_path_factory):
    torch.manual_seed(1)
    run = tmp_path_factory.mktemp("forecast")
    model = Forecaster(ModelConfig(cell="lstm", hidden=4, layers=2)).eval()
    forecast_checkpoint.save(run / forecast_checkpoint.FILENAME, model, {})
    return run, model


def fail(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_char_model_to_pt2_runs_with_plain_torch(char_run, capsys, tmp_path):
    run, model = char_run
    out = tmp_path / "c.pt2"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert f"wrote the character model as pt2 to {out}" in capsys.readouterr().err
    program = torch.export.load(out).module()
    ids, h = torch.randint(0, 4, (3, 6)), torch.randn(2, 3, 5)
    logits, h_n = program(ids, h)
    want, want_h = model(ids, h)
    assert_close(logits, want.detach(), "logits")
    assert_close(h_n, want_h.detach(), "h_n")


def test_forecaster_to_pt2_and_onnx(forecaster_run, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'rnnforge[onnx]')")
    import onnxruntime as ort

    run, model = forecaster_run
    assert main(["export", str(run)]) == 0
    assert main(["export", str(run), "--format", "onnx"]) == 0
    x, h, c = torch.randn(2, 7, model.spec.num_inputs), torch.randn(2, 2, 4), torch.randn(2, 2, 4)
    out, (h_n, c_n) = model.rnn(x, (h, c))
    want = model.readout(out).detach()
    got = torch.export.load(run / "model.pt2").module()(x, h, c)
    assert_close(got[0], want, "pt2 parameters")
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    params, _, c_got = session.run(None, {"x": x.numpy(), "h0": h.numpy(), "c0": c.numpy()})
    np.testing.assert_allclose(params, want.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(c_got, c_n.detach().numpy(), atol=1e-5, rtol=1e-5)


def test_existing_output_is_refused_unless_forced(char_run, capsys, tmp_path):
    run, _ = char_run
    out = tmp_path / "model.pt2"
    out.write_text("keep me")
    line = fail(["export", str(run), "--out", str(out)], capsys)
    assert line == f"rnnforge export: error: --force is needed to replace {out}, which exists"
    assert out.read_text() == "keep me"
    assert main(["export", str(run), "--out", str(out), "--force"]) == 0
    assert torch.export.load(out) is not None


def test_unknown_format(char_run, capsys):
    line = fail(["export", str(char_run[0]), "--format", "tflite"], capsys)
    assert line == "rnnforge export: error: --format 'tflite' is unknown; choose one of pt2, onnx"


def test_the_suffix_of_out_chooses_the_format(forecaster_run, capsys, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'rnnforge[onnx]')")
    import onnxruntime as ort

    run, model = forecaster_run
    out = tmp_path / "f.ONNX"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert f"wrote the forecaster as onnx to {out}" in capsys.readouterr().err
    x, h, c = torch.randn(1, 3, model.spec.num_inputs), torch.randn(2, 1, 4), torch.randn(2, 1, 4)
    params, _, _ = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy(), "h0": h.numpy(), "c0": c.numpy()})
    np.testing.assert_allclose(params, model.readout(model.rnn(x, (h, c))[0]).detach().numpy(),
                               atol=1e-5, rtol=1e-5)


def test_a_format_that_contradicts_the_suffix_is_refused(char_run, capsys, tmp_path):
    out = tmp_path / "m.onnx"
    line = fail(["export", str(char_run[0]), "--format", "pt2", "--out", str(out)], capsys)
    assert line == (f"rnnforge export: error: --format is pt2, but --out {out} names a .onnx file; name the "
                    f"file .pt2, or leave --format out to write onnx")
    assert not out.exists()
    # any other suffix is the user's choice: the format named, or pt2
    assert main(["export", str(char_run[0]), "--out", str(tmp_path / "m.bin")]) == 0
    assert torch.export.load(tmp_path / "m.bin") is not None


@pytest.mark.parametrize("engine, why", [
    ("reference", "steps the cells in a Python loop"),
    ("native", "calls torch's kernels, which torch.export traces step by step")])
def test_an_engine_that_cannot_be_exported(char_run, capsys, engine, why):
    line = fail(["export", str(char_run[0]), "--engine", engine], capsys)
    assert line == (f"rnnforge export: error: --engine '{engine}' cannot be exported: it {why}, which "
                    f"would fix the program to one sequence length; use fused")


def test_auto_that_picks_an_unrolled_engine_says_to_use_fused(tmp_path, capsys):
    """An LSTM wider than the C loops' limit: engine='auto' picks torch's kernels there."""
    config = CharLMConfig(vocab_size=3, cell="lstm", hidden=300, layers=1)
    model = CharLM(config)
    checkpoint.save(tmp_path / "best.safetensors", {"model." + k: v for k, v in model.state_dict().items()},
                    {"kind": "charlm", "model": asdict(config), "vocab": "abc"})
    line = fail(["export", str(tmp_path), "--engine", "auto"], capsys)
    assert line.startswith("rnnforge export: error: LSTM: engine 'native' (chosen by auto) cannot be "
                           "exported with a dynamic sequence length")
    assert line.endswith("use engine='fused', whose loop is one operator that runs any length")
    assert main(["export", str(tmp_path)]) == 0  # the default engine, fused


def test_ensembles_and_other_files_are_refused(tmp_path, capsys):
    members = [Forecaster(ModelConfig(cell="gru", hidden=3, layers=1)) for _ in range(2)]
    forecast_checkpoint.save(tmp_path / "f.safetensors", Ensemble(members), {})
    line = fail(["export", str(tmp_path / "f.safetensors")], capsys)
    assert line == (f"rnnforge export: error: {tmp_path / 'f.safetensors'} holds an ensemble of 2 "
                    f"forecasters; export exports one network: train without an ensemble to export it")
    line = fail(["export", str(tmp_path / "none")], capsys)
    assert line == f"rnnforge export: error: checkpoint {tmp_path / 'none'} does not exist"
    (tmp_path / "empty").mkdir()
    line = fail(["export", str(tmp_path / "empty")], capsys)
    assert "holds no checkpoint" in line
