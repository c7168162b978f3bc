"""Compiled CPU kernels, built on first use with the system C compiler.

The kernels are plain C beside this file (``pinv.c``: inverse transform
sampling; ``rnn.c`` with ``rnn_body.h``: the fused engine's loops over time),
called through ctypes on the data pointers of contiguous CPU tensors: no
Python or torch headers, so a build takes about a second. The shared library
is cached per machine in ``$RNNFORGE_CACHE_DIR`` (default
``$XDG_CACHE_HOME/rnnforge`` or ``~/.cache/rnnforge``) under a name that
hashes the source, the compiler, its flags and the CPU, and is written to a
temporary file and renamed, so two processes building at once cannot leave a
torn file.

Loading a shared library runs its code, so the cache is trusted only when no
one else can write it: the folder must belong to the user and be writable by
no group or other user (it is created 0700). A folder that fails the check is
not used (one warning names it); the kernels are then built in a fresh private
folder (``mkdtemp``), never in a fixed shared path. Each library's SHA-256 is
recorded beside it when it is built, and a library whose bytes no longer match
is rebuilt rather than loaded.

:func:`load` (``load("pinv")``, ``load("rnn")``) returns a library or raises
:class:`KernelUnavailable` saying why (no compiler, a failed build,
``RNNFORGE_NO_CKERNELS=1``); callers that were asked for the compiled path
explicitly turn that into an error, and callers in ``auto`` mode say once that
they use the torch path instead.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import stat
import tempfile
import warnings
from pathlib import Path

_DIR = Path(__file__).parent
# Tried in order; the first that builds is used (the last is the portable one).
# -ffp-contract=fast: fused multiply-adds (ISO C mode would otherwise forbid them,
# halving the throughput of every product in rnn.c).
# -fopenmp: rnn.c hands row blocks to OpenMP threads; libgomp.so.1 is then the one
# torch has already loaded, so both share one thread pool.
_FLAG_SETS = (
    ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffp-contract=fast", "-fopenmp"],
    ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"],
    ["-O3", "-march=native", "-ffp-contract=fast"],
    ["-O3"],
)
#: RNNFORGE_CPU_ISA=avx2: the portable x86-64 kernels (AVX2 + FMA, no AVX-512), whatever the
#: build machine has, so that a test run on an AVX-512 machine also checks the path every other
#: x86 CPU takes. No portable fallback here: a forced build that fails is an error, not a
#: silent test of some other build.
_ISA_FLAG_SETS = {
    "avx2": (["-O3", "-mavx2", "-mfma", "-mno-avx512f", "-ffp-contract=fast", "-fopenmp"],
             ["-O3", "-mavx2", "-mfma", "-mno-avx512f", "-ffp-contract=fast"]),
}
#: the CPU flags (as /proc/cpuinfo names them) a forced ISA needs to run
_ISA_NEEDS = {"avx2": ("avx2", "fma")}
_COMMON = ["-std=c11", "-shared", "-fPIC", "-pthread"]


class KernelUnavailable(RuntimeError):
    """The compiled kernels cannot be built or loaded on this machine."""


class PinvTable(ctypes.Structure):
    """Mirror of ``rf_pinv_table`` in pinv.c (field order and types must match)."""

    _fields_ = [
        ("K", ctypes.c_int64), ("G", ctypes.c_int64), ("ncoef", ctypes.c_int64),
        ("guide", ctypes.c_void_p), ("bounds", ctypes.c_void_p), ("ustart", ctypes.c_void_p),
        ("invw", ctypes.c_void_p), ("lo", ctypes.c_void_p), ("hi", ctypes.c_void_p),
        ("coef", ctypes.c_void_p), ("G2", ctypes.c_int64), ("cell", ctypes.c_void_p),
        ("cell_first", ctypes.c_void_p),
        ("support_lo", ctypes.c_double), ("support_hi", ctypes.c_double),
    ]


# keyed by the library's name, "-<isa>" appended where an instruction set is forced
_libs: dict[str, ctypes.CDLL] = {}
_errors: dict[str, str] = {}
#: the same keys -> the path and compiler flags of the library loaded
built: dict[str, tuple[Path, list[str]]] = {}


def isa() -> str:
    """The instruction set the kernels are built for: ``RNNFORGE_CPU_ISA`` ("native", the
    default: ``-march=native``; or "avx2")."""
    value = os.environ.get("RNNFORGE_CPU_ISA", "").strip().lower() or "native"
    if value != "native" and value not in _ISA_FLAG_SETS:
        raise KernelUnavailable(f"RNNFORGE_CPU_ISA={value!r} is not one of "
                                f"{['native', *sorted(_ISA_FLAG_SETS)]}")
    return value


def cache_dir() -> Path:
    if os.environ.get("RNNFORGE_CACHE_DIR"):
        return Path(os.environ["RNNFORGE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnforge"


def _compiler() -> str:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    raise KernelUnavailable("no C compiler found (set CC, or install gcc or clang)")


def _cpu_tag() -> str:
    """The CPU's feature flags, so a cache shared between machines never hands
    one CPU a library built with -march=native for another."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


