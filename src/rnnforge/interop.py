"""Exact weight conversion to and from torch.nn's recurrent modules.

torch.nn stacks the gates of a layer into ``weight_ih`` (G*H, I) and
``weight_hh`` (G*H, H) in a fixed gate order; every cell's ``GATES`` tuple lists
its named parameters in that same order, so packing is a concatenation:

==========  ==================  ===============================================
cell        torch gate order    rnnforge parameters (input, recurrent)
==========  ==================  ===============================================
LSTM        i, f, g, o          (w, p), (u, v), (alpha, gamma), (s, d)
GRU         r, z, n             (alpha_r, gamma_r), (alpha_s, gamma_s), (alpha, gamma)
RNN (tanh)  -                   (alpha, gamma)
==========  ==================  ===============================================

torch.nn has two biases per gate (``b_ih + b_hh``); the notes have none and
rnnforge has one per gate, plus the GRU candidate's recurrent bias ``b_gamma``
(torch's ``b_hn``, which sits inside the reset product and so cannot be merged).
``from_torch`` therefore adds ``b_ih + b_hh`` for every other gate, and
``to_torch`` writes our bias into ``b_ih`` and zero into ``b_hh``: the function
computed is identical both ways.
"""

from __future__ import annotations

import torch
from torch import nn

from .cells import RecurrentCell


def packed_weights(cell: RecurrentCell) -> list[torch.Tensor]:
    """``[weight_ih, weight_hh(, bias_ih, bias_hh)]`` in torch's layout.

    Differentiable: the result is built from the named parameters, so gradients
    through it reach them (this is how the native engine trains them).
    """
    gates = cell.GATES
    w_ih = torch.cat([getattr(cell, g.input) for g in gates], 0)  # (G*H, I)
    w_hh = torch.cat([getattr(cell, g.recurrent) for g in gates], 0)  # (G*H, H)
    if not cell.bias:
        return [w_ih, w_hh]
    b_ih = torch.cat([getattr(cell, g.bias) for g in gates], 0)  # (G*H,)
    zeros = torch.zeros_like(b_ih[: cell.hidden_size])
    b_hh = torch.cat([getattr(cell, g.recurrent_bias) if g.recurrent_bias else zeros
                      for g in gates], 0)
    return [w_ih, w_hh, b_ih, b_hh]


@torch.no_grad()
def load_torch_weights(cell: RecurrentCell, w_ih, w_hh, b_ih=None, b_hh=None) -> None:
    """Copy one torch.nn layer-direction (or torch.nn cell) into ``cell``."""
    G = len(cell.GATES)
    for gate, wi, wh in zip(cell.GATES, w_ih.chunk(G, 0), w_hh.chunk(G, 0)):
        getattr(cell, gate.input).copy_(wi)
        getattr(cell, gate.recurrent).copy_(wh)
    if (b_ih is not None) != cell.bias:
        raise ValueError("bias mismatch: the torch module and the rnnforge cell must both have "
                         "bias=True or both bias=False")
    if b_ih is None:
        return
    for gate, bi, bh in zip(cell.GATES, b_ih.chunk(G, 0), b_hh.chunk(G, 0)):
        if gate.recurrent_bias is None:
            getattr(cell, gate.bias).copy_(bi + bh)
        else:
            getattr(cell, gate.bias).copy_(bi)
            getattr(cell, gate.recurrent_bias).copy_(bh)


def torch_suffix(layer: int, direction: int) -> str:
    """torch.nn's parameter-name suffix for a layer and direction."""
    return f"_l{layer}" + ("_reverse" if direction else "")


TORCH_MODULES = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}
TORCH_CELLS = {"LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell, "RNNCell": nn.RNNCell}
