"""The fused engine's scratch buffers (engines/fused/workspace.py)."""

import torch

from rnnforge.engines import fused
from rnnforge_testing import make_layer


def test_workspace_reuses_only_free_buffers():
    ws = fused.Workspace()
    like = torch.empty(0)
    a = ws.take((64, 128), like)
    b = ws.take((64, 128), like)
    assert a.data_ptr() != b.data_ptr()  # a is still held
    ptr = a.data_ptr()
    del a
    c = ws.take((128, 64), like, zero=True)
    assert c.data_ptr() == ptr and c.shape == (128, 64) and not c.any()


def test_inference_mode_then_training_reuses_no_inference_buffer():
    torch.manual_seed(9)
    layer = make_layer("gru", 3, 4, engine="fused")
    x = torch.randn(50, 4, 3)  # big enough for the workspace (>= 4096 elements)
    with torch.inference_mode():
        a = layer(x)[0]
    out = layer(x)[0]
    out.sum().backward()
    torch.testing.assert_close(out.detach(), a.clone())