_private: Path | None = None  # this process's mkdtemp folder, when the cache folder is refused


def _unsafe(path: Path) -> str | None:
    """Why ``path`` may not hold code we load (None: it is the user's alone)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"it belongs to user id {st.st_uid}, not to this user ({os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others can write to it (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def kernel_dir() -> Path:
    """The folder to build into and load from: the cache folder if it is private, else a
    private temporary folder of this process (after one warning naming the refused one)."""
    global _private
    out = cache_dir()
    try:
        if not out.exists():
            out.mkdir(mode=0o700, parents=True)
        why = _unsafe(out)
    except OSError as e:
        why = f"it cannot be created or read ({e.strerror or e})"
    if why is None:
        return out
    if _private is None:
        _private = Path(tempfile.mkdtemp(prefix="rnnforge-kernels-"))
        warnings.warn(f"rnnforge: not using the kernel cache {out}: {why}; building the compiled kernels "
                      f"in {_private} instead (set RNNFORGE_CACHE_DIR to a folder only you can write)",
                      RuntimeWarning, stacklevel=3)
    return _private


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(target: Path) -> bool:
    """``target`` exists, is a regular file of ours, and its bytes are those recorded at build time."""
    try:
        st = target.lstat()
        recorded = target.with_suffix(".sha256").read_text().strip()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    return _sha256(target) == recorded


def _compile(cc: str, flags: list[str], source_path: Path, target: Path) -> str:
    """Build ``target`` and record its hash; returns '' or the compiler's first error line."""
    out_dir = target.parent
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        r = subprocess.run([cc, *flags, *_COMMON, "-o", tmp, str(source_path), "-lm"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            return (r.stderr.strip().splitlines() or ["(no message)"])[0]
        fd, tmp_hash = tempfile.mkstemp(suffix=".sha256", dir=out_dir)
        with os.fdopen(fd, "w") as f:
            f.write(_sha256(Path(tmp)) + "\n")
        # the hash first: a reader that sees the new hash with the old library rebuilds, never
        # trusts a library the hash does not describe
        os.replace(tmp_hash, target.with_suffix(".sha256"))
        os.replace(tmp, target)
        return ""
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _key(name: str, isa_: str) -> str:
    return name if isa_ == "native" else f"{name}-{isa_}"


def _flag_sets(isa_: str) -> tuple[list[str], ...]:
    if isa_ == "native":
        return _FLAG_SETS
    flags = _cpu_tag().split()
    missing = [f for f in _ISA_NEEDS[isa_] if f not in flags]
    if missing and platform.machine().lower() in ("x86_64", "amd64", "i686", "i386"):
        raise KernelUnavailable(f"RNNFORGE_CPU_ISA={isa_}: this CPU lacks {', '.join(missing)}")
    return _ISA_FLAG_SETS[isa_]


def _build(name: str, isa_: str) -> ctypes.CDLL:
    if os.environ.get("RNNFORGE_NO_CKERNELS"):
        raise KernelUnavailable("disabled by RNNFORGE_NO_CKERNELS")
    flag_sets = _flag_sets(isa_)
    cc = _compiler()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelUnavailable(f"C compiler {cc!r} does not run: {e}") from None
    source_path = _DIR / f"{name}.c"
    # the source and every header beside it: a change to any of them is a new build
    source = b"\0".join(p.read_bytes() for p in [source_path, *sorted(_DIR.glob("*.h"))])
    out_dir = kernel_dir()
    last_error = ""
    for flags in flag_sets:
        tag = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(flags + _COMMON).encode(),
                                         _cpu_tag().encode()])).hexdigest()[:16]
        target = out_dir / f"{name}-{tag}.so"
        if not _intact(target):
            error = _compile(cc, flags, source_path, target)
            if error:
                last_error = error
                continue
        try:
            lib = ctypes.CDLL(str(target))
            built[_key(name, isa_)] = (target, flags)
            return lib
        except OSError as e:
            last_error = str(e)
    raise KernelUnavailable(f"building {source_path.name} with {cc} failed: {last_error}")


