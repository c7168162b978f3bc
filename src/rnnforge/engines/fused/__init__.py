"""The fused engine: our own forward and backward through time, on CPU.

Per layer and direction (shape symbols as in layers.py; G gates, G*H stacked
pre-activations in the cell's ``GATES`` order, which is torch.nn's):

forward
    xg = x W_ih^T + b, one GEMM for all T steps, written straight into the gate
    buffer (T*B, G*H); then per step t one GEMM ``gates_t += h_{t-1} W_hh^T`` in
    place and the gate arithmetic as a handful of in-place / ``out=`` kernels
    (LSTM 8, GRU 7, RNN 2 kernels per step; no autograd graph is recorded).

backward (hand-written, run once per layer-direction)
    The gate activations are saved by the forward. Every factor of the step
    Jacobians that does not depend on the incoming gradient (``σ'``, ``tanh'``,
    products of saved gates) is computed for all T steps at once, in a few large
    elementwise kernels, before the loop. The loop then carries only what is
    truly sequential -- dh (and dC for the LSTM) -- with one recurrent GEMM
    ``dh_{t-1} += dgates_t W_hh`` and 1 to 4 small kernels per step
    (LSTM 5, GRU 4, RNN 2). The gradients of the weights and of the input are
    single GEMMs over all steps: ``dW_hh = dgates^T H_prev`` as
    (G*H, T*B) x (T*B, H), ``dW_ih = dgates^T X``, ``dx = dgates W_ih``.

At batch sizes up to ``C_LOOP_MAX_BATCH`` and widths up to ``C_LOOP_MAX_HIDDEN``
the two loops over time (not the big ops around them) run in C instead
(``rnnforge/_ckernels/rnn.c``, built on first use). Without a C compiler the
torch-op loops run, and a warning says so once. Double backward is not
supported: asking for it (``create_graph=True``) raises a clear error. Calls
that record no graph of the weights (grad off, or frozen weights) keep the
stacked weights, and the LSTM its packed panels, until a parameter changes
(``engine.constant_weights``).

The modules, one job each:

``engine``     ``FusedEngine`` (what it runs; lengths sorted; layers and directions)
               and ``stacked_weights`` (the named parameters, stacked differentiably)
``function``   ``Recurrence``, the torch.autograd.Function of one layer-direction (eager)
``ops``        the same as registered operators (``rnnforge::recurrence`` and its
               backward), which traced calls run: torch.export, torch.compile
``lstm``, ``gru``, ``rnn``
               each cell's forward and backward arithmetic (torch ops or a C loop)
``steps``      per-step views of time-major buffers and the whole-sequence GEMMs
``cloops``     when the C loops run (the limits) and the ctypes call into them
``workspace``  ``WORKSPACE``, the scratch buffers reused between calls

The limits are re-exported here for reading; to change them, set them on
``cloops``, where the dispatch reads them.
"""

from .cloops import C_LOOP_MAX_BATCH, C_LOOP_MAX_HIDDEN, runs_c_loops
from .engine import FusedEngine, stacked_weights
from .function import Recurrence
from .workspace import WORKSPACE, Workspace

__all__ = ["C_LOOP_MAX_BATCH", "C_LOOP_MAX_HIDDEN", "FusedEngine", "Recurrence", "WORKSPACE",
           "Workspace", "runs_c_loops", "stacked_weights"]
