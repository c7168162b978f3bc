"""The notes' δ: output weights from the top hidden state, ``y = delta z (+ b)``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Readout(nn.Module):
    """``y = delta z + b``: maps hidden states (..., H) to outputs (..., O).

    Θ in the notes lists δ_m, which none of the shown equations uses; rnnforge
    reads it as these output weights. ``delta`` is (O, H), row ``k`` the weights
    of output ``k``; ``b`` (O,) exists when ``bias=True`` (the default, since a
    language model's logits need an offset per class).
    """

    def __init__(self, hidden_size: int, output_size: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.hidden_size, self.output_size = hidden_size, output_size
        self.delta = nn.Parameter(torch.empty(output_size, hidden_size, **factory))
        self.b = nn.Parameter(torch.empty(output_size, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        nn.init.uniform_(self.delta, -bound, bound)
        if self.b is not None:
            nn.init.zeros_(self.b)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.hidden_size:
            raise ValueError(f"Readout: input has {z.shape[-1]} features but hidden_size is "
                             f"{self.hidden_size}")
        return F.linear(z, self.delta, self.b)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, {self.output_size}, bias={self.b is not None}"
