"""Numerical inversion of a density or a CDF: the notes' Ex2 for any 1-D law.

``from_pdf`` follows PINV (Derflinger, Hoermann and Leydold, "Random variate
generation by numerical inversion when only the density is known", ACM TOMACS
20(4), 2010): the domain is cut where the tails hold less than a fraction of
the wanted accuracy; it is split into intervals; on each interval the CDF is
integrated at Chebyshev-Lobatto nodes with Gauss-Lobatto quadrature and the
inverse CDF is interpolated by a Newton polynomial in u; an interval is accepted
when the u-error at the extremal points between nodes is below the resolution,
otherwise cut. Departures, for speed in Python or for safety:

* all pending intervals of a round are processed together (one density call
  on every point of every pending interval), rather than one after the other;
  the first intervals are spaced by mass and by asinh distance from the centre
  (geometric in the tails); a failing interval is cut into about
  ``(err / tol)^(1/(n+1))`` pieces at once (geometric cuts in the tails); one
  at a component's end, where the density may vanish or blow up like a power so
  that x(u) is not smooth, is cut by the power law fitted to its node masses
  (equal masses, then halving masses down to a piece below tol / 4), so a build
  takes 2 or 3 rounds;
* before the intervals, the density is scanned on a grid (log-spaced out to
  1e20 from ``center``, to 1e300 where a tail is not cut by 1e20, and uniform on
  the cut domain); a tail is cut by its mass. Runs of exact zeros split
  the support into components, and each component's ends are located by
  bisection. So a density that underflows to zero between two separated modes is
  sampled on both modes (scipy's PINV walks out from the centre and samples only
  one). A feature narrower than the scan spacing (about (R - L) / 4096) can still
  be missed: pass ``center`` near it or a narrower ``support``;
* each interval also carries a Gauss-Lobatto error estimate (one panel against
  two), which must be small, since the interval masses add up into the CDF;
* at a finite end where the density behaves like a power ``|x - e|^beta``
  (unbounded for beta < 0, even infinite at e) the masses are integrated after
  the change of variable ``x = e + h s^k`` and the intervals there are cut toward
  e until a straight line meets the resolution (x(u) is not smooth there), down
  to float64's floor: the last spacing of doubles at e;
* an interval is accepted only if its polynomial is proven increasing on it
  (Bernstein coefficients of the derivative), and its u-error is also tested
  close to its ends;
* ``ppf`` finds the interval through a guide table (Chen and Asau) and
  evaluates the polynomial in power form, clamped to the interval, so it is
  monotone; ``sample`` goes through a finer table of 2^13 equal u-cells whose
  polynomials are the interval polynomials re-expanded exactly, so a draw needs
  no search (cells that hold an interval boundary fall back to ``ppf``'s path);
* on CPU both run in one threaded pass of a small compiled C kernel
  (:mod:`rnnforge._ckernels`, built on first use) whose uniforms are
  Philox4x32-10 keyed from the caller's ``torch.Generator``; the same tables
  serve the torch-ops path used on GPUs or with ``backend="torch"``.

The user's pdf (or cdf) receives 1-D float64 CPU tensors and must return a
tensor (or array) of the same shape; it is called on many points at once.

The modules follow the set-up: :mod:`.quadrature` (calling the user's function,
interval masses), :mod:`.domain` (scan, tail cut, components), :mod:`.rounds`
(the adaptive intervals and their accuracy test), :mod:`.table` (the
:class:`NumericalInverse` and its lookup tables) and :mod:`.backends` (the
torch-ops and compiled evaluation of those tables). This module checks the
options and runs them in that order. The edges of a distribution are handled in
four places: the tail cut, the components' ends and their power laws in
:mod:`.domain`, the change of variable at a singular end in :mod:`.quadrature`,
the intervals at those ends and float64's floor in :mod:`.rounds`, and u near 0
and 1 in :mod:`.backends`. :class:`~rnnforge.sampling.Truncated` of a sampler
built here builds the truncated law's own inverse on [a, b] from the same pdf
(or cdf), so it reaches beyond ``domain``.
"""
from __future__ import annotations

import math
import numbers

import torch

from ...errors import OptionError

from .backends import check_backend
from .domain import domain_and_components
from .quadrature import CdfMass, PdfMass
from .rounds import build_intervals
from .table import NumericalInverse

__all__ = ["from_pdf", "from_cdf", "NumericalInverse"]


