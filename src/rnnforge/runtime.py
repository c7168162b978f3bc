"""Where and how a model runs: device, mixed precision, threads and distributed set-up.

Shared by every application (character model, forecaster, VAE, experiments),
so that ``device="auto"`` or ``amp="bf16"`` means the same everywhere and an
impossible request fails the same way.
"""

from __future__ import annotations

import os

import torch

from .errors import OptionError, check_int

#: mixed precision on CUDA. auto takes bfloat16 where the GPU has it, else float16 (with a
#: GradScaler), and nothing on the CPU; bf16 and fp16 are demands, errors where they cannot run.
AMP = ("auto", "bf16", "fp16", "off")

#: more threads than this is a typo, not a machine
MAX_THREADS = 4096


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise OptionError("device", f"{name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type not in ("cpu", "cuda"):
        raise OptionError("device", f"{name!r}: rnnforge runs on cpu or cuda; use one of those or auto")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("device", f"{name}: CUDA is not available here (torch.cuda.is_available() "
                                        f"is False); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError("device", f"{name}: there are {torch.cuda.device_count()} CUDA devices")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``, or None for full precision."""
    if amp not in AMP:
        raise OptionError("amp", f"{amp!r}: choose one of {', '.join(AMP)}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise OptionError("amp", f"{amp}: mixed precision runs on CUDA here, and the device is {device}; "
                                 f"use off (or auto), or a cuda device")
    bf16 = torch.cuda.is_bf16_supported()
    if amp == "bf16" and not bf16:
        raise OptionError("amp", f"bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16")
    return torch.float16 if amp == "fp16" or (amp == "auto" and not bf16) else torch.bfloat16


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)``; 0 keeps torch's default."""
    check_int("threads", threads, low=0, high=MAX_THREADS)
    if threads:
        torch.set_num_threads(threads)


# -- distributed (torchrun) -------------------------------------------------------------------
def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun each rank trains on its own GPU, ``cuda:LOCAL_RANK``.

    NCCL refuses two ranks on one GPU, so a rank without a GPU of its own, or
    one device index named for every rank, is an error that says what to do.
    """
    world = world_size()
    if world == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise OptionError("device", f"{device} names one GPU for all {world} ranks; give cuda "
                                    f"(rank r then takes cuda:LOCAL_RANK) or cpu")
    local, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local >= count:
        raise OptionError("device", f"local rank {local} has no GPU of its own ({count} visible); start "
                                    f"at most {count} processes per node (torchrun --nproc-per-node {count}), "
                                    f"or train on cpu")
    return torch.device("cuda", local)


def dist_setup(device: torch.device) -> tuple[int, int]:
    """(rank, world); initialises the process group under torchrun."""
    world = world_size()
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def leave_process_group() -> None:
    """End a torchrun job cleanly: every rank waits for the others, then the group is destroyed.

    Call it after dropping the DDP wrapper: a wrapper left alive into interpreter shutdown keeps
    gloo's threads alive there, and their teardown now and then aborts a rank that has finished
    its work ("terminate called without an active exception").
    """
    import gc

    import torch.distributed as dist

    if not dist.is_initialized():
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
