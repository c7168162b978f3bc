"""Ex2 learned: a monotone quantile function g with g(U) ~ the data.

``PiecewiseLinearQuantile`` is the spline quantile function of SQF-RNN
(Gasthaus et al., AISTATS 2019), written with segment slopes instead of slope
increments. Parameters (tensors, batched over leading dims ``...``; gradients
flow through everything):

* ``gamma``  (...,)    g(0), the lower end of the support;
* ``slopes`` (..., L)  positive slope of each of the L pieces;
* ``widths`` (..., L)  positive level widths summing to 1 (the knots are
  ``d_0 = 0, d_l = w_0 + ... + w_{l-1}, d_L = 1``); default: equal widths.

On piece l, for ``d_l <= u <= d_{l+1}``:  ``g(u) = g(d_l) + slopes_l (u - d_l)``,
with ``g(d_{l+1}) = g(d_l) + slopes_l widths_l``. So g is continuous, strictly
increasing, and maps [0, 1] onto [gamma, gamma + sum(slopes * widths)].

Mapping from unconstrained network outputs (what an RNN head emits; see
:meth:`PiecewiseLinearQuantile.from_unconstrained`):
``gamma = raw_gamma``, ``slopes = softplus(raw_slopes) + min_slope``,
``widths = softmax(raw_widths, -1)`` (or equal widths when ``raw_widths`` is None).
An RNN head for L pieces thus outputs 1 + L (+ L) numbers per step.

``crps(x)`` is the closed form of the continuous ranked probability score
``CRPS(F, x) = int_0^1 2 rho_a(x - g(a)) da`` (rho the pinball loss):
``CRPS = x (2 a~ - 1) + 2 int_{a~}^1 g(a) da - 2 int_0^1 a g(a) da`` with
``a~ = F(x)`` clamped to [0, 1], integrated piece by piece.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as Fnn

from ._base import F64, Sampler, as_shape, check_u
from .pit import UniformityResult, uniformity

__all__ = ["PiecewiseLinearQuantile", "PiecewiseLinearQuantileNet", "fit_quantile", "QuantileFit",
           "pinball_loss"]


class PiecewiseLinearQuantile(Sampler):
    """Monotone piecewise-linear quantile function (see the module doc).

    PiecewiseLinearQuantile(gamma, slopes, widths=None)
      gamma (...,), slopes (..., L) > 0, widths (..., L) > 0 summing to 1.
    ``ppf(u)``, ``cdf(x)`` (its exact inverse), ``crps(x)``, ``sample(shape)``
    (shape + batch_shape), ``support_bounds()``. u and x broadcast against the
    batch shape ``gamma.shape``. Computations keep the parameters' dtype (float64
    recommended for sampling; float32 is fine for training).
    """

    def __init__(self, gamma: torch.Tensor, slopes: torch.Tensor, widths: torch.Tensor | None = None,
                 *, validate: bool = True):
        gamma = torch.as_tensor(gamma)
        slopes = torch.as_tensor(slopes)
        if not gamma.is_floating_point():
            gamma = gamma.to(torch.get_default_dtype())
        slopes = slopes.to(gamma.dtype)
        if slopes.dim() < 1 or slopes.shape[-1] < 1:
            raise ValueError("slopes must have shape (..., L) with L >= 1")
        if widths is None:
            L = slopes.shape[-1]
            widths = torch.full_like(slopes, 1.0 / L)
        widths = torch.as_tensor(widths).to(gamma.dtype)
        if widths.shape != slopes.shape:
            raise ValueError(f"widths shape {tuple(widths.shape)} != slopes shape {tuple(slopes.shape)}")
        if gamma.shape != slopes.shape[:-1]:
            raise ValueError(f"gamma shape {tuple(gamma.shape)} must be slopes.shape[:-1] = "
                             f"{tuple(slopes.shape[:-1])}")
        if validate:
            for name, t in (("gamma", gamma), ("slopes", slopes), ("widths", widths)):
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"{name} contains NaN or inf; parameters must be finite")
            if bool((slopes <= 0).any()):
                raise ValueError("slopes must be > 0 (map network outputs through softplus)")
            if bool((widths <= 0).any()) or not bool(
                    torch.allclose(widths.sum(-1), torch.ones((), dtype=widths.dtype), atol=1e-5)):
                raise ValueError("widths must be > 0 and sum to 1 (map network outputs through softmax)")
        self.gamma, self.slopes, self.widths = gamma, slopes, widths
        self.batch_shape = gamma.shape
        self.device = gamma.device
        zero = torch.zeros_like(widths[..., :1])
        self.knots = torch.cat([zero, torch.cumsum(widths, -1)], -1)          # (..., L+1) levels d_l
        self.knots = torch.cat([self.knots[..., :-1], torch.ones_like(zero)], -1)
        rise = slopes * widths
        self.values = gamma.unsqueeze(-1) + torch.cat([zero, torch.cumsum(rise, -1)], -1)  # g(d_l)
        self.support = (gamma, self.values[..., -1])

    @classmethod
    def from_unconstrained(cls, raw_gamma, raw_slopes, raw_widths=None, *, min_slope: float = 1e-6):
        """Build from unconstrained outputs: slopes = softplus(raw) + min_slope,
        widths = softmax(raw_widths) (equal when None). Shapes (...,), (..., L), (..., L)."""
        slopes = Fnn.softplus(raw_slopes) + min_slope
        widths = None if raw_widths is None else torch.softmax(raw_widths, -1)
        return cls(raw_gamma, slopes, widths, validate=False)

    def support_bounds(self):
        """(g(0), g(1)) as tensors of the batch shape."""
        return self.values[..., 0], self.values[..., -1]

    # -- helpers: broadcast an input (..., *batch) against (*batch, L+1) tables
    def _expand(self, table, t):
        nb = len(self.batch_shape)
        shape = torch.broadcast_shapes(t.shape, self.batch_shape)
        lead = len(shape) - nb
        tab = table.reshape((1,) * lead + table.shape).expand(shape + table.shape[-1:])
        return tab, t.expand(shape)

    def _ppf(self, u):
        u = u.to(self.gamma.dtype)
        knots, uu = self._expand(self.knots, u)
        vals, _ = self._expand(self.values, u)
        slopes, _ = self._expand(self.slopes, u)
        L = self.slopes.shape[-1]
        # piece index: number of interior knots <= u
        idx = (knots[..., 1:-1] <= uu.unsqueeze(-1)).sum(-1, keepdim=True).clamp(max=L - 1)
        d = torch.gather(knots, -1, idx).squeeze(-1)
        v = torch.gather(vals, -1, idx).squeeze(-1)
        s = torch.gather(slopes, -1, idx).squeeze(-1)
        return v + s * (uu - d)

    def ppf(self, u):
        """g(u) for u in [0, 1] (ValueError outside); keeps autograd."""
        if torch.is_tensor(u) and u.requires_grad:
            return self._ppf(u)
        return self._ppf(check_u(u, device=self.device))

    def _cdf(self, x):
        x = x.to(self.gamma.dtype)
        vals, xx = self._expand(self.values, x)
        knots, _ = self._expand(self.knots, x)
        slopes, _ = self._expand(self.slopes, x)
        L = self.slopes.shape[-1]
        idx = (vals[..., 1:-1] <= xx.unsqueeze(-1)).sum(-1, keepdim=True).clamp(max=L - 1)
        d = torch.gather(knots, -1, idx).squeeze(-1)
        v = torch.gather(vals, -1, idx).squeeze(-1)
        s = torch.gather(slopes, -1, idx).squeeze(-1)
        a = (d + (xx - v) / s).clamp(0.0, 1.0)
        return torch.where(torch.isnan(xx), xx, a)

    def cdf(self, x):
        """F(x) = g^{-1}(x), clamped to [0, 1] outside [g(0), g(1)]; keeps autograd."""
        x = torch.as_tensor(x, device=self.device)
        if not x.is_floating_point():
            x = x.to(self.gamma.dtype)
        return self._cdf(x)

    def sample(self, shape=(), *, generator=None):
        shape = as_shape(shape) + self.batch_shape
        u = torch.rand(shape, dtype=self.gamma.dtype, device=self.device, generator=generator)
        return self._ppf(u)

    def crps(self, x) -> torch.Tensor:
        """Closed-form CRPS of the forecast g at observations x (..., *batch); differentiable."""
        x = torch.as_tensor(x, device=self.device)
        if not x.is_floating_point():
            x = x.to(self.gamma.dtype)
        x = x.to(self.gamma.dtype)
        a_t = self._cdf(x)                                                  # a~ in [0, 1]
        vals, xx = self._expand(self.values, x)
        knots, _ = self._expand(self.knots, x)
        slopes, _ = self._expand(self.slopes, x)
        g0, g1 = vals[..., :-1], vals[..., 1:]
        d0, d1 = knots[..., :-1], knots[..., 1:]
        w = d1 - d0
        # int_0^1 g and int_0^1 a g(a) da, piece by piece
        int_g = (0.5 * w * (g0 + g1)).sum(-1)
        int_ag = (g0 * (w * d0 + 0.5 * w * w) + slopes * (w ** 3 / 3.0 + d0 * w * w / 2.0)).sum(-1)
        # int_0^{a~} g: whole pieces below a~ plus the partial piece
        at = a_t.unsqueeze(-1)
        part_w = (at - d0).clamp(min=0.0) .minimum(w)                     # covered width of each piece
        g_end = g0 + slopes * part_w
        int_below = (0.5 * part_w * (g0 + g_end)).sum(-1)
        return xx * (2.0 * a_t - 1.0) + 2.0 * (int_g - int_below) - 2.0 * int_ag

    def __repr__(self):
        return (f"PiecewiseLinearQuantile(pieces={self.slopes.shape[-1]}, "
                f"batch_shape={tuple(self.batch_shape)})")


def pinball_loss(q: PiecewiseLinearQuantile, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean over ``levels`` (K,) of 2 * pinball loss rho_a(x - g(a)), per observation;
    its expectation over a ~ U[0, 1] is the CRPS."""
    a = levels.reshape((-1,) + (1,) * x.dim()).to(q.gamma.dtype)
    g = q.ppf(a.expand((a.shape[0],) + x.shape))
    z = x.unsqueeze(0) - g
    return (2.0 * z * (a - (z < 0).to(z.dtype))).mean(0)


