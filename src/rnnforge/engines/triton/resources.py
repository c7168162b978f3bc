"""What the kernels take on an SM 9.0 GPU, measured without one: ``python -m
rnnforge.engines.triton.resources`` compiles them for sm_90 (triton's own ptxas) and
prints each kernel's shared memory, registers per thread and local (spill) bytes at the
width limits of ``function.WIDTHS_SM90``, and at twice those widths.

The limits are the widest launch plans whose kernels fit a block's 227 KiB of shared
memory without spilling registers; the kernels have not been run on a GPU here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

import torch

from .function import GATES, WIDTHS_SM90, _pow2

_FWD = ["xg_ptr", "w_ptr", "bhh_ptr", "h_ptr", "c_ptr", "acts_ptr", "out_ptr", "len_ptr",
        "bar_ptr", "t0", "t1", "B", "H"]
_BWD = ["dout_ptr", "w_ptr", "h_ptr", "c_ptr", "acts_ptr", "dg_ptr", "dn_ptr", "dh_ptr", "dc_ptr",
        "len_ptr", "bar_ptr", "t0", "t1", "T", "FINISH", "B", "H"]
_TY = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _signature(args, wdt):
    sig = {}
    for a in args:
        if a in ("w_ptr", "out_ptr"):
            sig[a] = "*" + wdt
        elif a == "len_ptr":
            sig[a] = "*i64"
        elif a == "bar_ptr":
            sig[a] = "*i32"
        else:
            sig[a] = "*fp32" if a.endswith("_ptr") else "i32"
    return sig


def usage(mode: str, dtype: torch.dtype, H: int, block_h: int = 16, arch: int = 90):
    """``{"forward": (shared bytes, registers, local bytes), "backward": (...)}`` of the
    persistent plan (``block_h`` units per program, 16 batch rows, lengths, grid barrier)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import kernels as K

    HP = max(16, _pow2(H))
    base = dict(MODE=K.MODES[mode], G=GATES[mode], BB=16, HP=HP, BH=min(block_h, HP),
                HAS_LEN=True, SYNC=block_h < HP, UPCAST=False, IEEE=dtype == torch.float32)
    cuobjdump = triton.__path__[0] + "/backends/nvidia/bin/cuobjdump"
    result = {}
    for name, kernel, args, extra in (("forward", K.forward_kernel, _FWD, {"HAS_BHH": mode == "gru"}),
                                      ("backward", K.backward_kernel, _BWD, {})):
        const = {**base, **extra}
        sig = {**_signature(args, _TY[dtype]), **{k: "constexpr" for k in const}}
        compiled = triton.compile(ASTSource(kernel, sig, constexprs=const),
                                  target=GPUTarget("cuda", arch, 32), options={"num_warps": 8})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compiled.asm["cubin"])
            f.flush()
            res = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True,
                                 text=True, check=True).stdout.replace("\n", " ")
        m = re.search(r"REG:(\d+).*?LOCAL:(\d+)", res)
        result[name] = (int(compiled.metadata.shared), int(m.group(1)), int(m.group(2)))
    return result


def main(argv=None) -> int:
    modes = (argv or sys.argv[1:]) or list(WIDTHS_SM90)
    for mode in modes:
        for dtype in (torch.float16, torch.float32):
            for H in (WIDTHS_SM90[mode], 2 * WIDTHS_SM90[mode]):
                u = usage(mode, dtype, H)
                print(f"{mode:12s} {str(dtype):14s} H={H:5d} " + "  ".join(
                    f"{k}: {s // 1024} KiB shared, {r} regs, {l} B local" for k, (s, r, l) in u.items()),
                    flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
