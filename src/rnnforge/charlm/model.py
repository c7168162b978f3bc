"""Character language model: embedding -> recurrent stack -> readout δ -> logits."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..engines.decode import TokenDecoder, step_tokens
from ..errors import OptionError, check_float, check_int
from ..layers import CELL_NAMES, make_layer
from ..readout import Readout

#: cell values: the notes' sigmoid RNN, the tanh RNN, GRU and LSTM
CELLS = CELL_NAMES

#: weight matrices per layer of each cell (the GRU also has one extra bias vector)
GATES = {"rnn": 1, "rnn-tanh": 1, "gru": 3, "lstm": 4}


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
        from ..engines import ENGINES

        if self.cell not in CELLS:
            raise OptionError("cell", f"{self.cell!r} is unknown; choose one of {', '.join(CELLS)}")
        check_int("vocab_size", self.vocab_size, low=1)
        check_int("hidden", self.hidden, low=1)
        check_int("layers", self.layers, low=1)
        check_int("embed", self.embed, low=0)
        check_float("dropout", self.dropout, low=0, high=1, high_open=True)
        for name in ("tie_weights", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.engine != "auto" and self.engine not in ENGINES:
            raise OptionError("engine", f"{self.engine!r} is unknown; choose auto or one of "
                                        f"{', '.join(sorted(ENGINES))}")
        if self.embed == 0:
            self.embed = self.hidden
        if self.tie_weights and self.embed != self.hidden:
            raise OptionError("tie_weights", f"needs the embedding as wide as the hidden layer "
                                             f"(embed {self.embed} != hidden {self.hidden})")


def parameter_count(c: CharLMConfig) -> int:
    """The model's number of parameters, counted from the config alone (nothing allocated).

    Per layer and gate a weight (H, in) on the input, one (H, H) on the state and a
    bias (H,); embedding (V, E); readout δ (V, H), shared with the embedding when
    tied, and its bias (V,), which the readout always has.
    """
    V, E, H, G = c.vocab_size, c.embed or c.hidden, c.hidden, GATES[c.cell]
    n = V * E + (0 if c.tie_weights else V * H) + V
    for layer in range(c.layers):
        n += G * H * ((E if layer == 0 else H) + H)
        if c.bias:
            n += G * H + (H if c.cell == "gru" else 0)
    return n


def memory_bytes(device) -> int:
    """The memory of ``device``: the GPU's, or the machine's physical RAM."""
    import os

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_fits(c: CharLMConfig, device, copies: int = 4) -> int:
    """Refuse a model whose float32 ``copies`` (weights, gradients, AdamW's two moments) exceed the device's memory."""
    n = parameter_count(c)
    need, have = 4 * copies * n, memory_bytes(device)
    if need > have:
        option = "embed" if c.embed > c.hidden else "layers" if c.layers > c.hidden else "hidden"
        raise OptionError(option, f"{getattr(c, option)} is too large: the model would have {n:,} "
                                  f"parameters, about {human_bytes(need)} to train (float32 weights, "
                                  f"gradients and two AdamW moments), more than the {human_bytes(have)} "
                                  f"of memory of {torch.device(device).type}; use a smaller value")
    return n


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
