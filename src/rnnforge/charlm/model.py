"""Character language model: embedding -> recurrent stack -> readout δ -> logits."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..engines.decode import TokenDecoder, step_tokens
from ..errors import UserError
from ..layers import CELL_NAMES, make_layer
from ..readout import Readout

#: --cell values: the notes' sigmoid RNN, the tanh RNN, GRU and LSTM
CELLS = CELL_NAMES


@dataclass
class CharLMConfig:
    vocab_size: int
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 2
    embed: int = 0  # 0: same as hidden
    dropout: float = 0.0
    tie_weights: bool = False
    bias: bool = True
    engine: str = "auto"

    def __post_init__(self):
        if self.cell not in CELLS:
            raise UserError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.embed == 0:
            self.embed = self.hidden
        if self.tie_weights and self.embed != self.hidden:
            raise UserError(f"--tie-weights needs --embed equal to --hidden ({self.embed} != {self.hidden})")


class CharLM(nn.Module):
    """Next-character model over a vocabulary of V characters.

    ids (B, T) -> embedding (B, T, E) -> rnnforge RNN/GRU/LSTM -> z (B, T, H)
    -> Readout δ -> logits (B, T, V). With ``tie_weights`` the readout's δ is
    the embedding matrix (E = H), which saves V*H parameters.
    """

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed)
        self.drop = nn.Dropout(c.dropout)
        self.rnn = make_layer(c.cell, c.embed, c.hidden, num_layers=c.layers, dropout=c.dropout,
                              bias=c.bias, engine=c.engine, batch_first=True)
        self.readout = Readout(c.hidden, c.vocab_size)
        if c.tie_weights:
            self.readout.delta = self.embedding.weight

    def forward(self, ids: torch.Tensor, state=None):
        """(B, T) ids and optional state -> logits (B, T, V), new state."""
        x = self.drop(self.embedding(ids))  # (B, T, E)
        z, state = self.rnn(x, state)  # (B, T, H)
        return self.readout(self.drop(z)), state  # (B, T, V)

    @torch.no_grad()
    def step(self, ids: torch.Tensor, state=None):
        """One character per row: ids (B,) -> logits (B, V), new state.

        Same function as ``forward`` on one step; the decode path reads layer 0's
        input projection from a cached (V, G*H) table instead of multiplying.
        """
        z, state = step_tokens(self.rnn, self.embedding, ids, state)  # (B, H)
        return self.readout(z), state

    def decoder(self, state=None, batch: int = 1) -> TokenDecoder:
        """A stepper for generation: ``decoder(state).step(ids)`` -> logits (batch, V).

        Computes what repeated ``step`` calls compute, carrying the state inside
        and reusing its buffers (``engines.decode.TokenDecoder``); the logits it
        returns are overwritten by its next step.
        """
        return TokenDecoder(self.rnn, self.embedding, self.readout, state, batch)

    def config_dict(self) -> dict:
        return asdict(self.config)
