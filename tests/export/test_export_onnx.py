"""ONNX: every cell's layer and the character model through torch.onnx.export, run by onnxruntime
and compared with eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.export import Dim

from rnnforge.charlm.model import CharLM, CharLMConfig
from rnnforge.export import export_onnx, onnx_translations, stateful
from rnnforge_testing import MODES, make_layer

from test_export_program import flat, twin

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'rnnforge[onnx]')")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'rnnforge[onnx]')")

#: float32 through two different kernels (ours, onnxruntime's) over a few steps
ATOL = 1e-5
OPERATOR = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_sigmoid": "RNN"}


def session(onnx_program, path):
    onnx_program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("mode", MODES)
def test_layer_through_torch_onnx_export(mode, tmp_path):
    """torch.onnx.export as a user calls it, with rnnforge's translation table: one ONNX recurrent
    operator per layer and direction (the sigmoid RNN as RNN with a Sigmoid activation)."""
    torch.manual_seed(0)
    layer = make_layer(mode, 3, 5, num_layers=2, bidirectional=True, bias=True).eval()
    program = torch.onnx.export(layer, (torch.randn(4, 2, 3),), dynamo=True,
                                dynamic_shapes=({0: Dim("T"), 1: Dim("B")},),
                                custom_translation_table=onnx_translations())
    nodes = [n for n in program.model_proto.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert [n.op_type for n in nodes] == [OPERATOR[mode]] * 4
    if mode.startswith("rnn"):
        acts = {a.name: [s.decode() for s in a.strings] for a in nodes[0].attribute}["activations"]
        assert acts == ["Sigmoid" if mode == "rnn_sigmoid" else "Tanh"]
    run = session(program, tmp_path / "layer.onnx")
    x = torch.randn(6, 3, 3)
    got = run.run(None, {run.get_inputs()[0].name: x.numpy()})
    want = flat(twin(layer)(x))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.detach().numpy(), atol=ATOL, rtol=1e-5)


def test_char_model_one_step_at_a_time(tmp_path):
    """State in and out: the ONNX file run one character at a time gives the eager model's
    logits for the whole sequence."""
    torch.manual_seed(1)
    model = CharLM(CharLMConfig(vocab_size=9, cell="lstm", hidden=6, layers=2)).eval()
    wrapped, args, dims, names, outs = stateful(model)
    run = session(export_onnx(wrapped, args, dynamic_shapes=dims, input_names=names,
                              output_names=outs), tmp_path / "charlm.onnx")
    assert [i.name for i in run.get_inputs()] == ["ids", "h0", "c0"]
    assert [o.name for o in run.get_outputs()] == ["logits", "h_n", "c_n"]
    ids = torch.randint(0, 9, (3, 5))
    want, (h, c) = model(ids)
    state = {"h0": np.zeros((2, 3, 6), np.float32), "c0": np.zeros((2, 3, 6), np.float32)}
    steps = []
    for t in range(5):
        logits, state["h0"], state["c0"] = run.run(None, {"ids": ids[:, t:t + 1].numpy(), **state})
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, 1), want.detach().numpy(), atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(state["c0"], c.detach().numpy(), atol=ATOL, rtol=1e-5)
