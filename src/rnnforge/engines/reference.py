"""The reference engine: one ``cell.forward`` per step. Slow, plain, the oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence of ``x`` (T, B, F) within its own length.

    Steps past a sequence's end stay where they are, so that the reverse
    direction starts at each sequence's last real step. The map is its own inverse.
    """
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    idx = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    return x.gather(0, idx.unsqueeze(-1).expand_as(x))


def run_direction(step, x, state, lengths, reverse: bool):
    """Run ``step(x_t, state) -> state`` over ``x`` (T, B, I).

    ``state`` is a tuple whose first element is the output z. With ``lengths``,
    a sequence's state stops changing after its last step and its outputs there
    are zero. Returns ``out (T, B, H)`` and the final state tuple.
    """
    if reverse:
        x = reverse_padded(x, lengths)
    if lengths is not None:
        # torch.nn never reads the padding (a PackedSequence drops it); zero it so that
        # a NaN or inf there cannot reach the gradients through 0 * NaN in the backward.
        real = torch.arange(x.shape[0], device=x.device).unsqueeze(1) < lengths  # (T, B)
        x = torch.where(real.unsqueeze(-1), x, torch.zeros_like(x))
    outs = []
    for t in range(x.shape[0]):
        new = step(x[t], state)
        if lengths is not None:
            live = (t < lengths).unsqueeze(1)  # (B, 1)
            new = tuple(torch.where(live, n, s) for n, s in zip(new, state))
            outs.append(torch.where(live, new[0], torch.zeros_like(new[0])))
        else:
            outs.append(new[0])
        state = new
    out = torch.stack(outs)  # (T, B, H)
    if reverse:
        out = reverse_padded(out, lengths)
    return out, state


def run_layers(layer, x, h0, c0, lengths, run):
    """Stack layers and directions around ``run(cell, x, state, lengths, reverse)``.

    Dropout (when training) goes between layers, not after the last, as torch.nn.
    """
    D = layer.num_directions
    h_n, c_n = [], []
    for l in range(layer.num_layers):
        outs = []
        for d in range(D):
            k = l * D + d
            state = (h0[k], c0[k]) if c0 is not None else (h0[k],)
            out, state = run(layer.cells[k], x, state, lengths, d == 1)
            outs.append(out)
            h_n.append(state[0])
            if c0 is not None:
                c_n.append(state[1])
        x = outs[0] if D == 1 else torch.cat(outs, -1)  # (T, B, D*H)
        if layer.dropout and layer.training and l < layer.num_layers - 1:
            x = F.dropout(x, layer.dropout, training=True)
    return x, torch.stack(h_n), (torch.stack(c_n) if c0 is not None else None)


def _run_cell(cell, x, state, lengths, reverse):
    if cell.STATES == 2:
        step = lambda x_t, s: cell(x_t, s)  # noqa: E731  -> (z, C)
    else:
        step = lambda x_t, s: (cell(x_t, s[0]),)  # noqa: E731
    return run_direction(step, x, state, lengths, reverse)


class ReferenceEngine:
    name = "reference"

    def why_not(self, layer, x, lengths):
        return None

    def forward(self, layer, x, h0, c0, lengths):
        return run_layers(layer, x, h0, c0, lengths, _run_cell)
