"""The triton engine's tests run its kernels compiled on a GPU when there is one, else
through Triton's interpreter on CPU tensors.

``triton.jit`` reads ``TRITON_INTERPRET`` when the engine's kernels module is imported
(its first run in a process), so without a GPU every test of this folder runs with it
set; the engine imports the kernels only once it accepts a request, so no test outside
this folder has imported them compiled before. The variable is set per test, not for the
session, so that the rest of the suite (and the processes its tests start) keeps the
engine's CPU refusal.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
