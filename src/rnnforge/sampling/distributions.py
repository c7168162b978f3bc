"""Ex2 for parametric families: quantile functions of torch.distributions objects.

torch gives ``icdf`` for some families (Normal, Cauchy, Exponential, Uniform,
Laplace, ...) and not for Gamma, Chi2, Beta and StudentT. For those this module
computes the quantile by inverting the CDF numerically (safeguarded Newton:
Newton steps on the CDF with the density as derivative, bisection whenever a
step leaves the current bracket), to a u-error far below 1e-10:

- Gamma / Chi2 CDF: ``torch.special.gammainc`` (regularized lower incomplete gamma),
  replaced by this module's series / continued fraction for concentration > 20;
- Beta and StudentT CDF: :func:`betainc`, the regularized incomplete beta
  function written here as a continued fraction (modified Lentz), vectorised.

All of it works batched (parameters broadcast against u) in float64.

Limits, measured against scipy.stats: ``torch.special.gammainc`` is off by up
to 3e-10 for concentration >= ~25 (an asymptotic branch), so above 20 the
series / continued fraction of this module is used (its prefactor loses about
a * log(a) * 1e-16, i.e. 1e-12 at a = 1e3, 1e-10 at a = 1e5); near an end where the density is
infinite (Beta with a or b < 1) float64 cannot represent x finely enough to
reach 1e-10 in the last ~1e-8 of u; in the far upper tail x is known only
through a CDF near 1 (absolute accuracy ~1e-16), so x itself is ill-conditioned
there even though the u-error stays small.
"""
from __future__ import annotations

import math

import torch
import torch.distributions as D

from ._base import F64, Sampler, as_f64, check_finite

__all__ = ["from_distribution", "DistributionSampler", "betainc", "gamma_cdf", "gamma_ppf",
           "beta_cdf", "beta_ppf", "student_t_cdf", "student_t_ppf", "chi2_cdf", "chi2_ppf"]

_TINY = 1e-300
_EPS = 2.220446049250313e-16


# -- the regularized incomplete beta function ----------------------------------

