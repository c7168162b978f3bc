"""Self-describing checkpoints: one safetensors file, JSON metadata in its header.

A checkpoint holds tensors (model weights, and for resuming the optimizer state
and RNG states) and a JSON document (config, vocabulary, metrics, engine,
versions) stored under the ``"rnnforge"`` key of the safetensors header. Nothing
is ever unpickled. Writes are atomic: the file is written beside its target,
flushed to disk, then renamed over it, so a kill at any moment leaves either
the old checkpoint or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

FORMAT = "rnnforge-checkpoint/1"
_META_KEY = "rnnforge"


def versions() -> dict[str, str]:
    from . import __version__

    return {"rnnforge": __version__, "torch": torch.__version__, "python": platform.python_version()}


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then move the finished file onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and the JSON-serialisable ``meta`` to ``path`` atomically."""
    from safetensors.torch import save_file

    doc = {"format": FORMAT, "versions": versions(), **meta}
    header = {_META_KEY: json.dumps(doc)}
    # safetensors wants contiguous, unshared CPU tensors
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=header))


def load(path: str | os.PathLike, device: str | torch.device = "cpu"
         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint; a missing, truncated or foreign file is a UserError."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass the checkpoint file inside it")
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for torn files
        raise UserError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if _META_KEY not in header:
        raise UserError(f"{path} is a safetensors file but not an rnnforge checkpoint "
                        f"(no '{_META_KEY}' metadata)")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: checkpoint metadata is not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: unknown checkpoint format {meta.get('format')!r}; "
                        f"this rnnforge reads {FORMAT}")
    return tensors, meta


# -- optimizer state <-> tensors + JSON ----------------------------------------------
def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able skeleton."""
    tensors, skeleton = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        skel = {}
        for k, v in entry.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
                skel[k] = {"tensor": f"optim.{pid}.{k}"}
            else:
                skel[k] = v
        skeleton["state"][str(pid)] = skel
    return tensors, skeleton


def unflatten_optimizer(tensors: dict[str, torch.Tensor], skeleton: dict) -> dict:
    """Inverse of :func:`flatten_optimizer`."""
    state = {}
    for pid, skel in skeleton["state"].items():
        state[int(pid)] = {k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v)
                           for k, v in skel.items()}
    return {"state": state, "param_groups": skeleton["param_groups"]}
