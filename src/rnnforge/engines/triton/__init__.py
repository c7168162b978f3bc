"""The triton engine: the notes' cells on CUDA as Triton kernels, forward and backward.

Per layer and direction (G gates of H units stacked in the cell's ``GATES`` order,
which is torch.nn's; shape symbols as in layers.py):

forward
    ``xg = x W_ih^T + b_ih`` for all T steps as one GEMM (torch, outside the kernels),
    kept in float32. Then the recurrence as one persistent kernel
    (``kernels.forward_kernel``): program p owns the units ``[p*BH, (p+1)*BH)`` of every
    gate, loads its slice of ``W_hh`` (G x BH x H) once and keeps it on chip (registers
    and shared memory, as the compiler places it) for all T steps, and at each step
    reads the whole ``h_{t-1}`` from a global (T+1, B, H) float32 buffer, forms its
    slice of the G pre-activations with ``tl.dot`` (float32 accumulation), runs the
    cell's gate arithmetic fused, and writes its slice of ``h_t`` (and of ``C_t``, and
    the activations the backward reads). Between steps
    the programs meet at a grid barrier: an atomic counter in global memory, release
    on arrival, acquire while spinning. A barrier needs every program resident at once,
    so there are at most as many programs as SMs, one per SM; with one program (the
    weights fit in one: small H) there is no barrier at all.
backward
    The same in reverse time (``kernels.backward_kernel``): per step each program forms
    its slice ``dh_t = dgates_{t+1} W_hh[:, slice]`` (plus the GRU's direct
    ``s * dh_{t+1}``, plus the output's gradient) with its column slice of ``W_hh`` held
    on chip, then its slice of ``dgates_t`` elementwise from dh, dC and the saved
    activations, writes it into a full (T, B, G*H) float32 buffer, and meets the others
    at the barrier; one pass more forms dh0. The weight, bias and input gradients are
    GEMMs over all steps outside the kernel:
    ``dW_hh = dgates^T H_prev``, ``dW_ih = dgates^T X``, ``dx = dgates W_ih`` (float32).

The GRU's reset gate acts after the product, ``r * (W_hn z_prev + b_hn)`` (``b_hn`` is the
cell's ``b_gamma``, the ``b_hh`` of ``fused.stacked_weights``). With ``lengths`` a row
past its end keeps its state and outputs zero, as torch.nn's packed sequences.

dtypes: float32 (``tl.dot`` in IEEE float32, no TF32, so results match the float32
reference engine), bfloat16 and float16 (weights and the dot's operands in the half
dtype, state, gate arithmetic and accumulation in float32; outputs in the half dtype;
under the interpreter, whose bfloat16 ``tl.dot`` is broken, bfloat16 products run in
float32).
Under autocast (CUDA, and CPU under the interpreter alike) the layer runs in autocast's
dtype and returns it, as torch.nn's layers do; gradients reach the float32 parameters.

Widths (``function.max_width``, ``function.WIDTHS_SM90``): on H100 and H200 (SM 9.0,
132 SMs, 227 KiB of shared memory per block) the LSTM and the GRU run up to H = 512, both
RNNs up to H = 1024, in every dtype. Why: a program of BH = 16 units (``tl.dot``'s
smallest tile) holds G x 16 x H recurrent weights, and the compiler keeps that slice and
the state tile for ``tl.dot`` in shared memory. Compiled for sm_90 (ptxas and cuobjdump,
no GPU needed), the kernels at those widths take at most 192 KiB of shared memory with
no register spills; twice as wide they need 257 to 384 KiB, more than a block may have.
A GPU with less shared memory per block gets proportionally narrower limits, and the
grid barrier allows at most one program per SM (H <= 16 x SMs). Past the limit, for
float64 and without triton ``why_not`` refuses and names ``native`` (cuDNN; for the
sigmoid RNN the ``reference`` engine). None of this has been run on a GPU yet: the
kernels are tested through Triton's interpreter (below); the persistent multi-program
launch is GPU-only.

Launches (``function.plan``, ``function.STRATEGY``): "one" (one program for all
units, no barrier: small H, and every interpreter run by default), "persistent"
(CUDA: co-resident programs and the grid barrier), "steps" (several programs, one
launch per step, the launch boundary as the barrier: how the interpreter tests the
multi-program slicing, since it runs programs one after another and a barrier between
them would deadlock).

CPU tensors run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before the
kernels are first imported), for tests; ``engine="auto"`` never picks this engine on
CPU, and on CUDA only once ``engines.TRITON_IN_AUTO`` is on (off until the kernels have
run and been timed on a GPU). triton is optional (``pip install 'rnnforge[gpu]'``): it is imported only when this
engine runs, and without it ``why_not`` says so.

The modules: ``engine`` (``TritonEngine``: why_not, the compute dtype, the layers via
``fused.engine.run_layers``), ``function`` (``TritonRecurrence``, the launch plans and
width limits), ``kernels`` (the two Triton kernels; imports triton), ``resources``
(the kernels compiled for sm_90: shared memory, registers, spills at the limits).
"""

from .engine import TritonEngine, triton_missing
from .function import TritonRecurrence, max_width

__all__ = ["TritonEngine", "TritonRecurrence", "max_width", "triton_missing"]
