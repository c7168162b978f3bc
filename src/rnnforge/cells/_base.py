"""What the three cells share: parameter creation, initialisation, state checks."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


def autocast_cast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` in ``like``'s dtype when autocast is on for its device, else as it is.

    Under autocast a state carried from the last call comes back in the low
    precision, and a Linear before the layer hands on a low-precision input;
    torch.nn's layers take both. Ours bring such inputs and states to the
    parameters' dtype, so that every engine sees one dtype, and autocast still
    picks each op's precision. Outside autocast a mismatch stays an error.
    """
    if (torch.is_autocast_enabled(t.device.type) and t.device == like.device and t.is_floating_point()
            and t.dtype != like.dtype):
        return t.to(like.dtype)
    return t


class Gate(NamedTuple):
    """One pre-activation of a cell: ``W_x x + W_z z_prev (+ bias)``.

    ``input`` and ``recurrent`` name the two weight matrices, ``bias`` the bias
    that ``bias=True`` adds. The GRU candidate also has ``recurrent_bias``, a
    bias added to ``W_z z_prev`` inside the reset product (torch.nn's ``b_hn``).
    The fused engines stack the gates of a cell in this order.
    """

    input: str
    recurrent: str
    bias: str
    recurrent_bias: str | None = None


class RecurrentCell(nn.Module):
    """Base class: creates the named parameters listed in ``GATES``.

    Every parameter is a matrix whose row ``m`` is the lecture's vector for unit
    ``m``: ``alpha[m]`` is the notes' ``alpha_m``, so ``alpha_m^T x`` is
    ``(alpha @ x)[m]``. Initialisation follows torch.nn: every weight and bias
    uniform in ``[-1/sqrt(H), 1/sqrt(H)]``.
    """

    GATES: tuple[Gate, ...] = ()
    #: number of state tensors: 1 (z) for RNN and GRU, 2 (z, C) for the LSTM
    STATES: int = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__()
        if not (isinstance(input_size, int) and input_size > 0):
            raise ValueError(f"input_size must be a positive int, got {input_size!r}")
        if not (isinstance(hidden_size, int) and hidden_size > 0):
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bool(bias)
        factory = {"device": device, "dtype": dtype}
        H, I = hidden_size, input_size
        for gate in self.GATES:
            self.register_parameter(gate.input, nn.Parameter(torch.empty(H, I, **factory)))
            self.register_parameter(gate.recurrent, nn.Parameter(torch.empty(H, H, **factory)))
            for name in (gate.bias, gate.recurrent_bias):
                if name is not None:
                    value = nn.Parameter(torch.empty(H, **factory)) if self.bias else None
                    self.register_parameter(name, value)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"

    # -- input handling shared by the three forwards ------------------------------
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate ``x`` of shape (B, I) or (I,); return it (in the parameters' dtype under autocast)."""
        if x.dim() not in (1, 2):
            raise ValueError(f"{type(self).__name__}: expected input of shape (B, {self.input_size}) "
                             f"or ({self.input_size},), got {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[-1]} features but "
                             f"input_size is {self.input_size}")
        ref = self.GATES[0].input
        w = getattr(self, ref)
        x = autocast_cast(x, w)
        if x.dtype != w.dtype or x.device != w.device:
            raise ValueError(f"{type(self).__name__}: input is {x.dtype} on {x.device} but the "
                             f"parameters are {w.dtype} on {w.device}; move one with .to()")
        return x

    def _state(self, x: torch.Tensor, state: torch.Tensor | None, what: str) -> torch.Tensor:
        """A state of the shape ``x`` implies: zeros when None, else checked."""
        shape = (*x.shape[:-1], self.hidden_size)
        if state is None:
            return x.new_zeros(shape)
        if tuple(state.shape) != shape:
            raise ValueError(f"{type(self).__name__}: {what} must have shape {shape}, "
                             f"got {tuple(state.shape)}")
        state = autocast_cast(state, x)
        if state.dtype != x.dtype or state.device != x.device:
            raise ValueError(f"{type(self).__name__}: {what} is {state.dtype} on {state.device} "
                             f"but the input is {x.dtype} on {x.device}")
        return state