def _declare_pinv(lib: ctypes.CDLL) -> None:
    P, i64, u64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int
    tab = ctypes.POINTER(PinvTable)
    lib.rf_pinv_sample.argtypes = [tab, u64, i64, P, i32]
    lib.rf_pinv_ppf.argtypes = [tab, P, i64, P, i32]
    lib.rf_philox_uniform.argtypes = [u64, i64, P, i32]
    lib.rf_philox4x32_10.argtypes = [P, P, P]
    for f in (lib.rf_pinv_sample, lib.rf_pinv_ppf, lib.rf_philox_uniform):
        f.restype = ctypes.c_int
    lib.rf_philox4x32_10.restype = None


def _declare_rnn(lib: ctypes.CDLL) -> None:
    P, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suf in ("_f32", "_f64"):
        sig = {
            # (T, B, H, bs, r0, r1, ...): see rnn_body.h
            "rf_lstm_forward": [i64, i64, i64, P, i64, i64, i64, P, P, P, P, P, P, P, P, P],
            "rf_lstm_backward": [i64, i64, i64, P, i64, i64, P, P, P, P, P, P, P, P],
            "rf_lstm_pack": [i64, i64, i64, P, P, P],
            "rf_transpose": [i64, i64, P, i64, P, i64],
            "rf_gru_forward": [i64, i64, i64, P, i64, i64, P, P, P, P, P, P],
            "rf_gru_backward": [i64, i64, i64, P, i64, i64, P, P, P, P, P],
            "rf_rnn_forward": [i64, i64, i64, P, i64, i64, i32, P, P, P, P, i64, P, P],
            "rf_rnn_backward": [i64, i64, i64, P, i64, i64, P, P, P, P],
            "rf_rnn_backward_direct": [i64, i64, i64, P, i64, i64, i32, P, P, P, P, P],
            "rf_sigmoid": [P, i64],
            "rf_tanh": [P, i64],
        }
        for fn, args in sig.items():
            f = getattr(lib, fn + suf)
            f.argtypes, f.restype = args, None
        f = getattr(lib, "rf_lstm_panel" + suf)
        f.argtypes, f.restype = [], i64
    for fn in ("rf_lstm_sigmoid_f32", "rf_lstm_tanh_f32"):  # the LSTM cell's float activations
        f = getattr(lib, fn)
        f.argtypes, f.restype = [P, i64], None


_DECLARE = {"pinv": _declare_pinv, "rnn": _declare_rnn}


def load(name: str = "pinv") -> ctypes.CDLL:
    """The kernel library ``name`` for the instruction set :func:`isa` names, built on the
    first call; :class:`KernelUnavailable` if it cannot be."""
    isa_ = isa()
    key = _key(name, isa_)
    if key in _libs:
        return _libs[key]
    if key in _errors:
        raise KernelUnavailable(_errors[key])
    try:
        lib = _build(name, isa_)
        _DECLARE[name](lib)
    except KernelUnavailable as e:
        _errors[key] = str(e)
        raise
    _libs[key] = lib
    return lib


def available(name: str = "pinv") -> bool:
    try:
        load(name)
        return True
    except KernelUnavailable:
        return False
