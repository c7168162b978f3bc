"""The triton engine's torch.autograd.Function (one layer-direction) and its launch plans.

``TritonRecurrence.apply(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths)`` has the
fused engine's ``Recurrence`` signature, so the two engines share ``fused.engine.run_layers``
(``bs`` is not read here: the kernels mask each row by ``lengths`` themselves). Inputs,
weights and states arrive in one compute dtype (float32, bfloat16 or float16); the
recurrence keeps float32 state and accumulates in float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

#: the widest layer per cell on an SM 9.0 GPU (H100, H200: 132 SMs, 227 KiB of shared memory
#: per block), the same in float32, bfloat16 and float16: programs of 16 units, 16 batch rows
#: per block. Compiled for sm_90 (ptxas, no GPU needed), the widest kernels take at most
#: 192 KiB of shared memory and spill no registers; twice as wide takes 257 to 384 KiB,
#: past what one block may have (the compiler stages the slice of W_hh and the state
#: tile through shared memory for tl.dot, so shared memory grows with G x H)
WIDTHS_SM90 = {"lstm": 512, "gru": 512, "rnn_tanh": 1024, "rnn_sigmoid": 1024}
#: shared memory per block on SM 9.0, what ``WIDTHS_SM90`` was measured against
SMEM_SM90 = 227 * 1024
#: the SM count the width limits are stated for where no GPU answers (H100 and H200: 132)
DEFAULT_SMS = 132
#: one program runs the whole recurrence (no barrier) while G x H x H weights are at most
#: this many: the weights of one program at the widest measured configuration, halved
ONE_PROGRAM_WEIGHTS = 16384
GATES = {"rnn_tanh": 1, "rnn_sigmoid": 1, "lstm": 4, "gru": 3}


class Plan(NamedTuple):
    """How one layer-direction is launched: ``nprog`` programs of ``block_h`` units each,
    ``block_b`` batch rows per block, ``hp`` the width padded to a power of two; ``steps``:
    one launch per time step (the launch boundary orders the steps); ``sync``: one
    persistent launch with a grid barrier."""
    nprog: int
    hp: int
    block_h: int
    block_b: int
    steps: bool
    sync: bool
    num_warps: int


#: how the recurrence is launched: "auto" (one program where its weights fit, else one
#: persistent launch of co-resident programs on CUDA), "one" (one program for all units),
#: "steps" (``BLOCK_H`` units per program, one launch per step) or "persistent" (CUDA only)
STRATEGY = "auto"
#: units per program for "steps" and "persistent"; None: 16, what the widths were measured with
BLOCK_H: int | None = None


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _floor2(n: int) -> int:
    return 1 << max(0, n.bit_length() - 1)


def max_width(mode: str, sms: int = DEFAULT_SMS, smem: int = SMEM_SM90) -> int:
    """The widest H the kernels run for ``mode`` on a GPU with ``sms`` SMs and ``smem`` bytes
    of shared memory per block: ``WIDTHS_SM90`` scaled by the shared memory, and at most
    16 units per SM (one resident program of 16 units per SM, for the grid barrier)."""
    return min(_floor2(WIDTHS_SM90[mode] * smem // SMEM_SM90), _floor2(16 * sms))


def device_limits(device: torch.device) -> tuple[int, int]:
    """``(SMs, shared memory per block)`` of a CUDA device."""
    props = torch.cuda.get_device_properties(device)
    smem = getattr(props, "shared_memory_per_block_optin", SMEM_SM90)
    return props.multi_processor_count, smem


def plan(mode: str, B: int, H: int, device: torch.device, interpreted: bool) -> Plan:
    G = GATES[mode]
    strategy = STRATEGY
    cuda = device.type == "cuda" and not interpreted
    minimum = 16 if cuda else 1  # tl.dot wants 16 in every dimension on the GPU
    HP = max(minimum, _pow2(H))
    # batch blocks of 16 rows on the GPU (tl.dot's smallest tile; wider blocks multiply the
    # shared memory the compiled kernels stage their products through)
    BB = 16 if cuda else min(_pow2(B), 64)
    if strategy == "auto":
        strategy = "one" if G * HP * HP <= ONE_PROGRAM_WEIGHTS or not cuda else "persistent"
    if strategy == "one":
        return Plan(1, HP, HP, BB, False, False, 8 if G * HP * HP >= 1 << 14 else 4)
    if strategy == "persistent" and not cuda:
        raise ValueError("the persistent multi-program launch needs a GPU: its grid barrier "
                         "deadlocks under Triton's interpreter, which runs programs one by one")
    if strategy not in ("steps", "persistent"):
        raise ValueError(f"unknown STRATEGY {strategy!r}; choose 'auto', 'one', 'steps' or "
                         f"'persistent'")
    sms = device_limits(device)[0] if cuda else DEFAULT_SMS
    BH = min(max(minimum, _pow2(BLOCK_H or 16)), HP)
    nprog = math.ceil(H / BH)
    if strategy == "persistent" and nprog > sms:
        raise ValueError(f"{nprog} programs of {BH} units exceed the {sms} SMs: a grid barrier "
                         f"needs every program resident")
    return Plan(nprog, HP, BH, BB, strategy == "steps", strategy == "persistent" and nprog > 1, 8)


def _kernels():
    from . import kernels  # triton, imported on first use

    return kernels


class TritonRecurrence(torch.autograd.Function):
    """One layer-direction on the triton kernels: input projection (one GEMM), the
    recurrence (``forward_kernel``), and its own backward (``backward_kernel`` plus
    the weight and input gradients as GEMMs over all steps)."""

    @staticmethod
    def forward(ctx, mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths):
        K = _kernels()
        T, B, I = x.shape
        GH, H = w_hh.shape
        G = GH // H
        f32 = torch.float32
        x2 = x.reshape(T * B, I)
        # every step's input projection at once; the kernels read it in float32
        xg = (torch.addmm(b_ih, x2, w_ih.t()) if b_ih is not None else x2 @ w_ih.t())
        xg = xg.to(f32).contiguous()
        hbuf = torch.empty((T + 1, B, H), dtype=f32, device=x.device)
        hbuf[0] = h0
        if mode == "lstm":
            cbuf = torch.empty_like(hbuf)
            cbuf[0] = c0
        else:
            cbuf = hbuf  # not read
        acts = (torch.empty((T, B, 4 * H), dtype=f32, device=x.device)
                if mode in ("lstm", "gru") else hbuf)
        out = torch.empty((T, B, H), dtype=x.dtype, device=x.device)
        w = w_hh.contiguous()
        bhh = b_hh.to(f32).contiguous() if b_hh is not None else hbuf
        lens = lengths.contiguous() if lengths is not None else hbuf
        p = plan(mode, B, H, x.device, K.INTERPRETED)
        const = _constants(K, mode, G, H, x.dtype, p, lengths is not None)
        windows = [(t, t + 1) for t in range(T)] if p.steps else [(0, T)]
        with _on(x.device):
            for t0, t1 in windows:
                bar = torch.zeros(1, dtype=torch.int32, device=x.device)
                K.forward_kernel[(p.nprog,)](xg, w, bhh, hbuf, cbuf, acts, out, lens, bar,
                                             t0, t1, B, H, HAS_BHH=b_hh is not None, **const)
        ctx.mode, ctx.has_b_ih, ctx.has_b_hh = mode, b_ih is not None, b_hh is not None
        ctx.save_for_backward(x, w_ih, w_hh, hbuf, cbuf if mode == "lstm" else None,
                              acts if mode in ("lstm", "gru") else None, lengths)
        h_n = hbuf[T].to(x.dtype, copy=True)  # a row past its end kept its last state
        c_n = cbuf[T].to(x.dtype, copy=True) if mode == "lstm" else x.new_empty(0)
        return out, h_n, c_n

    @staticmethod
    def backward(ctx, d_out, d_hn, d_cn):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the triton engine's backward is not differentiable (no double backward): "
                "use engine='reference' for higher-order gradients")
        K = _kernels()
        x, w_ih, w_hh, hbuf, cbuf, acts, lengths = ctx.saved_tensors
        mode = ctx.mode
        T, B, I = x.shape
        GH, H = w_hh.shape
        G = GH // H
        f32 = torch.float32
        dout = d_out.to(f32).contiguous()
        dh = d_hn.to(f32, copy=True).contiguous()  # becomes dh0
        dc = d_cn.to(f32, copy=True).contiguous() if mode == "lstm" else dh
        dg = torch.empty((T, B, GH), dtype=f32, device=x.device)
        dn = torch.empty((T, B, H), dtype=f32, device=x.device) if mode == "gru" else dg
        lens = lengths.contiguous() if lengths is not None else dg
        p = plan(mode, B, H, x.device, K.INTERPRETED)
        const = _constants(K, mode, G, H, x.dtype, p, lengths is not None)
        # (t0, t1, finish): with one launch per step, dh0 needs a launch of its own
        windows = ([(t, t + 1, 0) for t in reversed(range(T))] + [(0, 0, 1)] if p.steps
                   else [(0, T, 1)])
        w = w_hh.contiguous()
        with _on(x.device):
            for t0, t1, finish in windows:
                bar = torch.zeros(1, dtype=torch.int32, device=x.device)
                K.backward_kernel[(p.nprog,)](
                    dout, w, hbuf, cbuf if cbuf is not None else hbuf,
                    acts if acts is not None else hbuf, dg, dn, dh, dc, lens, bar,
                    t0, t1, T, finish, B, H, **const)
        need = ctx.needs_input_grad
        dG = dg.view(T * B, GH)
        if mode == "gru":  # the candidate's input side takes dz~, its recurrent side r * dz~
            dG_in = torch.cat([dg[..., :2 * H], dn], -1).view(T * B, GH)
            db_hh = dg[..., 2 * H:].sum((0, 1)).to(w_hh.dtype) if ctx.has_b_hh else None
        else:
            dG_in, db_hh = dG, None
        # the weight and input gradients: one float32 GEMM each over all T*B rows
        dx = (dG_in @ w_ih.to(f32)).view(T, B, I).to(x.dtype) if need[1] else None
        dw_ih = (dG_in.t() @ x.reshape(T * B, I).to(f32)).to(w_ih.dtype) if need[2] else None
        db_ih = dG_in.sum(0).to(w_ih.dtype) if ctx.has_b_ih and need[3] else None
        dw_hh = (dG.t() @ hbuf[:-1].reshape(T * B, H)).to(w_hh.dtype)
        dh0 = dh.to(x.dtype)
        dc0 = dc.to(x.dtype) if mode == "lstm" else None
        return None, dx, dw_ih, db_ih, dh0, dc0, dw_hh, db_hh, None, None


def _constants(K, mode, G, H, dtype, p: Plan, has_len: bool) -> dict:
    return dict(MODE=K.MODES[mode], G=G, BB=p.block_b, HP=p.hp, BH=p.block_h, HAS_LEN=has_len,
                SYNC=p.sync, UPCAST=K.INTERPRETED and dtype == torch.bfloat16,
                IEEE=dtype == torch.float32,
                num_warps=p.num_warps)


def _on(device: torch.device):
    """Launch on the tensors' GPU (a no-op context elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    import contextlib

    return contextlib.nullcontext()
