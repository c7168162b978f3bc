"""from_pdf / from_cdf (PINV-style numerical inversion) against scipy.stats."""
import functools
import math

import numpy as np
import pytest
import scipy.stats as st
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs

from rnnforge.sampling import from_cdf, from_pdf

F64 = torch.float64
INF = math.inf


class _Mix:
    """Two unit normals at -40 and +40: the density underflows to exactly 0 between."""

    def cdf(self, x):
        return 0.5 * st.norm.cdf(x, -40) + 0.5 * st.norm.cdf(x, 40)

    def support(self):
        return (-INF, INF)


# name: (pdf on torch tensors (unnormalised), support, scipy reference)
CASES = {
    "normal": (lambda x: torch.exp(-0.5 * x * x), (-INF, INF), st.norm()),
    "gamma1.5": (lambda x: torch.sqrt(x) * torch.exp(-x), (0.0, INF), st.gamma(1.5)),
    "beta2,5": (lambda x: x * (1 - x) ** 4, (0.0, 1.0), st.beta(2, 5)),
    "t3": (lambda x: (1 + x * x / 3) ** -2, (-INF, INF), st.t(3)),
    "cauchy": (lambda x: 1 / (1 + x * x), (-INF, INF), st.cauchy()),
    "mixture": (lambda x: torch.exp(-0.5 * (x + 40) ** 2) + torch.exp(-0.5 * (x - 40) ** 2), (-INF, INF), _Mix()),
}


@functools.lru_cache(maxsize=None)
def built(name, backend="auto"):
    pdf, sup, _ = CASES[name]
    return from_pdf(pdf, support=sup, backend=backend)


MID = (torch.arange(100_000, dtype=F64) + 0.5) / 100_000


@pytest.mark.parametrize("name", list(CASES))
def test_u_error_below_resolution_against_scipy(name):
    s = built(name)
    ref = CASES[name][2]
    x = s.ppf(MID).numpy()
    assert np.abs(ref.cdf(x) - MID.numpy()).max() <= 1e-10          # independent CDF
    assert s.u_error(100_000).max_error <= 1e-10                     # the sampler's own metric
    # its CDF (integrated density) agrees with scipy's
    xs = torch.linspace(-5, 5, 101, dtype=F64) if name != "mixture" else torch.linspace(-45, 45, 181, dtype=F64)
    np.testing.assert_allclose(s.cdf(xs).numpy(), ref.cdf(xs.numpy()), atol=1e-10)


@pytest.mark.parametrize("backend", ["c", "torch"])
@pytest.mark.parametrize("name", list(CASES))
def test_ks_on_a_million_draws(name, backend, gen):
    s = built(name, backend)
    x = s.sample(1_000_000, generator=gen)
    assert x.shape == (1_000_000,) and x.dtype == F64
    assert st.kstest(x.numpy(), CASES[name][2].cdf).pvalue > 1e-3


def test_separated_modes_are_both_sampled(gen):
    s = built("mixture")
    assert len(s.components) == 2                 # the zero-density gap was found
    x = s.sample(200_000, generator=gen)
    frac = (x > 0).double().mean().item()
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / 200_000)
    assert s.ppf(0.5).item() == pytest.approx(s.components[1][0], abs=1e-6) or abs(s.ppf(0.5).item()) > 30


def test_piecewise_density_with_a_gap_matches_closed_form():
    # 0.3 uniform on [0, 1], 0.7 uniform on [2, 3]: density 0 on (1, 2) and jumps
    def pdf(x):
        inside1 = ((x >= 0) & (x <= 1)).to(F64)
        inside2 = ((x >= 2) & (x <= 3)).to(F64)
        return 0.3 * inside1 + 0.7 * inside2
    s = from_pdf(pdf, support=(-1.0, 4.0))
    u = torch.linspace(0.0, 1.0, 1001, dtype=F64)[1:-1]
    u = u[(u - 0.3).abs() > 1e-9]        # at u = 0.3 any x in [1, 2] is a quantile
    exact = torch.where(u <= 0.3, u / 0.3, 2 + (u - 0.3) / 0.7)
    assert (s.ppf(u) - exact).abs().max().item() < 1e-12
    assert len(s.components) == 2
    x = torch.tensor([-0.5, 0.5, 1.5, 2.5, 3.5], dtype=F64)
    np.testing.assert_allclose(s.cdf(x).numpy(), [0, 0.15, 0.3, 0.65, 1.0], atol=1e-10)


