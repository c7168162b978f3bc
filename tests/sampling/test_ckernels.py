"""The compiled sampling kernel (rnnforge._ckernels): its Philox stream against
the published Random123 answers and a pure-Python Philox, its inversion against
the torch-ops path of the same tables, and how it builds, caches and fails."""
import math
import shutil
import warnings

import numpy as np
import pytest
import scipy.stats as st
import torch

from rnnforge import _ckernels as ck
from rnnforge.sampling import from_pdf
from rnnforge.sampling.inversion import backends

F64 = torch.float64
INF = math.inf

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler on this machine")

M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox_py(ctr, key, rounds=10):
    """Philox4x32 from the paper's definition (Salmon et al., SC'11), in Python ints."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(rounds):
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK, (p0 >> 32) ^ c3 ^ k1, p0 & MASK
        k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
    return c0, c1, c2, c3


def uniforms_py(key64, n):
    """The first n uniforms of the kernel's stream, by its documented rule: block b
    is Philox of counter (b lo, b hi, 0, 0); each block gives two 53-bit doubles."""
    out = []
    for b in range((n + 1) // 2):
        c0, c1, c2, c3 = philox_py((b & MASK, b >> 32, 0, 0), (key64 & MASK, key64 >> 32))
        out += [((c0 << 32 | c1) >> 11) * 2.0 ** -53, ((c2 << 32 | c3) >> 11) * 2.0 ** -53]
    return out[:n]


def c_uniforms(key64, n, threads=1):
    out = torch.empty(n, dtype=F64)
    ck.load().rf_philox_uniform(key64, n, out.data_ptr(), threads)
    return out


# Random123's kat_vectors for philox4x32_10: counter, key -> output
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK, MASK, MASK, MASK), (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr, key, expect", KAT)
def test_philox_known_answers(ctr, key, expect):
    import ctypes
    c = (ctypes.c_uint32 * 4)(*ctr)
    k = (ctypes.c_uint32 * 2)(*key)
    o = (ctypes.c_uint32 * 4)()
    ck.load().rf_philox4x32_10(c, k, o)
    assert tuple(o) == expect
    assert philox_py(ctr, key) == expect          # the test's own Philox is right too


@pytest.mark.parametrize("key", [0, 1, 0xDEADBEEFCAFEF00D, 2 ** 64 - 1])
def test_uniform_stream_is_the_documented_philox_stream(key):
    n = 203                                       # crosses several 64-uniform batches, odd tail
    assert c_uniforms(key, n).tolist() == uniforms_py(key, n)


def test_uniform_stream_is_uniform_and_thread_independent():
    one = c_uniforms(12345, 1_000_003, threads=1)
    assert 0.0 <= one.min().item() and one.max().item() < 1.0
    assert st.kstest(one.numpy(), "uniform").pvalue > 1e-3
    # lag-1 correlation of a good stream is N(0, 1/n)
    x = one.numpy() - 0.5
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 5 / math.sqrt(x.size)
    for threads in (2, 3, 7):
        assert torch.equal(c_uniforms(12345, 1_000_003, threads=threads), one)
    assert not torch.equal(c_uniforms(12346, 1000), one[:1000])


def _key_of(generator):
    """The key sample() draws from the generator (it draws two 32-bit halves)."""
    k = torch.randint(0, 1 << 32, (2,), dtype=torch.int64, generator=generator).tolist()
    return k[0] | (k[1] << 32)


@pytest.mark.parametrize("pdf, support", [
    (lambda x: torch.exp(-0.5 * x * x), (-INF, INF)),
    (lambda x: x * (1 - x) ** 4, (0.0, 1.0)),
    (lambda x: torch.exp(-0.5 * (x + 40) ** 2) + torch.exp(-0.5 * (x - 40) ** 2), (-INF, INF)),
])
def test_compiled_sample_is_the_inverse_of_its_uniforms(pdf, support):
    s = from_pdf(pdf, support=support, backend="c")
    ref = from_pdf(pdf, support=support, backend="torch")
    n = 300_001
    x = s.sample(n, generator=torch.Generator().manual_seed(3))
    u = c_uniforms(_key_of(torch.Generator().manual_seed(3)), n)
    torch.testing.assert_close(x, ref.ppf(u), rtol=1e-10, atol=1e-12)
    assert torch.equal(s.sample(n, generator=torch.Generator().manual_seed(3)), x)   # reproducible
    torch.set_num_threads(2)
    assert torch.equal(s.sample(n, generator=torch.Generator().manual_seed(3)), x)   # any thread count


def test_compiled_ppf_matches_torch_path_including_edges():
    pdf = lambda x: torch.exp(-0.5 * (x + 40) ** 2) + torch.exp(-0.5 * (x - 40) ** 2)  # noqa: E731
    s = from_pdf(pdf, backend="c")
    ref = from_pdf(pdf, backend="torch")
    bounds = ref._bounds
    u = torch.cat([torch.rand(100_000, dtype=F64, generator=torch.Generator().manual_seed(1)),
                   torch.tensor([0.0, 1.0, 0.5, 1e-300, 1 - 2 ** -53]), bounds,
                   torch.nextafter(bounds, torch.zeros_like(bounds)),
                   torch.nextafter(bounds, torch.ones_like(bounds))])
    torch.testing.assert_close(s.ppf(u), ref.ppf(u), rtol=1e-12, atol=1e-12)
    assert s.ppf(torch.tensor([0.0, 1.0])).tolist() == [-INF, INF]
    us, _ = u.sort()
    x = s.ppf(us)
    assert bool((x[1:] >= x[:-1]).all())


def test_sampler_copies_without_its_pointers():
    import copy
    s = from_pdf(lambda x: torch.exp(-0.5 * x * x), backend="c")
    a = s.sample(1000, generator=torch.Generator().manual_seed(0))
    t = copy.deepcopy(s)                          # the copy's table points into its own tensors
    assert t._ctab is None
    del s
    assert torch.equal(t.sample(1000, generator=torch.Generator().manual_seed(0)), a)


def test_backend_errors():
    pdf = lambda x: torch.exp(-0.5 * x * x)  # noqa: E731
    with pytest.raises(ValueError, match="backend must be one of"):
        from_pdf(pdf, backend="numba")
    with pytest.raises(ValueError, match="runs on CPU only"):
        from_pdf(pdf, device="cuda", backend="c")


@pytest.fixture
def fresh_kernels(monkeypatch, tmp_path):
    """A kernel module state with nothing loaded yet and an empty cache."""
    monkeypatch.setattr(ck, "_libs", {})
    monkeypatch.setattr(ck, "_errors", {})
    monkeypatch.setattr(backends, "_warned_fallback", False)
    monkeypatch.setenv("RNNFORGE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_build_is_cached_and_atomic(fresh_kernels):
    lib = ck.load()
    files = sorted(fresh_kernels.iterdir(), key=lambda f: f.suffix)  # the library and its recorded hash
    assert [f.suffix for f in files] == [".sha256", ".so"] and files[1].name.startswith("pinv-")
    files = files[1:]
    assert ck.load() is lib                       # loaded once per process
    ck._libs.clear()
    mtime = files[0].stat().st_mtime_ns
    ck.load()
    assert files[0].stat().st_mtime_ns == mtime   # the cache is reused, not rebuilt


def test_unavailable_kernel_is_said_never_silent(fresh_kernels, monkeypatch):
    monkeypatch.setenv("CC", "false")             # a "compiler" that fails every build
    with pytest.raises(ck.KernelUnavailable, match="building pinv.c with false failed"):
        ck.load()
    pdf = lambda x: torch.exp(-0.5 * x * x)  # noqa: E731
    with pytest.raises(ValueError, match="backend='c' cannot run: building pinv.c"):
        from_pdf(pdf, backend="c")
    s = from_pdf(pdf)                             # auto: warns once, then uses torch ops
    with pytest.warns(RuntimeWarning, match="compiled sampling kernel is unavailable"):
        x = s.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert st.kstest(x.numpy(), "norm").pvalue > 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.sample(10)                              # only once per process
        from_pdf(pdf, backend="torch").sample(10)
    assert not list(fresh_kernels.glob("*.so")) and not list(fresh_kernels.glob("tmp*"))


def test_disabled_by_environment(fresh_kernels, monkeypatch):
    monkeypatch.setenv("RNNFORGE_NO_CKERNELS", "1")
    with pytest.raises(ValueError, match="disabled by RNNFORGE_NO_CKERNELS"):
        from_pdf(lambda x: torch.exp(-0.5 * x * x), backend="c")
