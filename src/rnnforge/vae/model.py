"""The sequence VAE of Bowman et al. 2016 ("Generating Sentences from a Continuous Space") on the notes' cells.

Shapes: B lines, T characters (the longest line of the batch), E embedding, H
hidden units, D directions of the encoder (1 or 2), L layers, d latent dims,
V characters of the vocabulary (id 0 is the line boundary ``"\\n"``; id V is the
mask of character dropout, an input only).

Encoder: ids (B, T) -> embedding -> RNN/GRU/LSTM (optionally bidirectional, run
with ``lengths=`` so padding is inert) -> the last layer's final state of each
direction (B, D*H) -> ``mu`` and ``logvar`` (B, d): ``q(z|x) = N(mu, diag sigma^2)``.

The draw (Ex2): ``z = mu + sigma * Phi^{-1}(u)``, u ~ U(0, 1) per dimension: the
inverse transform of the standard normal, then a location-scale map, so the
gradient reaches mu and sigma through a fixed u (the reparameterisation).

Decoder: its initial state is ``tanh(W z + b)`` (for the LSTM both z_0 and C_0),
and z is appended to the input of every step, so the code cannot be forgotten
along the line. Inputs ``[\\n, x_1 .. x_n]``, targets ``[x_1 .. x_n, \\n]``; the
readout δ gives the categorical over the V characters. With ``readout_z`` the
readout sees ``[h_t, z]`` (H+d features) instead of ``h_t``: a path from the
code to every character's logits that does not pass through the recurrence.

Per line (nats): ``-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I))``, the KL
in closed form per dimension, ``0.5 (mu^2 + sigma^2 - 1 - log sigma^2)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionError, check_float, check_int
from ..layers import CELL_NAMES, make_layer
from ..readout import Readout

CELLS = CELL_NAMES
LOG_2PI = math.log(2 * math.pi)
#: u is kept in [U_MIN, U_MAX] so that Phi^{-1}(u) is finite (float64 draws may hit 0);
#: U_MAX is the largest float64 below 1
U_MIN, U_MAX = 2.0 ** -54, 1.0 - 2.0 ** -53


@dataclass
class VAEConfig:
    vocab_size: int
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed: int = 64
    latent: int = 32
    bidirectional: bool = True
    max_len: int = 120
    engine: str = "auto"
    #: the readout sees z beside the decoder's state; False in checkpoints written without it
    readout_z: bool = False

    def __post_init__(self):
        from ..engines import ENGINES

        if self.cell not in CELLS:
            raise OptionError("cell", f"{self.cell!r} is unknown; choose one of {', '.join(CELLS)}")
        check_int("vocab_size", self.vocab_size, low=2)
        check_int("hidden", self.hidden, low=1)
        check_int("layers", self.layers, low=1)
        check_int("embed", self.embed, low=1)
        check_int("latent", self.latent, low=1)
        check_int("max_len", self.max_len, low=1)
        for name in ("bidirectional", "readout_z"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.engine != "auto" and self.engine not in ENGINES:
            raise OptionError("engine", f"{self.engine!r} is unknown; choose auto or one of "
                                        f"{', '.join(sorted(ENGINES))}")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per dimension, in nats (same shape as mu)."""
    return 0.5 * (mu * mu + logvar.exp() - 1.0 - logvar)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)), summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 / logvar.exp()).sum(-1)


