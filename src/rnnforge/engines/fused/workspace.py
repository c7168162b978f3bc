"""Scratch buffers of the fused engine, kept between calls (``WORKSPACE``)."""

from __future__ import annotations

import math
import threading

import torch


class Workspace:
    """Scratch buffers reused from one call to the next.

    Why: a fresh multi-megabyte tensor costs a page fault per 4 KiB page on
    first touch (filling a fresh 32 MiB buffer takes about four times as long
    as filling a reused one), and a forward+backward of the fused engine touches
    hundreds of MiB of gates and gradients. A buffer is handed out again only
    when nothing else holds its memory -- no view, no autograd node that saved
    it -- which ``torch._C._storage_Use_Count`` tells exactly. Buffers returned
    to callers (outputs, gradients) never come from here. ``max_bytes`` caps
    what is kept idle; ``clear()`` drops everything.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._bufs: dict[tuple, list[torch.Tensor]] = {}
        self._lock = threading.Lock()
        self._count = getattr(torch._C, "_storage_Use_Count", None)
        self._lone = self._uses(torch.empty(1)) if self._count is not None else None

    def _uses(self, t: torch.Tensor) -> int:
        return self._count(t.untyped_storage()._cdata)

    def take(self, shape, like: torch.Tensor, zero: bool = False) -> torch.Tensor:
        """An uninitialised (or zeroed) tensor of ``shape``, dtype and device of ``like``."""
        numel = math.prod(shape)
        if self._count is None or numel < 4096:  # small: the allocator's own cache is fine
            return (torch.zeros if zero else torch.empty)(shape, dtype=like.dtype, device=like.device)
        # inference-mode tensors cannot be updated in place outside inference mode: keep apart
        key = (numel, like.dtype, like.device, torch.is_inference_mode_enabled())
        with self._lock:
            bufs = self._bufs.setdefault(key, [])
            for base in bufs:
                if self._uses(base) == self._lone:
                    out = base.view(shape)
                    break
            else:
                base = torch.empty(numel, dtype=like.dtype, device=like.device)
                bufs.append(base)
                out = base.view(shape)
                self._trim()
        return out.zero_() if zero else out

    def _trim(self) -> None:
        total = sum(b.numel() * b.element_size() for bs in self._bufs.values() for b in bs)
        for key in list(self._bufs):
            if total <= self.max_bytes:
                break
            keep = []
            for b in self._bufs[key]:
                if self._uses(b) == self._lone:
                    total -= b.numel() * b.element_size()
                else:
                    keep.append(b)
            self._bufs[key] = keep

    def clear(self) -> None:
        with self._lock:
            self._bufs.clear()


WORKSPACE = Workspace()