def _betacf(a, b, x):
    """Continued fraction of I_x(a, b) (Numerical-Recipes form), by modified Lentz.
    Converges fast for x < (a + 1) / (a + b + 2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = torch.ones_like(x)
    d = 1.0 - qab * x / qap
    d = torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)
    d = 1.0 / d
    h = d.clone()
    for m in range(1, 5001):
        m2 = 2.0 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)
        c = 1.0 + aa / c
        c = torch.where(c.abs() < _TINY, torch.full_like(c, _TINY), c)
        d = 1.0 / d
        h = h * d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)
        c = 1.0 + aa / c
        c = torch.where(c.abs() < _TINY, torch.full_like(c, _TINY), c)
        d = 1.0 / d
        delta = d * c
        h = h * delta
        if m % 4 == 0 and bool((((delta - 1.0).abs() <= 1e-15) | torch.isnan(delta)).all()):
            break
    return h


def _betainc_xy(a, b, x, y):
    """I_x(a, b) given both x and y = 1 - x (so that neither loses digits)."""
    a, b, x, y = torch.broadcast_tensors(a, b, x, y)
    out = torch.empty_like(x)
    lbeta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    xs = x.clamp(_TINY, 1.0)
    ys = y.clamp(_TINY, 1.0)
    front = torch.exp(a * torch.log(xs) + b * torch.log(ys) - lbeta)
    direct = x < (a + 1.0) / (a + b + 2.0)
    # Evaluate the continued fraction only where each branch applies.
    if direct.any():
        i = direct
        out[i] = front[i] * _betacf(a[i], b[i], x[i]) / a[i]
    if (~direct).any():
        i = ~direct
        out[i] = 1.0 - front[i] * _betacf(b[i], a[i], y[i]) / b[i]
    out = torch.where(x <= 0, torch.zeros_like(out), out)
    out = torch.where(y <= 0, torch.ones_like(out), out)
    return out.clamp(0.0, 1.0)


def betainc(a, b, x) -> torch.Tensor:
    """Regularized incomplete beta function ``I_x(a, b)`` (float64, broadcast)."""
    a, b, x = (as_f64(t, name=n) for t, n in ((a, "a"), (b, "b"), (x, "x")))
    return _betainc_xy(a, b, x, 1.0 - x)


# -- the regularized lower incomplete gamma function ---------------------------

def _gammainc_series_cf(a, x):
    """P(a, x) by the power series (x < a + 1) and Q's continued fraction (else),
    in log space for the prefactor ``x^a e^-x / Gamma(a)``. Used for a > 20,
    where torch.special.gammainc switches to an expansion good to only ~3e-10."""
    out = torch.empty_like(x)
    logpre = a * torch.log(x.clamp_min(_TINY)) - x - torch.lgamma(a)
    ser = x < a + 1.0
    if bool(ser.any()):
        aa, xx = a[ser], x[ser]
        term = 1.0 / aa
        total = term.clone()
        ap = aa.clone()
        for n in range(1, 100000):
            ap = ap + 1.0
            term = term * xx / ap
            total = total + term
            if n % 8 == 0 and bool((term <= total * 1e-16).all()):
                break
        out[ser] = torch.exp(logpre[ser]) * total
    cf = ~ser
    if bool(cf.any()):
        aa, xx = a[cf], x[cf]
        b = xx + 1.0 - aa
        c = torch.full_like(xx, 1.0 / _TINY)
        d = 1.0 / b
        h = d.clone()
        for i in range(1, 100000):
            an = -i * (i - aa)
            b = b + 2.0
            d = an * d + b
            d = torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)
            c = b + an / c
            c = torch.where(c.abs() < _TINY, torch.full_like(c, _TINY), c)
            d = 1.0 / d
            delta = d * c
            h = h * delta
            if i % 4 == 0 and bool(((delta - 1.0).abs() <= 1e-15).all()):
                break
        out[cf] = 1.0 - torch.exp(logpre[cf]) * h
    return out.clamp(0.0, 1.0)


def _gammainc(a, x):
    """Regularized lower incomplete gamma P(a, x) (float64, broadcast), x >= 0."""
    a, x = torch.broadcast_tensors(a, x)
    out = torch.special.gammainc(a, x)
    big = (a > 20.0) & (x > 0) & torch.isfinite(x)
    if bool(big.any()):
        out = out.clone()
        out[big] = _gammainc_series_cf(a[big], x[big])
    return out


# -- safeguarded Newton inversion of a CDF -------------------------------------

def _invert(cdf, pdf, u, lo, hi, x0, params=(), *, max_iter: int = 200):
    """Solve ``cdf(x, *params) = u`` elementwise on the bracket [lo, hi]
    (cdf(lo) <= u <= cdf(hi)); all arguments broadcast to one shape.

    Newton steps ``x - (F(x) - u) / f(x)``; a step that leaves the bracket (or a
    zero/non-finite density) is replaced by bisection. An element stops when its
    residual is below 1e-13 min(u, 1 - u) or its bracket has shrunk to rounding;
    only the unfinished elements are evaluated again.
    """
    u, lo, hi, x, *params = torch.broadcast_tensors(u, lo, hi, x0, *params)
    shape = u.shape
    u, lo, hi, x = (t.reshape(-1).clone() for t in (u, lo, hi, x))
    params = [p.reshape(-1) for p in params]
    x = torch.minimum(torch.maximum(x, lo), hi)
    out = x.clone()
    act = torch.arange(u.numel(), device=u.device)
    tol = 1e-13 * torch.minimum(u, 1.0 - u) + 1e-300
    for _ in range(max_iter):
        if act.numel() == 0:
            break
        ps = [p[act] for p in params]
        xa, ua, la, ha = x[act], u[act], lo[act], hi[act]
        r = cdf(xa, *ps) - ua
        la = torch.where(r <= 0, xa, la)
        ha = torch.where(r >= 0, xa, ha)
        done = (r.abs() <= tol[act]) | ((ha - la) <= 4 * _EPS * xa.abs() + 1e-300)
        out[act] = xa
        keep = ~done
        act, xa, ua, la, ha, r, ps = act[keep], xa[keep], ua[keep], la[keep], ha[keep], r[keep], [p[keep] for p in ps]
        xn = xa - r / pdf(xa, *ps)
        bad = ~((xn > la) & (xn < ha))          # also catches NaN
        xn = torch.where(bad, 0.5 * (la + ha), xn)
        x[act], lo[act], hi[act] = xn, la, ha
    else:
        out[act] = x[act]
    return out.reshape(shape)


def _table_start(ppf_small, u, *params, threshold: int = 20000):
    """Starting points for many u with scalar parameters: solve the quantile on
    a 521-point grid of u (log-spaced in both tails) and interpolate linearly.
    Newton then needs about two steps instead of five or six. None when not
    worth it (few u, or batched parameters)."""
    if u.numel() <= threshold or any(torch.as_tensor(p).numel() != 1 for p in params):
        return None
    dev = u.device
    lo = torch.logspace(-12, -2, 64, dtype=F64, device=dev)
    ug = torch.cat([lo, torch.linspace(0.01, 0.99, 393, dtype=F64, device=dev)[1:-1], (1.0 - lo).flip(0)])
    xg = ppf_small(ug)
    uf = u.reshape(-1)
    i = torch.searchsorted(ug, uf).clamp(1, ug.numel() - 1)
    u0, u1, x0, x1 = ug[i - 1], ug[i], xg[i - 1], xg[i]
    w = ((uf - u0) / (u1 - u0)).clamp(0.0, 1.0)
    out = x0 + w * (x1 - x0)
    return torch.where(torch.isfinite(out), out, torch.full_like(out, math.nan)).reshape(u.shape)


def _expand_hi(cdf, u, hi):
    """Double ``hi`` (> 0) until cdf(hi) >= u everywhere."""
    hi = hi.clone()
    for _ in range(1100):
        short = cdf(hi) < u
        if not bool(short.any()):
            return hi
        hi = torch.where(short, hi * 2.0, hi)
    raise ValueError("could not bracket the quantile; is u below 1?")


def _prep(u, *params):
    u = as_f64(u, name="u")
    ps = [as_f64(p, name="parameter").to(u.device) for p in params]
    return torch.broadcast_tensors(u, *ps)


# -- Gamma and Chi2 ------------------------------------------------------------

def gamma_cdf(x, concentration, rate=1.0) -> torch.Tensor:
    """CDF of Gamma(concentration a, rate): ``P(a, rate x)`` (torch.special.gammainc)."""
    x, a, r = _prep(x, concentration, rate)
    z = (x * r).clamp_min(0.0)
    out = _gammainc(a, z)
    return torch.where(torch.isnan(x), x, out)


def _std_gamma_pdf(x, a):
    return torch.exp((a - 1.0) * torch.log(x.clamp_min(_TINY)) - x - torch.lgamma(a))


def gamma_ppf(u, concentration, rate=1.0) -> torch.Tensor:
    """Quantile of Gamma(concentration, rate) by safeguarded Newton on gammainc."""
    tab = _table_start(lambda g: gamma_ppf(g, concentration), as_f64(u, name="u"), concentration)
    u, a, r = _prep(u, concentration, rate)
    cdf = lambda z: _gammainc(a, z)  # noqa: E731
    # Wilson-Hilferty start; for small u the small-x expansion P(a, x) ~ x^a / Gamma(a+1).
    z = torch.special.ndtri(u.clamp(1e-300, 1 - 1e-16))
    wh = a * (1.0 - 1.0 / (9.0 * a) + z / (3.0 * torch.sqrt(a))) ** 3
    small = torch.exp((torch.log(u.clamp_min(1e-300)) + torch.lgamma(a + 1.0)) / a)
    x0 = torch.where((wh > 0) & (wh > small), wh, small)
    if tab is not None:
        x0 = torch.where(torch.isnan(tab), x0, tab)
    hi = _expand_hi(cdf, torch.where(u < 1, u, torch.zeros_like(u)), torch.clamp_min(a + 10.0 * torch.sqrt(a) + 10.0, 1.0))
    x = _invert(lambda z, a: _gammainc(a, z),
                _std_gamma_pdf, u, torch.zeros_like(u), hi, x0, (a,))
    x = torch.where(u <= 0, torch.zeros_like(x), x)
    x = torch.where(u >= 1, torch.full_like(x, math.inf), x)
    return x / r


def chi2_cdf(x, df) -> torch.Tensor:
    """CDF of the chi-square law with ``df`` degrees of freedom (Gamma(df/2, 1/2))."""
    return gamma_cdf(x, as_f64(df, name="df") / 2.0, 0.5)


def chi2_ppf(u, df) -> torch.Tensor:
    """Quantile of the chi-square law with ``df`` degrees of freedom."""
    return gamma_ppf(u, as_f64(df, name="df") / 2.0, 0.5)


# -- Beta ----------------------------------------------------------------------

def beta_cdf(x, a, b) -> torch.Tensor:
    """CDF of Beta(a, b): ``I_x(a, b)``, 0 below 0 and 1 above 1."""
    x, a, b = _prep(x, a, b)
    xc = x.clamp(0.0, 1.0)
    out = _betainc_xy(a, b, xc, 1.0 - xc)
    return torch.where(torch.isnan(x), x, out)


def beta_ppf(u, a, b) -> torch.Tensor:
    """Quantile of Beta(a, b) by safeguarded Newton on :func:`betainc` over [0, 1]."""
    tab = _table_start(lambda g: beta_ppf(g, a, b), as_f64(u, name="u"), a, b)
    u, a, b = _prep(u, a, b)
    lbeta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)

    def cdf(x, a, b, lbeta):
        return _betainc_xy(a, b, x, 1.0 - x)

    def pdf(x, a, b, lbeta):
        xc = x.clamp(_TINY, 1.0)
        yc = (1.0 - x).clamp(_TINY, 1.0)
        return torch.exp((a - 1.0) * torch.log(xc) + (b - 1.0) * torch.log(yc) - lbeta)

    # Start from the leading terms I_x ~ x^a / (a B) near 0 and 1 - (1-x)^b / (b B)
    # near 1 (Newton from the mean crawls where the density is singular), else the mean.
    mean = a / (a + b)
    near0 = torch.exp((torch.log(u.clamp_min(1e-300)) + torch.log(a) + lbeta) / a)
    near1 = 1.0 - torch.exp((torch.log((1.0 - u).clamp_min(1e-300)) + torch.log(b) + lbeta) / b)
    x0 = torch.where(near0 < mean, near0, torch.where(near1 > mean, near1, mean))
    if tab is not None:
        x0 = torch.where(torch.isnan(tab), x0, tab)
    x = _invert(cdf, pdf, u, torch.zeros_like(u), torch.ones_like(u), x0, (a, b, lbeta))
    x = torch.where(u <= 0, torch.zeros_like(x), x)
    return torch.where(u >= 1, torch.ones_like(x), x)


# -- Student's t ---------------------------------------------------------------

def _t_lower(t, df):
    """P(T <= t) for t <= 0: 0.5 I_{df/(df+t^2)}(df/2, 1/2), with 1 - x = t^2/(df+t^2)."""
    t2 = t * t
    x = df / (df + t2)
    y = torch.where(torch.isinf(t2), torch.ones_like(t2), t2 / (df + t2))
    return 0.5 * _betainc_xy(df / 2.0, torch.full_like(df, 0.5), x, y)


def student_t_cdf(x, df, loc=0.0, scale=1.0) -> torch.Tensor:
    """CDF of Student's t with ``df`` degrees of freedom, location and scale."""
    x, df, loc, scale = _prep(x, df, loc, scale)
    t = (x - loc) / scale
    lower = _t_lower(-t.abs().nan_to_num(0.0), df)
    out = torch.where(t <= 0, lower, 1.0 - lower)
    return torch.where(torch.isnan(x), x, out)


