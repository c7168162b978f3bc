"""Distribution heads: from the readout's raw outputs to the distribution of the next value.

A head turns the readout ``y = delta z`` (``raw``, shape (..., P)) into a
predictive distribution of the next *scaled* value and provides what the
forecaster needs of it:

    loss(raw, z)   per-element training loss (negative log-likelihood or CRPS)
    ppf(raw, u)    quantile function F^{-1}(u): the notes' Ex2, ancestral sampling
    cdf(raw, z)    F(z): the notes' Ex1, the PIT
    crps(raw, z)   CRPS in closed form, where one exists (else None)

Heads are looked up by name in ``HEADS``; ``register_head`` adds one, so a new
distribution is one class with ``num_params`` and those four methods.

Shapes: ``raw`` (..., P); ``z`` and ``u`` (...) broadcastable to ``raw[..., 0]``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..sampling import betainc

HEADS: dict[str, type["Head"]] = {}

_SQRT_PI = math.sqrt(math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
#: smallest scale a head predicts, in the scaled units of the series
MIN_SCALE = 1e-3


def register_head(name: str) -> Callable[[type["Head"]], type["Head"]]:
    """Class decorator: make a head available by name (``ModelConfig.head``)."""
    def deco(cls):
        cls.name = name
        HEADS[name] = cls
        return cls
    return deco


def make_head(name: str, **kwargs) -> "Head":
    if name not in HEADS:
        raise UserError(f"unknown head {name!r}; choose one of {', '.join(sorted(HEADS))}")
    return HEADS[name](**kwargs)


class Head(nn.Module):
    """Base class; the heads hold no parameters, the readout before them does."""

    name = "?"
    num_params = 0

    def config(self) -> dict:
        """Keyword arguments that rebuild this head (stored in checkpoints)."""
        return {}

    def loss(self, raw: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def ppf(self, raw: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cdf(self, raw: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def crps(self, raw: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        return None


# -- Gaussian ------------------------------------------------------------------------
def gaussian_crps(mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CRPS of N(mu, sigma^2) at y: ``sigma [w (2 Phi(w) - 1) + 2 phi(w) - 1/sqrt(pi)]``."""
    w = (y - mu) / sigma
    pdf = torch.exp(-0.5 * w * w - _LOG_SQRT_2PI)
    return sigma * (w * (2 * torch.special.ndtr(w) - 1) + 2 * pdf - 1 / _SQRT_PI)


@register_head("gaussian")
class GaussianHead(Head):
    """N(mu, sigma^2) with ``mu = raw0``, ``sigma = softplus(raw1) + MIN_SCALE``; trained by NLL."""

    num_params = 2

    def params(self, raw):
        return raw[..., 0], F.softplus(raw[..., 1]) + MIN_SCALE

    def loss(self, raw, z):
        mu, sigma = self.params(raw)
        w = (z - mu) / sigma
        return 0.5 * w * w + torch.log(sigma) + _LOG_SQRT_2PI

    def ppf(self, raw, u):
        mu, sigma = self.params(raw)
        # in float64: float32 rounds u = 1 - 1e-12 up to 1, where ndtri is infinite
        return (mu.double() + sigma.double() * torch.special.ndtri(u.double())).to(raw.dtype)

    def cdf(self, raw, z):
        mu, sigma = self.params(raw)
        return torch.special.ndtr((z - mu) / sigma)

    def crps(self, raw, z):
        mu, sigma = self.params(raw)
        return gaussian_crps(mu, sigma, z)


