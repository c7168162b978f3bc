"""The lecture's long short-term memory cell (no peepholes).

    f_m^(t) = σ(u_m^T x^(t) + v_m^T z^(t-1))       forget gate
    i_m^(t) = σ(w_m^T x^(t) + p_m^T z^(t-1))       input gate
    o_m^(t) = σ(s_m^T x^(t) + d_m^T z^(t-1))       output gate
    C~_m^(t) = tanh(α_m^T x^(t) + γ_m^T z^(t-1))   candidate memory
    C_m^(t) = f_m^(t) C_m^(t-1) + i_m^(t) C~_m^(t)  memory
    z_m^(t) = o_m^(t) tanh(C_m^(t))                 output
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import Gate, RecurrentCell


class LSTMCell(RecurrentCell):
    """LSTM cell of the notes.

    Parameters: ``u, w, s, alpha`` (H, I) and ``v, p, d, gamma`` (H, H), for the
    forget, input and output gates and the candidate; with ``bias=True`` also
    ``b_f, b_i, b_o, b_c`` (H,). Call ``cell(x, (z_prev, C_prev))`` (the state or
    either part may be None for zeros); returns ``(z, C)``.
    """

    # Stacked in torch.nn.LSTM's gate order (i, f, g, o) so that packing is a concat.
    GATES = (
        Gate("w", "p", "b_i"),
        Gate("u", "v", "b_f"),
        Gate("alpha", "gamma", "b_c"),
        Gate("s", "d", "b_o"),
    )
    STATES = 2

    def forward(self, x: torch.Tensor,
                state: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._check_input(x)
        z_prev, C_prev = (None, None) if state is None else state
        z_prev = self._state(x, z_prev, "z_prev")
        C_prev = self._state(x, C_prev, "C_prev")
        f = torch.sigmoid(F.linear(x, self.u, self.b_f) + F.linear(z_prev, self.v))
        i = torch.sigmoid(F.linear(x, self.w, self.b_i) + F.linear(z_prev, self.p))
        o = torch.sigmoid(F.linear(x, self.s, self.b_o) + F.linear(z_prev, self.d))
        C_tilde = torch.tanh(F.linear(x, self.alpha, self.b_c) + F.linear(z_prev, self.gamma))
        C = f * C_prev + i * C_tilde
        z = o * torch.tanh(C)
        return z, C