@pytest.mark.parametrize("name, cdf, sup, ref", [
    ("normal", lambda x: torch.special.ndtr(x), (-INF, INF), st.norm()),
    ("gamma", lambda x: torch.special.gammainc(torch.tensor(1.5, dtype=F64), x.clamp_min(0)), (0.0, INF), st.gamma(1.5)),
    ("cauchy", lambda x: 0.5 + torch.atan(x) / math.pi, (-INF, INF), st.cauchy()),
])
def test_from_cdf_accuracy(name, cdf, sup, ref, gen):
    s = from_cdf(cdf, support=sup)
    assert np.abs(ref.cdf(s.ppf(MID).numpy()) - MID.numpy()).max() <= 1e-10
    assert s.u_error().max_error <= 1e-10
    assert st.kstest(s.sample(200_000, generator=gen).numpy(), ref.cdf).pvalue > 1e-3


def test_unnormalised_density_is_normalised():
    a = from_pdf(lambda x: torch.exp(-0.5 * x * x), support=(-INF, INF))
    b = from_pdf(lambda x: 7.0 * torch.exp(-0.5 * x * x), support=(-INF, INF))
    assert a.area * 7 == pytest.approx(b.area, rel=1e-12)
    assert b.area == pytest.approx(7 * math.sqrt(2 * math.pi), rel=1e-12)
    assert torch.allclose(a.ppf(MID[::100]), b.ppf(MID[::100]), rtol=0, atol=1e-9)


def test_edge_inputs_values_and_shapes():
    s = built("gamma1.5")
    assert s.ppf(torch.tensor([0.0, 1.0], dtype=F64)).tolist() == [0.0, INF]
    b = built("beta2,5")
    assert b.ppf(torch.tensor([0.0, 1.0], dtype=F64)).tolist() == [0.0, 1.0]
    assert s.ppf(0.5).shape == ()
    assert s.ppf(torch.empty(0, 2)).shape == (0, 2)
    assert s.ppf(torch.full((2, 3), 0.25)).shape == (2, 3)
    c = s.cdf(torch.tensor([-INF, -1.0, INF, math.nan], dtype=F64))
    assert c[:3].tolist() == [0.0, 0.0, 1.0] and math.isnan(c[3])
    with pytest.raises(ValueError, match=r"u must lie in \[0, 1\]"):
        s.ppf(torch.tensor([0.2, 1.0001]))
    with pytest.raises(ValueError, match="u contains NaN"):
        s.ppf(torch.tensor([math.nan]))


@pytest.mark.parametrize("backend", ["c", "torch"])
def test_reproducible_from_a_generator(backend):
    s = built("normal", backend)
    a = s.sample((3, 4), generator=torch.Generator().manual_seed(5))
    b = s.sample((3, 4), generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 4) and torch.equal(a, b)
    if backend == "c":
        return                 # its stream is Philox: checked in test_ckernels.py
    # sample is ppf of the generator's uniforms (through the cell table: equal to rounding)
    u = torch.rand(12, dtype=F64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.reshape(-1), s.ppf(u), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["normal", "cauchy", "beta2,5", "mixture"])
