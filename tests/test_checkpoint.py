"""rnnforge.checkpoint: atomic writes with the usual file mode, a full disk, left-over temporaries."""

import errno
import os

import pytest
import torch

from rnnforge import checkpoint
from rnnforge.errors import UserError


def test_save_load_round_trip_and_metadata_alone(tmp_path):
    path = tmp_path / "c.safetensors"
    t = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int32)}
    checkpoint.save(path, t, {"kind": "test", "x": [1, 2]})
    tensors, meta = checkpoint.load(path)
    assert torch.equal(tensors["a"], t["a"]) and torch.equal(tensors["b"], t["b"])
    assert meta["kind"] == "test" and meta["x"] == [1, 2] and meta["format"] == checkpoint.FORMAT
    assert checkpoint.read_meta(path) == meta


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        checkpoint.save(tmp_path / "c.safetensors", {"a": torch.zeros(2)}, {})
        checkpoint.atomic_write(tmp_path / "t.txt", lambda tmp: open(tmp, "w").write("x"))
        with open(tmp_path / "plain", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    want = (tmp_path / "plain").stat().st_mode & 0o777
    assert want == 0o666 & ~umask
    for name in ("c.safetensors", "t.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"a": torch.ones(3)}, {"v": 1})
    before = path.read_bytes()

    def full(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as e:
        checkpoint.atomic_write(path, full)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert str(e.value) == f"[Errno 28] No space left on device: '{path}'"
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.safetensors"]
    with pytest.raises(PermissionError):  # the errno still picks the OSError subclass
        checkpoint.atomic_write(path, lambda tmp: (_ for _ in ()).throw(OSError(errno.EACCES, "denied")))


def test_left_over_temporaries_are_found_and_removed(tmp_path):
    keep = [tmp_path / "best.safetensors", tmp_path / ".other.x.tmp", tmp_path / ".best.safetensors.tmp"]
    stale = [tmp_path / ".best.safetensors.abc123.tmp", tmp_path / ".last.safetensors.q.tmp"]
    for p in keep + stale:
        p.write_bytes(b"x")
    names = ("best.safetensors", "last.safetensors")
    assert checkpoint.temporaries(tmp_path, names) == sorted(stale)
    assert checkpoint.remove_temporaries(tmp_path, names) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)
    assert checkpoint.temporaries(tmp_path / "missing", names) == []


def test_foreign_files_are_user_errors(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(plain))
    with pytest.raises(UserError, match="not an rnnforge checkpoint"):
        checkpoint.read_meta(plain)
    with pytest.raises(UserError, match="is a folder"):
        checkpoint.load(tmp_path)