def from_pdf(pdf, *, support=(-math.inf, math.inf), u_resolution: float = 1e-10, order: int = 5,
             center: float | None = None, scan_points: int = 4096, device=None,
             backend: str = "auto") -> NumericalInverse:
    """Inverse-transform sampler of the density ``pdf`` (any scale: normalised here).

    pdf: callable taking a 1-D float64 CPU tensor and returning the density there
      (same shape, float64, >= 0, finite); called on many points at once.
    support: (a, b), ends may be infinite; u = 0 and u = 1 map to a and b.
    u_resolution: the bound on the u-error ``max |u - CDF(ppf(u))|`` (scipy's
      default 1e-10), in [1e-14, 1e-5].
    order: degree of the interpolating polynomials (3..12; 5 as scipy).
    center: a point with positive density near the bulk; the tail scan starts
      there (default: the midpoint of a finite support, its finite end, else 0).
    scan_points: size of the uniform scan that finds zero-density gaps.
    device: where the tables live (sampling and ppf run there).
    backend: "auto" (the compiled C kernel on CPU where it builds, else torch
      ops, with one warning), "c" (the kernel; ValueError if it cannot build or
      the device is not the CPU) or "torch" (torch ops on any device).

    Edges: a tail is cut where it holds less than 5% of the resolution, found by
    its mass on a scan out to 1e300 (so a Levy tail, cut near 1e23, is sampled).
    At a finite end where the density grows like ``|x - e|^beta`` (-1 < beta < 0:
    arcsine, beta(2.31, 0.627), rdist) it may be infinite at e itself and is
    integrated after a change of variable; x(u) is not smooth there, so the
    intervals at such an end are cut toward it until a straight line meets the
    resolution. Float64's floor: when e is not 0, x cannot come closer to e than
    the spacing of doubles at e, so the u-error within the last spacing is up to
    half its mass, about ``C (spacing(e))^(beta + 1) / 2`` for ``F ~ C |x - e|^(beta + 1)``:
    3.4e-9 for the arcsine at 1, 9e-11 for beta(2.31, 0.627) at 1; the resolution
    is met away from it, and ``u_error`` reports it. A density value below 0 by
    at most 8 ulps of the density's largest value is rounding and taken as 0.

    Raises ValueError for a negative, NaN or infinite density value (but at an end
    of the support), a non-integrable end, complex values, zero mass, a tail too
    heavy to cut at 1e300, or a resolution that cannot be reached; OptionError (a
    ValueError) for a bad ``u_resolution`` or ``order``.
    """
    return _numerical_inverse(pdf, "pdf", support, u_resolution, order, center, scan_points, device,
                              backend)


def from_cdf(cdf, *, support=(-math.inf, math.inf), u_resolution: float = 1e-10, order: int = 5,
             center: float | None = None, scan_points: int = 4096, device=None,
             backend: str = "auto") -> NumericalInverse:
    """Inverse-transform sampler of a distribution given by its CDF.

    Same contract and options as :func:`from_pdf`; the interval masses are CDF
    differences (so the u-error is measured against the given CDF, which must be
    continuous, non-decreasing, 0 at the left end and 1 at the right end of the
    support). A decreasing CDF raises ValueError.
    """
    return _numerical_inverse(cdf, "cdf", support, u_resolution, order, center, scan_points, device,
                              backend)


def _numerical_inverse(fn, kind: str, support, u_resolution, order, center, scan_points, device, backend):
    """The setup shared by :func:`from_pdf` and :func:`from_cdf`; ``kind`` is "pdf" or "cdf"."""
    a, b, u_resolution, order = _check_common(support, u_resolution, order)
    check_backend(backend, torch.device(device) if device is not None else torch.device("cpu"))
    if not callable(fn):
        raise ValueError(f"{kind} must be a callable taking and returning float64 tensors")
    c = _default_center(a, b, center)
    domain, comps, grid, cdfg, singular, scale = domain_and_components(fn, kind, a, b, c, u_resolution,
                                                                       scan_points)
    mass = PdfMass(fn, singular, scale) if kind == "pdf" else CdfMass(fn)
    area_guess = float(cdfg[-1]) if kind == "pdf" else float(cdfg[-1] - cdfg[0])
    lo, hi, X, V, P = build_intervals(mass, grid=grid, cdf_grid=cdfg, comps=comps,
                                      u_resolution=u_resolution, order=order,
                                      area_guess=area_guess, center=c)
    return NumericalInverse(mass=mass, pdf=fn if kind == "pdf" else None, support=(a, b), domain=domain,
                            components=comps, a=lo, b=hi, X=X, V=V, P=P, area=float(V[:, -1].sum()),
                            order=order, u_resolution=u_resolution, device=device, backend=backend)


def _check_common(support, u_resolution, order):
    try:
        a, b = (float(v) for v in support)
    except (TypeError, ValueError):
        raise ValueError(f"support must be a pair (a, b) of numbers, got {support!r}") from None
    if math.isnan(a) or math.isnan(b) or not a < b:
        raise ValueError(f"support must satisfy a < b, got ({a}, {b})")
    if isinstance(u_resolution, bool) or not isinstance(u_resolution, numbers.Real) \
            or not (1e-14 <= u_resolution <= 1e-5):
        raise OptionError("u_resolution", f"must lie in [1e-14, 1e-5], got {u_resolution!r}")
    if isinstance(order, bool) or not isinstance(order, numbers.Real) or not math.isfinite(order) \
            or int(order) != order or not 3 <= order <= 12:
        raise OptionError("order", f"must be an integer in [3, 12], got {order!r}")
    return a, b, float(u_resolution), int(order)


def _default_center(a, b, center):
    if center is not None:
        c = float(center)
        if not (a <= c <= b) or math.isnan(c):
            raise ValueError(f"center={center} lies outside the support ({a}, {b})")
        return c
    if math.isfinite(a) and math.isfinite(b):
        return 0.5 * (a + b)
    if math.isfinite(a):
        return a
    if math.isfinite(b):
        return b
    return 0.0
