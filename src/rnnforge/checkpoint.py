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


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then move the finished file onto ``path`` atomically.

    The temporary file is ``.NAME.*.tmp`` beside ``path`` (see :func:`remove_temporaries`);
    the result gets the mode a plain ``open`` would give it (0644 under a 022 umask), where
    ``mkstemp`` alone would leave 0600. A failed write (a full disk) raises an OSError that
    names ``path`` and leaves the previous file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # after the write: some writers replace the file they are given
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # the writer's own error may not say which file; OSError(errno, ...) keeps the subclass
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def temporaries(folder: str | os.PathLike, names) -> list[Path]:
    """Left-over temporary files of interrupted :func:`atomic_write` calls for ``names`` in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for name in names for p in folder.glob(f".{name}.*.tmp") if p.is_file())


def remove_temporaries(folder: str | os.PathLike, names) -> list[Path]:
    """Delete what :func:`temporaries` finds (a killed write leaves its file); returns them."""
    found = temporaries(folder, names)
    for p in found:
        p.unlink(missing_ok=True)
    return found


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
    return _load(path, device)


def _load(path, device="cpu", with_tensors: bool = True):
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass the checkpoint file inside it")
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
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
    if not isinstance(meta, dict):
        raise UserError(f"{path}: checkpoint metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: unknown checkpoint format {meta.get('format')!r}; "
                        f"this rnnforge reads {FORMAT}")
    return tensors, meta


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint without reading its tensors."""
    return _load(path, with_tensors=False)[1]


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