def student_t_ppf(u, df, loc=0.0, scale=1.0) -> torch.Tensor:
    """Quantile of Student's t: solve the lower half (t <= 0) and use symmetry."""
    tab = _table_start(lambda g: student_t_ppf(g, df), as_f64(u, name="u"), df)
    u, df, loc, scale = _prep(u, df, loc, scale)
    df = df.contiguous()
    p = torch.minimum(u, 1.0 - u)                      # in [0, 1/2]
    lognorm = (torch.lgamma((df + 1.0) / 2.0) - torch.lgamma(df / 2.0)
               - 0.5 * torch.log(df * math.pi))

    def cdf(t, df, lognorm):
        return _t_lower(t.clamp_max(0.0), df)

    def pdf(t, df, lognorm):
        return torch.exp(lognorm - (df + 1.0) / 2.0 * torch.log1p(t * t / df))

    # Bracket [lo, 0]: start from the power tail F(t) ~ c df^((df-1)/2) |t|^-df
    # (an overestimate of |t| once doubled) and grow lo until cdf(lo) <= p.
    logt = (lognorm + (df - 1.0) / 2.0 * torch.log(df) - torch.log(p.clamp_min(1e-300))) / df
    lo = -2.0 * torch.exp(logt.clamp(0.0, 700.0))
    for _ in range(1100):
        short = cdf(lo, df, lognorm) > p
        if not bool(short.any()):
            break
        lo = torch.where(short, lo * 2.0, lo)
    x0 = torch.special.ndtri(p.clamp(1e-300, 0.5))
    if tab is not None:   # the table is of the standard t at u; the lower half at p is -|.|
        tab = -tab.abs()
        x0 = torch.where(torch.isnan(tab), x0, tab)
    t = _invert(cdf, pdf, p, lo, torch.zeros_like(p), x0, (df, lognorm))
    t = torch.where(p <= 0, torch.full_like(t, -math.inf), t)
    t = torch.where(u > 0.5, -t, t)
    return loc + scale * t