class PiecewiseLinearQuantileNet(nn.Module):
    """Unconstrained ``nn.Parameter`` version for fitting to 1-D data:
    ``raw_gamma`` (), ``raw_slopes`` (L,), ``raw_widths`` (L,) (when ``learn_knots``);
    ``forward()`` returns the :class:`PiecewiseLinearQuantile`."""

    def __init__(self, pieces: int = 20, *, learn_knots: bool = True, init_data: torch.Tensor | None = None,
                 min_slope: float = 1e-6, dtype=F64):
        super().__init__()
        if int(pieces) != pieces or pieces < 1:
            raise ValueError(f"pieces must be an integer >= 1, got {pieces!r}")
        self.min_slope = min_slope
        L = int(pieces)
        if init_data is not None:
            # start at the empirical quantiles on equal level widths
            lv = torch.linspace(0.0, 1.0, L + 1, dtype=dtype)
            q = torch.quantile(init_data.to(dtype), lv)
            slopes = ((q[1:] - q[:-1]) * L).clamp_min(1e-3 * float(q[-1] - q[0]) + 1e-9)
            g0 = q[0]
        else:
            slopes = torch.ones(L, dtype=dtype)
            g0 = torch.tensor(-0.5, dtype=dtype)
        raw = slopes - min_slope
        raw = torch.where(raw > 20, raw, torch.log(torch.expm1(raw.clamp_min(1e-12))))  # softplus^-1
        self.raw_gamma = nn.Parameter(g0.clone())
        self.raw_slopes = nn.Parameter(raw)
        self.raw_widths = nn.Parameter(torch.zeros(L, dtype=dtype)) if learn_knots else None

    def forward(self) -> PiecewiseLinearQuantile:
        return PiecewiseLinearQuantile.from_unconstrained(self.raw_gamma, self.raw_slopes, self.raw_widths,
                                                          min_slope=self.min_slope)