def uniforms(shape, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """u ~ U(0, 1) in float64, never exactly 0 or 1."""
    u = torch.rand(shape, dtype=torch.float64, generator=generator, device=device)
    return u.clamp_(U_MIN, U_MAX)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Ex2: ``z = mu + sigma * Phi^{-1}(u)``; u (..., d) broadcasts against mu (..., d)."""
    eps = torch.special.ndtri(u).to(mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


class SequenceVAE(nn.Module):
    """Encoder q(z|x), decoder p(x|z); see the module doc."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = c = config
        V, D = c.vocab_size, 2 if c.bidirectional else 1
        self.mask_id = V
        self.embedding = nn.Embedding(V + 1, c.embed)  # shared by encoder and decoder; row V: the mask
        self.encoder = make_layer(c.cell, c.embed, c.hidden, num_layers=c.layers, bias=True,
                                  batch_first=True, bidirectional=c.bidirectional, engine=c.engine)
        self.to_mu = nn.Linear(D * c.hidden, c.latent)
        self.to_logvar = nn.Linear(D * c.hidden, c.latent)
        self.states = 2 if c.cell == "lstm" else 1
        self.to_state = nn.Linear(c.latent, self.states * c.layers * c.hidden)
        self.decoder = make_layer(c.cell, c.embed + c.latent, c.hidden, num_layers=c.layers, bias=True,
                                  batch_first=True, engine=c.engine)
        self.readout = Readout(c.hidden + (c.latent if c.readout_z else 0), V)

    def config_dict(self) -> dict:
        return asdict(self.config)

    # -- q(z|x) -------------------------------------------------------------------
    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T), lengths (B,) -> mu, logvar (B, d)."""
        c = self.config
        D = 2 if c.bidirectional else 1
        _, state = self.encoder(self.embedding(ids), lengths=lengths)
        h = state[0] if isinstance(state, tuple) else state  # (D*L, B, H)
        h = h[-D:].transpose(0, 1).reshape(ids.shape[0], D * c.hidden)  # last layer: (B, D*H)
        return self.to_mu(h), self.to_logvar(h)

    # -- p(x|z) -------------------------------------------------------------------
    def initial_state(self, z: torch.Tensor):
        c = self.config
        s = torch.tanh(self.to_state(z)).view(z.shape[0], self.states, c.layers, c.hidden)
        s = s.permute(1, 2, 0, 3).contiguous()  # (S, L, B, H)
        return (s[0], s[1]) if self.states == 2 else s[0]

    def decoder_inputs(self, ids: torch.Tensor, char_dropout: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """``[\\n, x_1 .. x_n]`` (B, T+1); in training mode each character is replaced by the
        mask with probability ``char_dropout`` (never at evaluation)."""
        inp = F.pad(ids, (1, 0), value=0)  # (B, T+1)
        if self.training and char_dropout > 0:
            drop = torch.rand(ids.shape, generator=generator, device=ids.device) < char_dropout
            inp[:, 1:] = torch.where(drop, torch.full_like(ids, self.mask_id), ids)
        return inp

    def decode(self, inp: torch.Tensor, lengths: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Decoder inputs (B, T+1), line lengths (B,), z (B, d) -> logits (B, T+1, V)."""
        x = self.embedding(inp)  # (B, T+1, E)
        x = torch.cat([x, z.unsqueeze(1).expand(-1, x.shape[1], -1).to(x.dtype)], -1)  # (B, T+1, E+d)
        out, _ = self.decoder(x, self.initial_state(z), lengths=lengths + 1)
        return self.readout(self.readout_input(out, z))

    def readout_input(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The decoder's states (B, T, H) or (B, H), with z (B, d) appended under ``readout_z``."""
        if not self.config.readout_z:
            return h
        z = z.to(h.dtype)
        return torch.cat([h, z.unsqueeze(1).expand(-1, h.shape[1], -1) if h.dim() == 3 else z], -1)

    def reconstruction(self, ids: torch.Tensor, lengths: torch.Tensor, z: torch.Tensor,
                       char_dropout: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """-log p(x|z) per line in nats (B,), the boundary after the last character included."""
        logits = self.decode(self.decoder_inputs(ids, char_dropout, generator), lengths, z)
        pos = torch.arange(ids.shape[1] + 1, device=ids.device)
        targets = F.pad(ids, (0, 1), value=0)  # (B, T+1)
        targets = targets.masked_fill(pos == lengths.unsqueeze(1), 0)  # the boundary after the last character
        # half logits (autocast) are scored in float32; float64 stays float64
        logits = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T+1)
        keep = pos <= lengths.unsqueeze(1)
        return (nll * keep).sum(1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, *, u: torch.Tensor | None = None,
                generator: torch.Generator | None = None, char_dropout: float = 0.0) -> dict:
        """One-sample ELBO terms per line: ``rec`` (B,) and ``kl`` (B, d) in nats, with mu, logvar, z."""
        mu, logvar = self.encode(ids, lengths)
        if u is None:
            u = uniforms(mu.shape, generator=generator, device=mu.device)
        z = reparameterize(mu, logvar, u)
        rec = self.reconstruction(ids, lengths, z, char_dropout, generator)
        return {"rec": rec, "kl": gaussian_kl(mu, logvar), "mu": mu, "logvar": logvar, "z": z}

    @torch.no_grad()
    def importance_nll(self, ids: torch.Tensor, lengths: torch.Tensor, samples: int, *,
                       generator: torch.Generator | None = None, chunk: int = 50) -> torch.Tensor:
        """Burda et al. 2016: ``-log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)``, z_k ~ q(z|x), per line
        in nats (B,). An upper bound on -log p(x) that tightens as K grows; K = 1 is the ELBO's
        one-sample estimate."""
        check_int("samples", samples, low=1)
        mu, logvar = self.encode(ids, lengths)
        B, d = mu.shape
        logw = []
        for start in range(0, samples, chunk):
            k = min(chunk, samples - start)
            u = uniforms((B, k, d), generator=generator, device=mu.device)
            z = reparameterize(mu.unsqueeze(1), logvar.unsqueeze(1), u)  # (B, k, d)
            rec = self.reconstruction(ids.repeat_interleave(k, 0), lengths.repeat_interleave(k, 0),
                                      z.reshape(B * k, d)).view(B, k)
            zero = torch.zeros_like(mu).unsqueeze(1)
            logw.append(-rec + log_normal(z, zero, zero) - log_normal(z, mu.unsqueeze(1), logvar.unsqueeze(1)))
        logw = torch.cat(logw, 1)  # (B, K)
        return -(torch.logsumexp(logw.double(), 1) - math.log(samples)).to(mu.dtype)

    # -- generation ---------------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: torch.Tensor, *, temperature: float = 1.0, greedy: bool = False,
                 generator: torch.Generator | None = None, max_len: int | None = None) -> list[torch.Tensor]:
        """One line per code z (N, d): characters drawn by inverse transform of each step's
        categorical (or its argmax with ``greedy``) until the boundary or ``max_len``."""
        from ..sampling.categorical import CategoricalStepper

        max_len = self.config.max_len if max_len is None else max_len
        N, dev = z.shape[0], z.device
        state = self.initial_state(z)
        prev = torch.zeros(N, dtype=torch.long, device=dev)
        done = torch.zeros(N, dtype=torch.bool, device=dev)
        out = torch.zeros(N, max_len, dtype=torch.long, device=dev)
        lengths = torch.full((N,), max_len, dtype=torch.long, device=dev)
        draw = None if greedy else CategoricalStepper(
            N, self.config.vocab_size, temperature=temperature, generator=generator,
            dtype=torch.float32, device=dev, block=min(max_len + 1, 256)).draw
        for t in range(max_len + 1):
            x = torch.cat([self.embedding(prev), z.to(self.embedding.weight.dtype)], -1)  # (N, E+d)
            h, state = self.decoder(x.unsqueeze(1), state)  # (N, 1, H)
            logits = self.readout(self.readout_input(h[:, 0], z)).float()  # (N, V)
            nxt = logits.argmax(-1) if greedy else draw(logits)
            ended = (nxt == 0) & ~done
            lengths = torch.where(ended, torch.full_like(lengths, t), lengths)
            done |= nxt == 0
            if t < max_len:
                out[:, t] = torch.where(done, torch.zeros_like(nxt), nxt)
            if bool(done.all()):
                break
            prev = nxt
        return [out[i, :int(lengths[i])].cpu() for i in range(N)]


def check_train_options(*, free_bits: float, char_dropout: float) -> None:
    check_float("free_bits", free_bits, low=0)
    check_float("char_dropout", char_dropout, low=0, high=1, high_open=True)