# -- the sampler ---------------------------------------------------------------

def _support_of(dist) -> tuple[float, float]:
    try:
        c = dist.support
    except NotImplementedError:
        return (-math.inf, math.inf)
    lo = getattr(c, "lower_bound", -math.inf)
    hi = getattr(c, "upper_bound", math.inf)
    if isinstance(c, (D.constraints._GreaterThan, D.constraints._GreaterThanEq)):
        hi = math.inf
    if isinstance(c, (D.constraints._LessThan,)):
        lo = -math.inf
    lo = float(lo) if not torch.is_tensor(lo) or lo.numel() == 1 else lo
    hi = float(hi) if not torch.is_tensor(hi) or hi.numel() == 1 else hi
    return (lo, hi)


class DistributionSampler(Sampler):
    """Inverse-transform sampler of a torch distribution (built by
    :func:`from_distribution`). ``ppf``/``cdf`` use the family's own icdf/cdf or the
    numerical quantiles of this module; ``batch_shape`` is the distribution's."""

    def __init__(self, dist: D.Distribution, ppf_fn, cdf_fn, *, dtype):
        self.dist = dist
        self._ppf_fn, self._cdf_fn = ppf_fn, cdf_fn
        self.dtype = dtype
        self.batch_shape = dist.batch_shape
        p = next((v for v in vars(dist).values() if torch.is_tensor(v)), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.support = _support_of(dist)

    def _ppf(self, u):
        x = self._ppf_fn(u.to(self.dtype)).to(F64)
        # u = 0 and 1 are the ends of the support exactly (torch's Cauchy.icdf(0)
        # is tan(-pi/2) = -1.6e16, for instance)
        lo, hi = self.support
        x = torch.where(u <= 0, torch.as_tensor(lo, dtype=F64, device=x.device), x)
        return torch.where(u >= 1, torch.as_tensor(hi, dtype=F64, device=x.device), x)

    def _cdf(self, x):
        nan = torch.isnan(x)
        out = self._cdf_fn(torch.where(nan, torch.zeros_like(x), x).to(self.dtype)).to(F64)
        return torch.where(nan, x, out)

    def __repr__(self):
        return f"DistributionSampler({self.dist!r})"


def from_distribution(dist: D.Distribution) -> DistributionSampler:
    """Inverse-transform sampler of a (univariate) torch distribution.

    Families with ``icdf`` use it; Gamma, Chi2, Beta and StudentT, which torch
    lacks quantiles for, use the numerical quantiles of this module (u-error below
    1e-12 in float64). Accuracy follows the distribution's dtype: build it with
    float64 parameters to get float64 quantiles (float32 gives about 1e-7 in u).
    Parameters that are NaN or inf raise ValueError.
    """
    if not isinstance(dist, D.Distribution):
        raise ValueError(f"from_distribution needs a torch.distributions.Distribution, got {type(dist).__name__}")
    if dist.event_shape != torch.Size():
        raise ValueError("from_distribution needs a univariate distribution (event_shape ())")
    for k, v in vars(dist).items():
        if torch.is_tensor(v) and v.is_floating_point():
            check_finite(v, f"distribution parameter {k!r}")
    dtype = next((v.dtype for v in vars(dist).values() if torch.is_tensor(v) and v.is_floating_point()),
                 torch.get_default_dtype())
    if isinstance(dist, D.Gamma):          # Chi2 is a Gamma
        a, r = dist.concentration, dist.rate
        return DistributionSampler(dist, lambda u: gamma_ppf(u, a, r).to(u.dtype),
                                   lambda x: gamma_cdf(x, a, r).to(x.dtype), dtype=F64)
    if isinstance(dist, D.Beta):
        a, b = dist.concentration1, dist.concentration0
        return DistributionSampler(dist, lambda u: beta_ppf(u, a, b), lambda x: beta_cdf(x, a, b), dtype=F64)
    if isinstance(dist, D.StudentT):
        df, loc, scale = dist.df, dist.loc, dist.scale
        return DistributionSampler(dist, lambda u: student_t_ppf(u, df, loc, scale),
                                   lambda x: student_t_cdf(x, df, loc, scale), dtype=F64)
    try:
        dist.icdf(torch.full(dist.batch_shape, 0.5, dtype=dtype))
    except NotImplementedError:
        raise ValueError(f"{type(dist).__name__} has no icdf; describe it to from_pdf or from_cdf "
                         "instead") from None
    return DistributionSampler(dist, dist.icdf, dist.cdf, dtype=dtype)
