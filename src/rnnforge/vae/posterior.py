"""The fitted aggregate posterior: Ex2 beyond the prior, Ex1 to check it.

The codes a VAE gives its training lines, ``z ~ q(z|x)``, follow the aggregate
posterior ``q(z) = E_x q(z|x)``, which is rarely the N(0, I) prior: decoding
prior draws that fall where no training code lies (the "prior hole") gives poor
lines. This fits q(z) and samples it by inverse transform:

* marginals: per dimension j the interpolated empirical quantile function
  ``G_j^{-1}`` of the training codes, with exponential tails
  (:func:`rnnforge.sampling.from_samples`): monotone, so ``G_j(z_j)`` is the
  PIT of a code under the fit;
* dependence: a Gaussian copula. The normal scores ``w_j = Phi^{-1}(G_j(z_j))``
  of the training codes give a correlation matrix R = L L^T.

Drawing: ``eps ~ N(0, I)``, ``w = L eps``, ``u = Phi(w)``, ``z_j = G_j^{-1}(u_j)``.
Each ``u_j`` is U(0, 1) because ``w_j`` is N(0, 1) (R has a unit diagonal), so
each marginal is exactly the fitted one, and the ranks keep the codes' correlations.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..sampling import from_samples

F64 = torch.float64
#: the training codes kept for the marginals (a random subset beyond this), enough for the tails
MAX_POINTS = 20_000


class AggregatePosterior:
    """``data`` (n, d): each column's sorted codes; ``chol`` (d, d): the copula's Cholesky factor."""

    def __init__(self, data: torch.Tensor, chol: torch.Tensor) -> None:
        self.data = torch.sort(data.to(F64), 0).values
        self.chol = chol.to(F64)
        self.marginals = [from_samples(self.data[:, j]) for j in range(self.data.shape[1])]

    @property
    def dim(self) -> int:
        return self.data.shape[1]

    @classmethod
    def fit(cls, codes: torch.Tensor, *, generator: torch.Generator | None = None,
            max_points: int = MAX_POINTS) -> "AggregatePosterior":
        codes = codes.detach().to(F64).cpu()
        if codes.dim() != 2 or codes.shape[0] < 3:
            raise UserError(f"the aggregate posterior needs at least 3 codes, got shape {tuple(codes.shape)}")
        if codes.shape[0] > max_points:
            codes = codes[torch.randperm(codes.shape[0], generator=generator)[:max_points]]
        marg = [from_samples(codes[:, j]) for j in range(codes.shape[1])]
        u = torch.stack([m.cdf(codes[:, j]) for j, m in enumerate(marg)], 1)
        n = codes.shape[0]
        u = u.clamp(0.5 / n, 1 - 0.5 / n)
        w = torch.special.ndtri(u)
        r = torch.corrcoef(w.T).reshape(codes.shape[1], codes.shape[1])
        r = torch.nan_to_num(r, nan=0.0)
        r.fill_diagonal_(1.0)
        # a hair of ridge keeps R positive definite when dimensions are (nearly) collinear
        chol = torch.linalg.cholesky((r + 1e-6 * torch.eye(r.shape[0], dtype=F64)) / (1 + 1e-6))
        return cls(codes.float(), chol)  # stored as float32: the same fit before and after a reload

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes (n, d), float64."""
        eps = torch.randn(n, self.dim, dtype=F64, generator=generator)
        u = torch.special.ndtr(eps @ self.chol.T).clamp(1e-300, 1 - 2 ** -53)
        return torch.stack([m.ppf(u[:, j]) for j, m in enumerate(self.marginals)], 1)

    def cdf(self, z: torch.Tensor) -> torch.Tensor:
        """Per-dimension PIT of codes z (n, d) under the fitted marginals (Ex1)."""
        z = z.detach().to(F64).cpu()
        return torch.stack([m.cdf(z[:, j]) for j, m in enumerate(self.marginals)], 1)

    def tensors(self, prefix: str = "posterior.") -> dict[str, torch.Tensor]:
        return {prefix + "data": self.data.float(), prefix + "chol": self.chol}

    @classmethod
    def from_tensors(cls, tensors: dict, latent: int, where: str,
                     prefix: str = "posterior.") -> "AggregatePosterior | None":
        if prefix + "data" not in tensors:
            return None
        data, chol = tensors[prefix + "data"], tensors.get(prefix + "chol")
        if (chol is None or data.dim() != 2 or data.shape[1] != latent or data.shape[0] < 3
                or tuple(chol.shape) != (latent, latent)
                or not torch.isfinite(data).all() or not torch.isfinite(chol).all()):
            raise UserError(f"{where}: the stored aggregate posterior does not fit a {latent}-dimensional "
                            f"code; fit it again with evaluate")
        return cls(data, chol)


def left_out_pit(codes: torch.Tensor, n: int, *, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, AggregatePosterior]:
    """Ex1 on the fit itself: ``n`` random rows of ``codes`` (N, d) are left out, the rest fitted;
    returns the left-out rows' PIT under that fit (n, d) and the fit. The left-out rows are
    independent draws from what was fitted, so their PIT is uniform when the fit is right."""
    codes = codes.detach().to(F64).cpu()
    if not 1 <= n <= codes.shape[0] - 3:
        raise UserError(f"leaving {n} of {codes.shape[0]} codes out of the fit leaves too few to fit")
    perm = torch.randperm(codes.shape[0], generator=generator)
    post = AggregatePosterior.fit(codes[perm[n:]], generator=generator)
    return post.cdf(codes[perm[:n]]), post