# -- Student-t -----------------------------------------------------------------------
def t_tail(t: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """P(T > |t|) for T ~ Student-t(nu), float64: ``I_{nu/(nu+t^2)}(nu/2, 1/2) / 2``."""
    t, nu = torch.broadcast_tensors(t.double(), nu.double())
    x = nu / (nu + t * t)
    return 0.5 * betainc(0.5 * nu, torch.full_like(nu, 0.5), x)


def t_cdf(t: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """CDF of the standard Student-t with ``nu`` degrees of freedom (float64)."""
    tail = t_tail(t, nu)
    t = t.double()
    return torch.where(t > 0, 1.0 - tail, tail)


def t_log_pdf(t: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    return (torch.lgamma((nu + 1) / 2) - torch.lgamma(nu / 2) - 0.5 * torch.log(nu * math.pi)
            - (nu + 1) / 2 * torch.log1p(t * t / nu))


def t_ppf(u: torch.Tensor, nu: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """Quantile function of the standard Student-t (float64).

    Solves ``P(T > t) = min(u, 1-u)`` for t >= 0 by Halley's method from the
    Cornish-Fisher expansion, kept inside a bracket (bisection when a step
    leaves it), then restores the sign. u = 0 or 1 give -inf or +inf.
    """
    u, nu = torch.broadcast_tensors(u.double(), nu.double())
    q = torch.minimum(u, 1.0 - u).clamp_min(1e-300)  # target tail probability, <= 1/2
    z = -torch.special.ndtri(q)  # >= 0
    z2 = z * z
    t = (z + z * (z2 + 1) / (4 * nu) + z * ((5 * z2 + 16) * z2 + 3) / (96 * nu ** 2)
         + z * (((3 * z2 + 19) * z2 + 17) * z2 - 15) / (384 * nu ** 3))
    t = torch.nan_to_num(t.clamp_min(0.0), posinf=1e6)
    lo, hi = torch.zeros_like(t), torch.full_like(t, math.inf)
    for _ in range(iters):
        g = t_tail(t, nu) - q  # decreasing in t
        lo = torch.where(g > 0, t, lo)
        hi = torch.where(g < 0, t, hi)
        newton = g / torch.exp(t_log_pdf(t, nu))  # t + g / f, since d tail / dt = -f
        # Halley's correction with f'/f = -(nu + 1) t / (nu + t^2): cubic convergence
        denom = 1.0 - 0.5 * newton * (nu + 1) * t / (nu + t * t)
        step = torch.where(denom > 0.5, newton / denom, newton)
        new = t + step
        mid = torch.where(torch.isfinite(hi), 0.5 * (lo + hi), 2.0 * lo + 1.0)
        bad = ~torch.isfinite(new) | (new < lo) | (new > hi)
        done = step.abs() <= 1e-10 * (1.0 + t.abs())  # float64 noise in the tail is ~1e-13
        t = torch.where(bad, mid, new)
        if bool(done.all()):
            break
    t = torch.where(u <= 0, torch.full_like(t, math.inf), t)
    t = torch.where(u >= 1, torch.full_like(t, math.inf), t)
    return torch.where(u < 0.5, -t, t)


def student_t_crps(mu, sigma, nu, y) -> torch.Tensor:
    """CRPS of the location-scale Student-t (nu > 1) at y, closed form.

    ``sigma [w (2F(w) - 1) + 2 f(w) (nu + w^2)/(nu - 1)
    - 2 sqrt(nu) B(1/2, nu - 1/2) / ((nu - 1) B(1/2, nu/2)^2)]``, w = (y - mu)/sigma
    (Jordan, Krüger and Lerch 2019).
    """
    mu, sigma, nu, y = (t.double() for t in torch.broadcast_tensors(mu, sigma, nu, y))
    w = (y - mu) / sigma

    def log_beta(p, q):
        return torch.lgamma(p) + torch.lgamma(q) - torch.lgamma(p + q)

    half = torch.full_like(nu, 0.5)
    const = 2 * torch.sqrt(nu) * torch.exp(log_beta(half, nu - 0.5) - 2 * log_beta(half, nu / 2)) / (nu - 1)
    pdf = torch.exp(t_log_pdf(w, nu))
    return sigma * (w * (2 * t_cdf(w, nu) - 1) + 2 * pdf * (nu + w * w) / (nu - 1) - const)


@register_head("student-t")
class StudentTHead(Head):
    """Location-scale Student-t: ``mu = raw0``, ``sigma = softplus(raw1) + MIN_SCALE``,
    ``nu = 2 + softplus(raw2)`` (finite variance, so the CRPS exists); trained by NLL."""

    num_params = 3

    def params(self, raw):
        return raw[..., 0], F.softplus(raw[..., 1]) + MIN_SCALE, 2.0 + F.softplus(raw[..., 2])

    def loss(self, raw, z):
        mu, sigma, nu = self.params(raw)
        return -(t_log_pdf((z - mu) / sigma, nu) - torch.log(sigma))

    def ppf(self, raw, u):
        mu, sigma, nu = self.params(raw)
        t = t_ppf(u, nu.detach())
        if torch.is_grad_enabled() and nu.requires_grad:
            # the gradient in nu by the implicit function theorem on F(t; nu) = u,
            # dt/dnu = -(dF/dnu) / f(t): one differentiable CDF instead of the solver's iterations
            nu64 = nu.double()
            cdf = t_cdf(t, nu64)
            pdf = torch.exp(t_log_pdf(t, nu64.detach()))
            ok = torch.isfinite(t) & (pdf > 0)
            t = t - torch.where(ok, (cdf - cdf.detach()) / torch.where(ok, pdf, 1.0), 0.0)
        return (mu.double() + sigma.double() * t).to(raw.dtype)

    def cdf(self, raw, z):
        mu, sigma, nu = self.params(raw)
        return t_cdf((z.double() - mu.double()) / sigma.double(), nu)

    def crps(self, raw, z):
        mu, sigma, nu = self.params(raw)
        return student_t_crps(mu, sigma, nu, z)


# -- Gaussian mixture ------------------------------------------------------------------
def _abs_moment(m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E|X| for X ~ N(m, s^2): ``2 s phi(m/s) + m (2 Phi(m/s) - 1)``."""
    w = m / s
    return 2 * s * torch.exp(-0.5 * w * w - _LOG_SQRT_2PI) + m * (2 * torch.special.ndtr(w) - 1)


def mixture_crps(logw: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CRPS of the Gaussian mixture sum_k w_k N(mu_k, sigma_k^2) (components on the last axis,
    ``logw`` normalised log-weights) at y, by ``E|X - y| - E|X - X'| / 2`` in closed form
    (Grimit et al. 2006): ``sum_k w_k A(y - mu_k, sigma_k) - 1/2 sum_kl w_k w_l
    A(mu_k - mu_l, sqrt(sigma_k^2 + sigma_l^2))``, A(m, s) = E|N(m, s^2)|."""
    w = logw.exp()
    first = (w * _abs_moment(y.unsqueeze(-1) - mu, sigma)).sum(-1)
    pair = _abs_moment(mu.unsqueeze(-1) - mu.unsqueeze(-2),
                       torch.sqrt(sigma.unsqueeze(-1) ** 2 + sigma.unsqueeze(-2) ** 2))
    return first - 0.5 * (w.unsqueeze(-1) * w.unsqueeze(-2) * pair).sum((-1, -2))


@register_head("mixture")
class GaussianMixtureHead(Head):
    """``components`` Gaussians, weights ``softmax(raw[:K])``, means ``raw[K:2K]``, scales
    ``softplus(raw[2K:]) + MIN_SCALE``; trained by NLL, so that a rare mode far from the bulk
    (a regime switch) is paid for, where the CRPS hardly rewards it. Sampling inverts the
    mixture's CDF by bisection in float64 between the components' own quantiles (the
    mixture's lies between them), a fixed number of halvings; its gradient by the implicit
    function theorem on F(z) = u."""

    BISECTIONS = 60

    def __init__(self, components: int = 3) -> None:
        super().__init__()
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise UserError(f"the mixture head needs at least 1 component, got {components!r}")
        self.components = components
        self.num_params = 3 * components

    def config(self) -> dict:
        return {"components": self.components}

    def params(self, raw):
        K = self.components
        return (torch.log_softmax(raw[..., :K], dim=-1), raw[..., K:2 * K],
                F.softplus(raw[..., 2 * K:3 * K]) + MIN_SCALE)

    def loss(self, raw, z):
        logw, mu, sigma = self.params(raw)
        w = (z.unsqueeze(-1) - mu) / sigma
        return -torch.logsumexp(logw - 0.5 * w * w - torch.log(sigma) - _LOG_SQRT_2PI, dim=-1)

    def _cdf(self, logw, mu, sigma, z):
        return (logw.exp() * torch.special.ndtr((z.unsqueeze(-1) - mu) / sigma)).sum(-1)

    def cdf(self, raw, z):
        logw, mu, sigma = self.params(raw)
        return self._cdf(logw, mu, sigma, z.to(raw.dtype))

    def ppf(self, raw, u):
        logw, mu, sigma = self.params(raw)
        lw, m, sd = (t.detach().double() for t in (logw, mu, sigma))
        u64 = u.double().clamp(1e-300, 1.0 - 2.0 ** -53)  # u = 1 would put the bracket at +inf
        comp = m + sd * torch.special.ndtri(u64).unsqueeze(-1)  # each component's u-quantile
        lo, hi = comp.min(-1).values, comp.max(-1).values
        for _ in range(self.BISECTIONS):
            mid = 0.5 * (lo + hi)
            below = self._cdf(lw, m, sd, mid) < u64
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        z = 0.5 * (lo + hi)
        if torch.is_grad_enabled() and raw.requires_grad:
            # dz/dtheta = -(dF/dtheta) / f(z) at the solved z: one differentiable CDF
            pdf = (lw.exp() * torch.exp(-0.5 * ((z.unsqueeze(-1) - m) / sd) ** 2 - _LOG_SQRT_2PI) / sd).sum(-1)
            cdf = self._cdf(logw.double(), mu.double(), sigma.double(), z)
            ok = torch.isfinite(z) & (pdf > 0)
            z = z - torch.where(ok, (cdf - cdf.detach()) / torch.where(ok, pdf, 1.0), 0.0)
        return z.to(raw.dtype)

    def crps(self, raw, z):
        logw, mu, sigma = self.params(raw)
        return mixture_crps(logw, mu, sigma, z.to(raw.dtype))


# -- learned monotone quantile function (SQF, Gasthaus et al. 2019) ---------------------
def spline_knots(raw: torch.Tensor, pieces: int, min_slope: float = 1e-4):
    """Raw (..., 1 + 2L) -> the spline quantile function of :mod:`rnnforge.sampling`.

    ``raw = [gamma, width logits (L), slope logits (L)]``; the quantile function is
    ``q(a) = gamma + sum_l m_l clamp(a - d_l, 0, w_l)`` with widths ``w = softmax``
    (knots ``d`` their running sums) and slopes ``m = softplus + min_slope``, so it
    is increasing by construction.
    """
    from ..sampling import PiecewiseLinearQuantile

    return PiecewiseLinearQuantile.from_unconstrained(
        raw[..., 0], raw[..., pieces + 1:2 * pieces + 1], raw[..., 1:pieces + 1], min_slope=min_slope)


@register_head("quantile")
class SplineQuantileHead(Head):
    """A learned monotone quantile function: the piecewise-linear spline of SQF-RNN
    (Gasthaus et al. 2019; ``rnnforge.sampling.PiecewiseLinearQuantile``) with
    ``pieces`` pieces, trained by its closed-form CRPS. Sampling is ``q(u)`` itself
    (the notes' Ex2 with the quantile function learned directly)."""

    def __init__(self, pieces: int = 10) -> None:
        super().__init__()
        if pieces < 1:
            raise UserError(f"the quantile head needs at least 1 piece, got {pieces}")
        self.pieces = pieces
        self.num_params = 1 + 2 * pieces

    def config(self) -> dict:
        return {"pieces": self.pieces}

    def loss(self, raw, z):
        return spline_knots(raw, self.pieces).crps(z)

    def ppf(self, raw, u):
        q = spline_knots(raw, self.pieces)
        return q._ppf(u.to(raw.dtype).clamp(0.0, 1.0))

    def cdf(self, raw, z):
        return spline_knots(raw, self.pieces).cdf(z.to(raw.dtype))

    def crps(self, raw, z):
        return spline_knots(raw, self.pieces).crps(z.to(raw.dtype))
