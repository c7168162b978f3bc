"""Record every gate and state of every layer at every step, by the cells' own equations.

The engines return only the layer's output and final state; the gates live
inside them. Here each layer is stepped with its cell's equations written out
once more, one line each, reading the cell's named parameters, and every
intermediate is kept. Shape symbols: T steps, B rows, I input size, H units.

    LSTM  f, i, o, C~, C, z        GRU  s, r, z~, z        RNN  z

The input products (``u x``, ``alpha_s x``, ...) of all T steps are computed
in one product before the loop, as the fused engine does; the recurrent
products stay inside the loop, since they need the previous step's ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import UserError

#: the quantities recorded per cell, in the order the page lists them
QUANTITIES = {
    "lstm": ("f", "i", "o", "C~", "C", "z"),
    "gru": ("s", "r", "z~", "z"),
    "rnn_sigmoid": ("z",),
    "rnn_tanh": ("z",),
}
#: the quantities that are sigmoid outputs in (0, 1): the gates, and the notes' RNN state
GATES = {
    "lstm": ("f", "i", "o"),
    "gru": ("s", "r"),
    "rnn_sigmoid": ("z",),
    "rnn_tanh": (),
}
#: the gate whose mean gives a unit's memory time constant 1 / (1 - mean): the notes'
#: "long term" gates (the LSTM's forget gate f, the GRU's update gate s); the RNN has none
MEMORY_GATE = {"lstm": "f", "gru": "s", "rnn_sigmoid": None, "rnn_tanh": None}


@dataclass
class Recording:
    """What :func:`record` returns: named tensors, one (T, H) float tensor per layer and quantity.

    ``rec[layer, "f"]`` is the forget gate of ``layer`` at every step; ``rec.layers[l]``
    the dict of all quantities of layer ``l``. ``text`` is the recorded text (None when
    a layer was recorded on raw inputs), ``ids`` its character ids. ``check`` holds the
    largest difference between the recorded outputs and final states and the layer's
    own forward (``engine``), relative to max(1, the largest |value|): the proof that
    the recording computes what the model does.
    """

    mode: str
    layers: list[dict[str, torch.Tensor]]
    text: str | None = None
    ids: torch.Tensor | None = None
    check: float | None = None
    engine: str | None = None
    #: per layer, the initial state (z, C) or (z,) the recording started from, each (H,)
    initial: list[tuple[torch.Tensor, ...]] = field(default_factory=list)

    def __getitem__(self, key: tuple[int, str]) -> torch.Tensor:
        layer, name = key
        return self.layers[layer][name]

    @property
    def quantities(self) -> tuple[str, ...]:
        return QUANTITIES[self.mode]

    @property
    def gates(self) -> tuple[str, ...]:
        return GATES[self.mode]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def steps(self) -> int:
        return self.layers[0]["z"].shape[0]

    @property
    def hidden_size(self) -> int:
        return self.layers[0]["z"].shape[1]

    def final_state(self) -> tuple[torch.Tensor, ...]:
        """``(h_n,)`` or ``(h_n, c_n)``, each (L, H): the state after the last step."""
        h = torch.stack([q["z"][-1] for q in self.layers])
        if self.mode == "lstm":
            return h, torch.stack([q["C"][-1] for q in self.layers])
        return (h,)

    def state_at(self, t: int) -> list[tuple[torch.Tensor, ...]]:
        """Per layer, the state after step ``t`` ((z, C) or (z,), each (H,)); t = -1 is the start."""
        if t < 0:
            return self.initial
        names = ("z", "C") if self.mode == "lstm" else ("z",)
        return [tuple(q[n][t] for n in names) for q in self.layers]


# -- the cells' equations, one step, B rows -----------------------------------------------
def _input_products(cell, mode: str, x: torch.Tensor) -> list[torch.Tensor]:
    """The input side of every pre-activation for all steps at once, each (T, B, H)."""
    if mode == "lstm":
        return [F.linear(x, cell.u, cell.b_f), F.linear(x, cell.w, cell.b_i),
                F.linear(x, cell.s, cell.b_o), F.linear(x, cell.alpha, cell.b_c)]
    if mode == "gru":
        return [F.linear(x, cell.alpha_s, cell.b_s), F.linear(x, cell.alpha_r, cell.b_r),
                F.linear(x, cell.alpha, cell.b_z)]
    return [F.linear(x, cell.alpha, cell.b)]


def _recurrent_weights(cell, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The recurrent matrices of the cell stacked, so that one product per step gives them all.

    LSTM: (v, p, d, gamma) (4H, H). GRU: (gamma_s, gamma_r, gamma) (3H, H) with the bias
    (0, 0, b_gamma), since b_gamma sits inside the reset product. RNN: gamma (H, H).
    """
    if mode == "lstm":
        return torch.cat([cell.v, cell.p, cell.d, cell.gamma]), None
    if mode == "gru":
        bias = None
        if cell.b_gamma is not None:
            zeros = torch.zeros_like(cell.b_gamma)
            bias = torch.cat([zeros, zeros, cell.b_gamma])
        return torch.cat([cell.gamma_s, cell.gamma_r, cell.gamma]), bias
    return cell.gamma, None


