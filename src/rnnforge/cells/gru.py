"""The lecture's gated recurrent unit.

    s_m^(t) = σ(α_s,m^T x^(t) + γ_s,m^T z^(t-1))          update gate (long term)
    r_m^(t) = σ(α_r,m^T x^(t) + γ_r,m^T z^(t-1))          reset gate (short term)
    z~_m^(t) = tanh(α_m^T x^(t) + r_m^(t) γ_m^T z^(t-1))   candidate
    z_m^(t) = s_m^(t) z_m^(t-1) + (1 - s_m^(t)) z~_m^(t)

The notes write the candidate and the state update; the gate pre-activations
take the same form as the LSTM's gates (the notes name the gates but do not
write them out; we give each its own ``alpha_*`` and ``gamma_*``). The reset
gate multiplies the recurrent product ``γ_m^T z``, as in cuDNN and torch.nn.GRU,
and ``s`` multiplies the old state, as torch's update gate ``z`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import Gate, RecurrentCell


class GRUCell(RecurrentCell):
    """GRU cell of the notes.

    Parameters (each (H, I) for ``alpha*``, (H, H) for ``gamma*``):
    ``alpha_s, gamma_s`` update gate; ``alpha_r, gamma_r`` reset gate;
    ``alpha, gamma`` candidate. With ``bias=True`` also ``b_s``, ``b_r``, ``b_z``
    (candidate, input side) and ``b_gamma`` (inside the reset product, torch's
    ``b_hn``), each (H,). Call ``cell(x, z_prev)``; returns ``z``.
    """

    GATES = (
        Gate("alpha_r", "gamma_r", "b_r"),
        Gate("alpha_s", "gamma_s", "b_s"),
        Gate("alpha", "gamma", "b_z", recurrent_bias="b_gamma"),
    )

    def forward(self, x: torch.Tensor, z_prev: torch.Tensor | None = None) -> torch.Tensor:
        x = self._check_input(x)
        z_prev = self._state(x, z_prev, "z_prev")
        s = torch.sigmoid(F.linear(x, self.alpha_s, self.b_s) + F.linear(z_prev, self.gamma_s))
        r = torch.sigmoid(F.linear(x, self.alpha_r, self.b_r) + F.linear(z_prev, self.gamma_r))
        z_tilde = torch.tanh(F.linear(x, self.alpha, self.b_z) + r * F.linear(z_prev, self.gamma, self.b_gamma))
        z = s * z_prev + (1 - s) * z_tilde
        return z
