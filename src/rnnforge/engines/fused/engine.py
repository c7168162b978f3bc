"""The fused engine as registered: what it runs, the named parameters stacked, lengths sorted.

Variable lengths run the way packed sequences do: the batch is sorted by
length (longest first), so at step t only the first ``b_t`` rows are live and
every kernel works on that prefix. Rows past their end are never touched, so
their state is frozen, their outputs stay zero and their gradients are zero.

Eager calls run ``Recurrence``; traced calls (torch.export, torch.compile,
FakeTensor tracing) the registered operators of ``ops``, the same arithmetic.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from ..reference import reverse_padded
from . import ops
from .function import Recurrence, run_forward
from .lstm import PANELS

_MODES = ("lstm", "gru", "rnn_tanh", "rnn_sigmoid")
_DTYPES = (torch.float32, torch.float64)


def stacked_weights(cell):
    """``(w_ih (G*H, I), w_hh (G*H, H), b_ih (G*H,) or None, b_hh (H,) or None)``.

    Built with ``torch.cat`` from the cell's named parameters in ``GATES`` order,
    so autograd routes the stacked gradients back to each named parameter.
    ``b_hh`` is the GRU's recurrent candidate bias ``b_gamma`` (inside the reset
    product); the other cells have no bias inside the recurrence.
    """
    gates = cell.GATES
    if len(gates) == 1:
        g = gates[0]
        return (getattr(cell, g.input), getattr(cell, g.recurrent),
                getattr(cell, g.bias) if cell.bias else None, None)
    w_ih = torch.cat([getattr(cell, g.input) for g in gates], 0)  # (G*H, I)
    w_hh = torch.cat([getattr(cell, g.recurrent) for g in gates], 0)  # (G*H, H)
    if not cell.bias:
        return w_ih, w_hh, None, None
    b_ih = torch.cat([getattr(cell, g.bias) for g in gates], 0)  # (G*H,)
    rec = [getattr(cell, g.recurrent_bias) for g in gates if g.recurrent_bias]
    return w_ih, w_hh, b_ih, (rec[0] if rec else None)


#: cell -> (key, stacked weights) for calls that record no graph (``constant_weights``)
_CONSTANT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def constant_weights(cell):
    """``stacked_weights(cell)`` for a call that records no graph of them (grad off, or no
    parameter of the cell requiring grad): kept between calls until a parameter changes.

    Inference calls then skip the concatenation, and the LSTM its packing of the panels
    (``lstm.pack`` keeps those on the stacked ``w_hh``: ``PANELS``). The key is every
    parameter's ``data_ptr`` and ``_version`` (as ``native.packed``): an optimizer step,
    ``load_state_dict``, an in-place edit or ``.to()`` changes one of them. Writes through
    ``p.data`` bypass the version counter and are not seen (use ``with torch.no_grad():
    p.copy_(...)``). The cache costs a copy of the weights per cell (two for the LSTM; none for
    the RNNs, whose stacked weights are the parameters), freed with the cell.
    """
    params = tuple(cell.parameters())
    key = (torch.is_inference_mode_enabled(), *((p.data_ptr(), p._version) for p in params))
    entry = _CONSTANT.get(cell)
    if entry is not None and entry[0] == key:
        return entry[1]
    with torch.no_grad():
        weights = stacked_weights(cell)
    if len(cell.GATES) > 1:  # (one gate: the parameters themselves, nothing to pack or keep)
        setattr(weights[1], PANELS, {})  # the LSTM's packed panels of these weights (lstm.pack)
    _CONSTANT[cell] = (key, weights, params)  # params held: their memory cannot pass to a new tensor
    return weights


def _weights(cell, traced: bool, keep: bool):
    if traced or not keep or (torch.is_grad_enabled() and any(p.requires_grad for p in cell.parameters())):
        return stacked_weights(cell)  # differentiable, or symbolic: formed per call
    return constant_weights(cell)


class FusedEngine:
    name = "fused"

    def why_not(self, layer, x, lengths):
        if layer.mode not in _MODES:
            return f"no fused kernels for the {layer.mode} cell"
        if x.device.type != "cpu":
            return (f"the fused engine runs on CPU; for {x.device.type} tensors use "
                    f"engine='native' (or 'reference' for the sigmoid RNN)")
        if x.dtype not in _DTYPES:
            return f"the fused engine takes float32 or float64, got {x.dtype}"
        return None

    def forward(self, layer, x, h0, c0, lengths):
        if ops.tracing(x):  # the registered operator: one node of the traced graph
            return run_layers(layer, x, h0, c0, lengths, _traced_recurrence, traced=True)
        recurrence = Recurrence.apply if torch.is_grad_enabled() else _no_graph_recurrence
        return run_layers(layer, x, h0, c0, lengths, recurrence, keep=True)


def _no_graph_recurrence(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths):
    """``Recurrence`` without the autograd Function around it (grad off: no graph to record)."""
    out, h_n, c_n, _ = run_forward(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths, save=False)
    return out, h_n, c_n


def _traced_recurrence(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths):
    return torch.ops.rnnforge.recurrence(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, lengths)[:3]


def run_layers(layer, x, h0, c0, lengths, recurrence, traced: bool = False, keep: bool = False):
    """Layers and directions around ``recurrence``, one call per layer-direction.

    ``recurrence(mode, x, w_ih, b_ih, h0, c0, w_hh, b_hh, bs, lengths) -> (out, h_n, c_n)``
    runs one direction over time-major ``x`` (the stacked weights of ``stacked_weights``;
    ``bs`` the live rows of each step, ``lengths`` sorted longest first, both None when
    nothing is padded). Here: the length sort, the reverse direction (``reverse_padded``),
    dropout between layers, and the batch order restored. ``traced``: no decision may read
    tensor values (lengths always sorted, ``bs`` None); shared with the triton engine.
    ``keep``: calls that record no graph of the weights take them from ``constant_weights``.
    """
    T, B, _ = x.shape
    mode = layer.mode
    perm = bs = None
    if lengths is not None and not traced and bool((lengths == T).all()):
        lengths = None  # nothing is padded: the plain path is exact
    if lengths is not None:
        # longest first, so that the live rows of every step are a prefix; while tracing no
        # decision may read the values of lengths, so the sort always happens and the
        # operator derives the live rows of each step from the sorted lengths itself
        if traced or not bool((lengths[:-1] >= lengths[1:]).all()):
            perm = torch.argsort(lengths, descending=True, stable=True)
            lengths = lengths.index_select(0, perm)
            x = x.index_select(1, perm)
            h0 = h0.index_select(1, perm)
            c0 = c0.index_select(1, perm) if c0 is not None else None
        live = torch.arange(T, device=lengths.device).unsqueeze(1) < lengths  # (T, B)
        if not traced:
            bs = live.sum(1).tolist()  # live rows per step
        # padding must be inert: the weight-gradient GEMMs read every row of x
        x = x.masked_fill(~live.unsqueeze(-1), 0)
    D = layer.num_directions
    h_n, c_n = [], []
    for l in range(layer.num_layers):
        outs = []
        for d in range(D):
            k = l * D + d
            w_ih, w_hh, b_ih, b_hh = _weights(layer.cells[k], traced, keep)
            x_d = reverse_padded(x, lengths) if d else x
            c0_k = c0[k] if c0 is not None else None
            out, h, c = recurrence(mode, x_d, w_ih, b_ih, h0[k], c0_k, w_hh, b_hh, bs, lengths)
            outs.append(reverse_padded(out, lengths) if d else out)
            h_n.append(h)
            c_n.append(c)
        x = outs[0] if D == 1 else torch.cat(outs, -1)  # (T, B, D*H)
        if layer.dropout and layer.training and l < layer.num_layers - 1:
            if perm is None:
                x = F.dropout(x, layer.dropout, training=True)
            else:  # draw the mask in the caller's batch order, as the other engines
                mask = F.dropout(torch.ones_like(x), layer.dropout, training=True)
                x = x * mask.index_select(1, perm)
    h_n = torch.stack(h_n)  # (D*L, B, H)
    c_n = torch.stack(c_n) if c0 is not None else None
    if perm is not None:
        inv = torch.argsort(perm)
        x = x.index_select(1, inv)
        h_n = h_n.index_select(1, inv)
        c_n = c_n.index_select(1, inv) if c_n is not None else None
    return x, h_n, c_n