def test_sampling_table_agrees_with_ppf(name):
    s = built(name)
    u = torch.rand(200_000, dtype=F64, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(s._sample_cells(u), s.ppf(u), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(pdf=lambda x: -torch.ones_like(x), support=(0, 1)), "pdf is negative"),
    (dict(pdf=lambda x: torch.zeros_like(x), support=(0, 1)), "zero mass"),
    (dict(pdf=lambda x: torch.full_like(x, math.nan), support=(0, 1)), "must be finite"),
    (dict(pdf=lambda x: 1 / x.abs(), support=(-1, 1)), "must be finite"),
    (dict(pdf=lambda x: torch.ones_like(x), support=(1, 0)), "support must satisfy a < b"),
    (dict(pdf=lambda x: torch.ones_like(x), support=(0, 1), u_resolution=1e-20), "u_resolution must lie in"),
    (dict(pdf=lambda x: torch.ones_like(x), support=(0, 1), order=2), "order must be an integer in"),
    (dict(pdf=lambda x: (1 + x.abs()) ** -1.001, support=(-INF, INF)), "too heavy"),
    (dict(pdf=lambda x: x.abs() ** -1.2, support=(0, 1)), "integrable"),
    (dict(pdf=lambda x: torch.ones_like(x) - 1e-9, support=(0, 1)), None),
    (dict(pdf=lambda x: torch.sin(x) - 1e-9, support=(0, math.pi)), "pdf is negative"),
    (dict(pdf=lambda x: torch.exp(-x * x).to(torch.complex128), support=(-1, 1)), "complex"),
    (dict(pdf=lambda x: torch.ones_like(x), support=(0, 1), order=math.inf), "order must be an integer in"),
    (dict(pdf=lambda x: torch.ones_like(x), support=(0, 1), order="5"), "order must be an integer in"),
    (dict(pdf=lambda x: torch.ones_like(x), support=(0, 1), u_resolution="ekki"), "u_resolution must lie in"),
    (dict(pdf=lambda x: torch.ones_like(x), support=(0, 1), u_resolution=math.nan), "u_resolution must lie in"),
    (dict(pdf=lambda x: torch.ones(3, dtype=F64), support=(0, 1)), "must act elementwise"),
])
def test_pdf_errors(kwargs, msg):
    if msg is None:       # a positive density: no error (the control for the case below it)
        from_pdf(kwargs.pop("pdf"), **kwargs)
        return
    with pytest.raises(ValueError, match=msg):
        from_pdf(kwargs.pop("pdf"), **kwargs)


def test_cdf_errors():
    with pytest.raises(ValueError, match="cdf decreases"):
        from_cdf(lambda x: 1 - torch.special.ndtr(x), support=(-5.0, 5.0))
    with pytest.raises(ValueError, match="outside"):
        from_cdf(lambda x: 2 * torch.special.ndtr(x), support=(-INF, INF))


def test_resolution_option_is_honoured():
    s = from_pdf(CASES["normal"][0], support=(-INF, INF), u_resolution=1e-12)
    assert np.abs(st.norm.cdf(s.ppf(MID).numpy()) - MID.numpy()).max() <= 1e-12
    coarse = from_pdf(CASES["normal"][0], support=(-INF, INF), u_resolution=1e-6, order=3)
    assert coarse.intervals < s.intervals
    assert np.abs(st.norm.cdf(coarse.ppf(MID).numpy()) - MID.numpy()).max() <= 1e-6


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.floats(0.0, 1.0), min_size=1, max_size=50), hs.sampled_from(["normal", "t3", "mixture", "beta2,5"]))
def test_property_monotone_and_roundtrip(us, name):
    s = built(name)
    u = torch.tensor(sorted(us), dtype=F64)
    x = s.ppf(u)
    assert bool((x[1:] >= x[:-1]).all())                       # monotone
    xt = built(name, "torch").ppf(u)
    assert bool((xt[1:] >= xt[:-1]).all())                     # the torch path too
    inner = (u > 0) & (u < 1)
    assert (s.cdf(x[inner]) - u[inner]).abs().max().item() <= 1e-10 if inner.any() else True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_tables_on_cuda():
    s = from_pdf(CASES["normal"][0], support=(-INF, INF), device="cuda")
    x = s.sample(1000, generator=torch.Generator("cuda").manual_seed(0))
    assert x.device.type == "cuda"
    assert np.abs(st.norm.cdf(s.ppf(MID.cuda()).cpu().numpy()) - MID.numpy()).max() <= 1e-10
