"""A recurrent variational autoencoder of lines (Bowman et al. 2016) on the notes' cells.

Ex2 draws the codes (``z = mu + sigma * Phi^{-1}(u)``, and the fitted aggregate
posterior sampled through a Gaussian copula over monotone marginal quantile
functions); Ex1 checks them (the PIT of held-out codes under the prior and under
the fit). One library call per action: :func:`train`, :func:`sample`,
:func:`interpolate`, :func:`evaluate`. See docs/vae.md.
"""

from .checkpoint import BEST, LAST, load_vae
from .evaluate import evaluate, interpolate, sample
from .model import SequenceVAE, VAEConfig, gaussian_kl, reparameterize
from .posterior import AggregatePosterior
from .train import Trainer, VAETrainConfig, resolve_config, train

__all__ = ["AggregatePosterior", "BEST", "LAST", "SequenceVAE", "Trainer", "VAEConfig", "VAETrainConfig",
           "evaluate", "gaussian_kl", "interpolate", "load_vae", "reparameterize", "resolve_config", "sample",
           "train"]