def _step(mode: str, xp: list[torch.Tensor], rec: tuple[torch.Tensor, torch.Tensor | None],
          state: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """One step from the input products ``xp`` and the previous state; every quantity (B, H).

    ``rec`` is :func:`_recurrent_weights` of the cell.
    """
    if mode == "lstm":
        xf, xi, xo, xc = xp
        z_prev, C_prev = state
        vz, pz, dz, gz = F.linear(z_prev, *rec).chunk(4, -1)  # v z, p z, d z, gamma z
        f = torch.sigmoid(xf + vz)
        i = torch.sigmoid(xi + pz)
        o = torch.sigmoid(xo + dz)
        C_tilde = torch.tanh(xc + gz)
        C = f * C_prev + i * C_tilde
        z = o * torch.tanh(C)
        return {"f": f, "i": i, "o": o, "C~": C_tilde, "C": C, "z": z}
    if mode == "gru":
        xs, xr, xz = xp
        (z_prev,) = state
        sz, rz, gz = F.linear(z_prev, *rec).chunk(3, -1)  # gamma_s z, gamma_r z, gamma z + b_gamma
        s = torch.sigmoid(xs + sz)
        r = torch.sigmoid(xr + rz)
        z_tilde = torch.tanh(xz + r * gz)
        z = s * z_prev + (1 - s) * z_tilde
        return {"s": s, "r": r, "z~": z_tilde, "z": z}
    (xa,) = xp
    (z_prev,) = state
    act = torch.sigmoid if mode == "rnn_sigmoid" else torch.tanh
    z = act(xa + F.linear(z_prev, *rec))
    return {"z": z}


def _next_state(mode: str, q: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (q["z"], q["C"]) if mode == "lstm" else (q["z"],)


def step_stack(layer, x: torch.Tensor, state: list[tuple[torch.Tensor, ...]], keep: bool = True):
    """Run every layer of ``layer`` over ``x`` (T, B, I) from ``state`` (per layer, each (B, H)).

    Returns (per layer a dict quantity -> (T, B, H) when ``keep``, else None; the top
    layer's output (T, B, H); the final state per layer). Differentiable: the
    look-back estimate backpropagates through it.
    """
    mode = layer.mode
    kept = []
    for l in range(layer.num_layers):
        cell = layer.cell(l, 0)
        # unbound once: indexing a tensor per step would cost a full-size backward per step
        xp = [p.unbind(0) for p in _input_products(cell, mode, x)]  # each T x (B, H)
        rec = _recurrent_weights(cell, mode)
        s = state[l]
        steps: dict[str, list[torch.Tensor]] = {n: [] for n in QUANTITIES[mode]}
        for t in range(x.shape[0]):
            q = _step(mode, [p[t] for p in xp], rec, s)
            s = _next_state(mode, q)
            for n in steps:
                steps[n].append(q[n])
        out = {n: torch.stack(v) for n, v in steps.items()}  # each (T, B, H)
        kept.append(out if keep else None)
        state = state[:l] + [s] + state[l + 1:]
        x = out["z"]  # the next layer's input; dropout is off in evaluation
    return kept, x, state


# -- the public call --------------------------------------------------------------------------
def record(model, text, vocab=None, *, state=None, check: bool = True) -> Recording:
    """Every gate and state of every layer of ``model`` at every step of ``text``.

    ``model`` is a character model (:class:`rnnforge.charlm.CharLM`, or the path of a
    checkpoint or run folder, whose vocabulary is then used) and ``text`` a string
    (``vocab`` encodes it) or a 1-D tensor of character ids; or ``model`` is an
    rnnforge layer (``rf.LSTM``, ``rf.GRU``, ``rf.RNN``, unidirectional) and ``text``
    its input, a (T, I) tensor. ``state`` is the initial state as the layer's ``hx``
    without the batch dimension ((L, H), or a tuple of two for the LSTM); None for
    zeros. The model runs in evaluation mode (no dropout) and without gradients.

    With ``check`` the layer's own forward runs on the same input and the largest
    difference of output and final state (relative to max(1, |value|)) goes to
    ``Recording.check``.
    """
    from ..charlm.model import CharLM
    from ..layers import RecurrentLayer

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from ..charlm.checkpoint import load_model

        model, loaded_vocab, _ = load_model(model)
        vocab = vocab or loaded_vocab
    ids = None
    if isinstance(model, CharLM):
        layer = model.rnn
        if isinstance(text, str):
            if vocab is None:
                raise UserError("a text needs the model's vocabulary: pass vocab= (load_model returns it)")
            if not text:
                raise UserError("the text to inspect is empty")
            ids = vocab.encode(text)
        elif isinstance(text, torch.Tensor) and text.dim() == 1 and not text.is_floating_point():
            ids, text = text, (vocab.decode(text) if vocab is not None else None)
        else:
            raise UserError("text must be a string or a 1-D tensor of character ids")
        if ids.numel() == 0:
            raise UserError("the text to inspect is empty")
        if int(ids.max()) >= model.config.vocab_size or int(ids.min()) < 0:
            raise UserError(f"character ids must be in [0, {model.config.vocab_size - 1}]")
        ids = ids.to(model.embedding.weight.device)
        embed = lambda: model.embedding(ids)  # (T, E)
        was_training = model.training
        model.eval()
    elif isinstance(model, RecurrentLayer):
        layer, was_training = model, model.training
        if not (isinstance(text, torch.Tensor) and text.dim() == 2 and text.shape[0] > 0):
            raise UserError("a layer is recorded on a (T, I) input tensor with T >= 1")
        inputs, text = text, None
        embed = lambda: inputs
        model.eval()
    else:
        raise UserError(f"record needs a CharLM, a checkpoint path or an rnnforge layer, "
                        f"got {type(model).__name__}")
    if layer.bidirectional:
        raise UserError("record steps forward in time; a bidirectional layer is not supported")
    try:
        with torch.no_grad():
            x = embed()  # (T, I)
            w = layer._param
            h0 = _initial(layer, state, w)
            kept, _, _ = step_stack(layer, x.unsqueeze(1), h0)
            layers = [{n: v[:, 0].cpu() for n, v in q.items()} for q in kept]  # each (T, H)
            initial = [tuple(t[0].cpu() for t in s) for s in h0]
            rec = Recording(layer.mode, layers, text, None if ids is None else ids.cpu(), initial=initial)
            if check:
                rec.check, rec.engine = _check(layer, x, h0, kept)
    finally:
        model.train(was_training)
    return rec


def _initial(layer, state, like: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Per layer, the initial state as (z, C) or (z,), each (1, H)."""
    L, H = layer.num_layers, layer.hidden_size
    parts = 2 if layer.mode == "lstm" else 1
    if state is None:
        zeros = like.new_zeros(1, H)
        return [tuple(zeros for _ in range(parts))] * L
    tensors = list(state) if isinstance(state, (tuple, list)) else [state]
    if len(tensors) != parts or any(tuple(t.shape) != (L, H) for t in tensors):
        want = "a tuple (h_0, c_0) of" if parts == 2 else "a tensor of shape"
        raise UserError(f"state must be {want} ({L}, {H}) (layers, units)")
    tensors = [t.to(device=like.device, dtype=like.dtype) for t in tensors]
    return [tuple(t[l:l + 1] for t in tensors) for l in range(L)]


def _check(layer, x, h0, kept) -> tuple[float, str]:
    """Largest |recorded - layer forward| over the top output and every final state, each
    divided by max(1, the largest |value| of what it compares): the memory C can grow
    large, and float32 then differs in its last digits, not in its first."""
    hx = [torch.stack([s[k] for s in h0], 0) for k in range(len(h0[0]))]  # each (L, 1, H)
    out, state = layer(x.unsqueeze(0) if layer.batch_first else x.unsqueeze(1),
                       tuple(hx) if len(hx) == 2 else hx[0])
    out = out[0] if layer.batch_first else out[:, 0]  # (T, H)
    states = state if isinstance(state, tuple) else (state,)
    names = ("z", "C") if layer.mode == "lstm" else ("z",)
    pairs = [(out, kept[-1]["z"][:, 0])]
    for s, n in zip(states, names):
        pairs.append((s[:, 0], torch.stack([q[n][-1, 0] for q in kept])))  # (L, H) each
    diff = max(float((a - b).abs().max()) / max(1.0, float(b.abs().max())) for a, b in pairs)
    return diff, layer.engine_used