class QuantileFit(NamedTuple):
    """Result of :func:`fit_quantile`: the fitted quantile function (detached),
    the training loss per step, and the PIT uniformity of the held-out data under
    it (None when ``holdout`` is 0)."""

    quantile: PiecewiseLinearQuantile
    losses: list
    heldout: UniformityResult | None


def fit_quantile(data, *, pieces: int = 20, steps: int = 500, lr: float = 0.05, batch_size: int = 1024,
                 loss: str = "crps", levels: int = 16, learn_knots: bool = True, holdout: float = 0.2,
                 generator: torch.Generator | None = None) -> QuantileFit:
    """Fit a piecewise-linear quantile function to 1-D ``data`` by minimising the
    CRPS (closed form; ``loss="crps"``) or the pinball loss at ``levels`` random
    levels per observation (``loss="pinball"``), with Adam on minibatches.

    The last ``holdout`` fraction of a random permutation is kept out of training
    and its PIT values ``cdf(x)`` are tested for uniformity (Ex1) in the result.
    """
    if loss not in ("crps", "pinball"):
        raise ValueError(f"loss must be 'crps' or 'pinball', got {loss!r}")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must lie in [0, 1), got {holdout}")
    x = torch.as_tensor(data).to(F64).reshape(-1)
    if x.numel() < 2:
        raise ValueError("fit_quantile needs at least 2 data points")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("data contain NaN or inf; drop or impute them first")
    perm = torch.randperm(x.numel(), generator=generator)
    n_hold = int(round(holdout * x.numel()))
    train, held = x[perm[n_hold:]], x[perm[:n_hold]]
    net = PiecewiseLinearQuantileNet(pieces, learn_knots=learn_knots, init_data=train)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    scale = float(train.std()) if train.numel() > 1 and float(train.std()) > 0 else 1.0
    losses = []
    for _ in range(steps):
        idx = torch.randint(train.numel(), (min(batch_size, train.numel()),), generator=generator)
        xb = train[idx]
        q = net()
        if loss == "crps":
            val = q.crps(xb).mean()
        else:
            lv = torch.rand(levels, dtype=F64, generator=generator)
            val = pinball_loss(q, xb, lv).mean()
        opt.zero_grad()
        (val / scale).backward()
        opt.step()
        losses.append(float(val.detach()))
    with torch.no_grad():
        q = net()
        fitted = PiecewiseLinearQuantile(q.gamma.detach().clone(), q.slopes.detach().clone(),
                                         q.widths.detach().clone(), validate=False)
    report = uniformity(fitted.cdf(held).clamp(0, 1)) if held.numel() >= 2 else None
    return QuantileFit(fitted, losses, report)
