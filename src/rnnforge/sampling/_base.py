"""Shared pieces of every sampler: input checks, the u-error metric, the base class.

Every sampler in :mod:`rnnforge.sampling` is an inverse transform (the notes' Ex2):
``x = ppf(u)`` with ``u ~ U[0, 1]``. The base class turns a ``_ppf`` on checked
float64 tensors into ``ppf``, ``sample`` and ``u_error``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

F64 = torch.float64


class UError(NamedTuple):
    """Result of ``u_error``: the u-error of scipy.stats.sampling.

    max_error: ``max |u - CDF(ppf(u))|`` over the test points.
    mean_absolute_error: the mean of ``|u - CDF(ppf(u))|`` over the same points.
    """

    max_error: float
    mean_absolute_error: float


def as_f64(x, *, name: str, device=None) -> torch.Tensor:
    """``x`` as a float64 tensor (on ``device`` when given), NaN allowed."""
    if not torch.is_tensor(x):
        # Python floats must become float64 directly, not via the default float32.
        x = torch.as_tensor(x, dtype=F64 if not isinstance(x, bool) else None)
    t = x.to(device) if device is not None else x
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32,
                                                  torch.int64, torch.uint8, torch.bool)):
        raise ValueError(f"{name} must be real numbers, got dtype {t.dtype}")
    return t.to(dtype=F64)


def check_u(u, *, device=None) -> torch.Tensor:
    """Probabilities ``u`` as float64; ValueError when any is NaN or outside [0, 1]."""
    t = as_f64(u, name="u", device=device)
    if t.numel():
        if torch.isnan(t).any():
            raise ValueError("u contains NaN; pass probabilities in [0, 1]")
        lo, hi = t.min().item(), t.max().item()
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"u must lie in [0, 1], got values in [{lo:g}, {hi:g}]; "
                             "clip or rescale u first")
    return t


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """ValueError when ``t`` holds NaN or +-inf (parameters, tables)."""
    if t.numel() and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; parameters must be finite")
    return t


def as_shape(shape) -> torch.Size:
    """A sample shape (an int or a sequence of ints, each >= 0) as a torch.Size."""
    dims = (shape,) if isinstance(shape, int) or not hasattr(shape, "__iter__") else tuple(shape)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(f"the sample shape must be an int or a sequence of ints >= 0, got {shape!r}")
    return torch.Size(int(d) for d in dims)


def midpoint_grid(n: int, device=None) -> torch.Tensor:
    """``(i + 1/2) / n`` for i < n: the deterministic test points of ``u_error``."""
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    return (torch.arange(n, dtype=F64, device=device) + 0.5) / n


class Sampler:
    """Base of the inverse-transform samplers.

    Subclasses set ``self.support = (a, b)`` (floats, maybe infinite),
    ``self.batch_shape`` and ``self.device`` and implement ``_ppf(u)`` for a
    checked float64 ``u`` of shape ``(..., *batch_shape)`` and, where the CDF is
    known, ``_cdf(x)``.
    """

    support: tuple[float, float] = (-math.inf, math.inf)
    batch_shape: torch.Size = torch.Size()
    device: torch.device = torch.device("cpu")

    # -- public API -----------------------------------------------------
    def ppf(self, u) -> torch.Tensor:
        """Quantile function ``F^{-1}(u)`` for u in [0, 1] (float64, same shape as u
        broadcast against ``batch_shape``). ``u = 0`` and ``u = 1`` give the ends of
        the support; u outside [0, 1] or NaN raise ValueError."""
        return self._ppf(check_u(u, device=self.device))

    def cdf(self, x) -> torch.Tensor:
        """The CDF ``F(x)`` (float64). NaN in gives NaN out; +-inf give 1 and 0."""
        x = as_f64(x, name="x", device=self.device)
        return self._cdf(x)

    def sample(self, shape: int | Sequence[int] = (), *, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """Draw ``shape + batch_shape`` values as ``ppf(U)``, ``U ~ U[0, 1)`` from
        ``generator`` (which must live on the sampler's device)."""
        shape = as_shape(shape) + self.batch_shape
        u = torch.rand(shape, dtype=F64, device=self.device, generator=generator)
        return self._ppf(u)

    def u_error(self, n: int = 100_000) -> UError:
        """u-error as scipy.stats.sampling defines it: ``max |u - CDF(ppf(u))|`` over
        the ``n`` midpoints ``u = (i + 1/2)/n``, with the sampler's own CDF (for the
        numerical samplers: the CDF recomputed from the density, not the inverse of
        the interpolant). Returns ``UError(max_error, mean_absolute_error)``."""
        u = midpoint_grid(n, self.device)
        if len(self.batch_shape):
            u = u.reshape((n,) + (1,) * len(self.batch_shape)).expand((n,) + tuple(self.batch_shape))
        err = (u - self._cdf(self._ppf(u))).abs()
        return UError(err.max().item(), err.mean().item())

    # -- to implement ---------------------------------------------------
    def _ppf(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no CDF")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(support={self.support}, batch_shape={tuple(self.batch_shape)})"
