"""The triton engine's tests run its kernels compiled on a GPU when there is one, else
through Triton's interpreter on CPU tensors.

``triton.jit`` reads ``TRITON_INTERPRET`` when the kernels module is imported, so it
is set here, at collection, before any test can import the kernels. Where they were
already imported compiled (a GPU process), the CPU tests skip with the reason.
"""

from __future__ import annotations

import os
import sys

import torch

if not torch.cuda.is_available() and "rnnforge.engines.triton.kernels" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
