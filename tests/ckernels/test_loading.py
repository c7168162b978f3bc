"""The compiled kernels are built into, and loaded from, a folder only this user can write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rnnforge import _ckernels as ck

pytestmark = pytest.mark.skipif(not ck.available("pinv"), reason="no C compiler: the kernels cannot be built")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A kernel module with no library loaded yet and its cache in ``tmp_path/cache``."""
    monkeypatch.setattr(ck, "_libs", {})
    monkeypatch.setattr(ck, "_errors", {})
    monkeypatch.setattr(ck, "_private", None)
    monkeypatch.setenv("RNNFORGE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _loaded_path(lib) -> Path:
    return Path(lib._name)


def test_the_cache_is_created_private_and_used(fresh):
    lib = ck.load("pinv")
    assert _loaded_path(lib).parent == fresh
    assert (fresh.stat().st_mode & 0o777) == 0o700
    so = _loaded_path(lib)
    assert so.with_suffix(".sha256").read_text().strip() == ck._sha256(so)


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_library_planted_in_a_writable_folder_is_never_loaded(fresh, mode):
    # build once to learn the library's name, then plant a file of that name in a shared folder
    name = _loaded_path(ck.load("pinv")).name
    planted_dir = fresh.parent / "shared"
    planted_dir.mkdir()
    os.chmod(planted_dir, mode)
    planted = planted_dir / name
    planted.write_bytes(b"not a library: loading it would run the planter's code")
    planted.with_suffix(".sha256").write_text(ck._sha256(planted))
    os.environ["RNNFORGE_CACHE_DIR"] = str(planted_dir)
    ck._libs.clear()
    with pytest.warns(RuntimeWarning, match=rf"not using the kernel cache {planted_dir}: others can write "
                                            rf"to it \(mode {mode:o}\); building the compiled kernels in "):
        lib = ck.load("pinv")
    where = _loaded_path(lib).parent
    assert where != planted_dir and where.name.startswith("rnnforge-kernels-")
    assert (where.stat().st_mode & 0o777) == 0o700
    assert planted.read_bytes().startswith(b"not a library")


def test_a_folder_of_another_user_is_refused(fresh, monkeypatch):
    fresh.mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(fresh).st_uid + 1)
    with pytest.warns(RuntimeWarning, match="belongs to user id"):
        out = ck.kernel_dir()
    assert out != fresh


def test_a_library_whose_bytes_changed_is_rebuilt(fresh):
    so = _loaded_path(ck.load("pinv"))
    good = so.read_bytes()
    # tampered or torn after its build (a new file: the loaded one stays mapped in this process)
    bad = so.with_name("tampered")
    bad.write_bytes(good[:-16] + b"\0" * 16)
    os.replace(bad, so)
    ck._libs.clear()
    lib = ck.load("pinv")
    assert _loaded_path(lib) == so
    assert so.read_bytes() == good  # built anew from the source: same compiler, same bytes
    assert lib.rf_philox_uniform is not None


def test_a_library_without_its_recorded_hash_is_rebuilt(fresh):
    so = _loaded_path(ck.load("pinv"))
    so.with_suffix(".sha256").unlink()
    ck._libs.clear()
    ck.load("pinv")
    assert so.with_suffix(".sha256").read_text().strip() == ck._sha256(so)
