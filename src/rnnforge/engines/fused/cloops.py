"""When the fused engine's loops over time run in C, and how they are called.

At small and moderate batch sizes a step is a small matrix product plus a few
dozen elementwise operations, and one torch op per kernel (each a trip through
the dispatcher and, with threads, the OpenMP pool) costs as much as the
arithmetic. There the loops over time run in ``rnnforge/_ckernels/rnn.c`` on
the engine's own buffers (through ctypes); the big ops before and after them
stay in torch.

The LSTM's two loops run packed products (``rf_lstm_forward``: input
projection, recurrent product and cell in one pass per step; ``rf_lstm_backward``:
the recurrent product with the step's gradient arithmetic), the GRU's and the
RNNs' a register-blocked product on the unpacked weights.

The limits below are where the C loops stop winning against the torch-op loops
(forward+backward, 1 and 2 threads): up to a batch of 64 they win or tie; above
256 units the step's product, their own register-blocked one, fell behind
MKL's GEMM on an Intel Xeon (measured before the LSTM's loops were packed; the
packed forward runs at about 225 GFLOP/s on one AMD EPYC core, B=32, I=H=256, and
is not yet measured there). The measurements: ``benchmarks/bench_engines.py --parts loops``
(batch) and ``--parts wide`` (width), tabled in BENCHMARKS.md's engine section.
The limits are read at each call: change them on this module (tests and the
benchmark do) to force either loop.
"""

from __future__ import annotations

import warnings

import torch

from ... import _ckernels as _ck
from ..gemm import c_loop_max_hidden

C_LOOP_MAX_BATCH = {"lstm": 64, "gru": 64, "rnn": 64}
C_LOOP_MAX_HIDDEN = 256
_C_SUFFIX = {torch.float32: "_f32", torch.float64: "_f64"}
_warned = False


def family(mode: str) -> str:
    """The key of ``C_LOOP_MAX_BATCH`` for a layer mode: both RNNs share one C loop."""
    return "rnn" if mode.startswith("rnn") else mode


def _in_c_range(fam: str, batch: int, hidden: int) -> bool:
    # wider where torch's BLAS is the slow product, so the torch-op loops lose too (engines/gemm.py)
    return batch <= C_LOOP_MAX_BATCH[fam] and hidden <= c_loop_max_hidden(C_LOOP_MAX_HIDDEN, fam)


def runs_c_loops(mode: str, batch: int, hidden: int) -> bool:
    """Whether a ``mode`` layer of ``hidden`` units at this batch size runs its loops over time in C."""
    return _in_c_range(family(mode), batch, hidden) and _loops_built()


@torch.compiler.assume_constant_result
def _loops_built() -> bool:
    """Whether the C loops load (built on the first call). A constant to torch.compile,
    which runs this once while tracing rather than tracing a compiler's start-up."""
    return _ck.available("rnn")


def c_loop(name: str, like: torch.Tensor, batch: int, hidden: int):
    """The C function ``rf_<name>_<dtype>`` (name: ``<family>_forward|backward``),
    or None where the torch loop runs (a batch above the family's entry in
    C_LOOP_MAX_BATCH or more units than C_LOOP_MAX_HIDDEN; or no C compiler,
    said once in a warning)."""
    global _warned
    if not _in_c_range(name.split("_")[0], batch, hidden):  # (fused runs on CPU only: why_not)
        return None
    try:
        lib = _ck.load("rnn")
    except _ck.KernelUnavailable as e:
        if not _warned:
            _warned = True
            warnings.warn(f"rnnforge fused engine: its compiled loops are unavailable ({e}); running "
                          "its torch-op loops, several times slower at small batches", RuntimeWarning,
                          stacklevel=2)
        return None
    return getattr(lib, f"rf_{name}{_C_SUFFIX[like.dtype]}")


def sibling(name: str, like: torch.Tensor):
    """The C function ``rf_<name>_<dtype>`` of the library that ``c_loop`` just returned a
    loop of (its range checked once per call, not again for each helper)."""
    return getattr(_ck.load("rnn"), f"rf_{name}{_C_SUFFIX[like.dtype]}")


def threads_for(B: int) -> int:
    """OpenMP threads for a C loop over B rows: torch's count, one below 8 rows.
    The rows of a recurrence never meet, so each 4-row block runs the whole loop
    over time on whichever thread takes it (rnn_body.h, ROWS_IN_PARALLEL)."""
    n = torch.get_num_threads()
    return 1 if n <= 1 or B < 8 else n


def call(fn, T: int, B: int, H: int, bs, *args) -> None:
    """Call a C loop on rows ``[0, B)`` (several threads: see ``threads_for``).

    Tensors become data pointers, the list of live batch sizes an int64 array,
    None a NULL pointer; every array stays referenced here until the call
    returns. Inputs that are not contiguous are copied; the buffers written in
    place are always the engine's own contiguous ones."""
    keep = [None if bs is None else torch.tensor(bs, dtype=torch.int64)]
    for a in args:
        keep.append(a.contiguous() if torch.is_tensor(a) else a)
    ptrs = [a.data_ptr() if torch.is_tensor(a) else a for a in keep]
    n = threads_for(B)
    fn(T, B, H, ptrs[0], 0, B if n == 1 else -n, *ptrs[1:])
