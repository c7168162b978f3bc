"""The lecture's simple recurrent cell.

    z_m^(t) = σ(α_m^T x^(t) + γ_m^T z^(t-1))

Vectorised over the H units: ``z = σ(alpha x + gamma z_prev)``. The notes use
the logistic sigmoid σ; ``nonlinearity="tanh"`` gives the Elman cell of
torch.nn.RNN (and cuDNN), which the notes do not use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import Gate, RecurrentCell

NONLINEARITIES = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}


class RNNCell(RecurrentCell):
    """``z = σ(alpha x + gamma z_prev [+ b])``.

    Parameters: ``alpha`` (H, I), ``gamma`` (H, H); ``b`` (H,) with ``bias=True``.
    Call ``cell(x, z_prev)`` with ``x`` (B, I) or (I,) and ``z_prev`` (B, H),
    (H,) or None (zeros); returns ``z`` of the same leading shape.
    """

    GATES = (Gate("alpha", "gamma", "b"),)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = False,
                 nonlinearity: str = "sigmoid", device=None, dtype=None) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose 'sigmoid' (the notes) "
                             f"or 'tanh'")
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"

    def forward(self, x: torch.Tensor, z_prev: torch.Tensor | None = None) -> torch.Tensor:
        x = self._check_input(x)
        z_prev = self._state(x, z_prev, "z_prev")
        act = NONLINEARITIES[self.nonlinearity]
        z = act(F.linear(x, self.alpha, self.b) + F.linear(z_prev, self.gamma))
        return z
