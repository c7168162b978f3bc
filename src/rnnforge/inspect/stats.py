"""The numbers of a recording: gate saturation, units that track text features,
memory time constants and how far back each unit looks.

* Saturation (Karpathy, Johnson & Fei-Fei 2015, Fig. 3): per gate and unit, the
  fraction of steps below 0.1 (left-saturated) and above 0.9 (right-saturated).
* Correlation: Pearson's r of each unit's value with each feature of
  :mod:`.features` over the text.
* Time constant: a unit whose memory gate stays at g keeps a fraction g of its
  memory per step, so what it holds decays as g^k and lasts ``1 / (1 - g)``
  characters on average; with g the mean over the text of the LSTM's forget
  gate f or the GRU's update gate s.
* Look-back: ``|d z_m(t) / d x(t-k)|`` (the input x being the character's
  embedding), averaged over sampled steps t, for k = 0..K; the estimate is the
  gradient-weighted mean distance ``sum_k k g(k) / sum_k g(k)`` over k = 1..K.
  For a memory that decays as f^k it equals ``1 / (1 - f)``, so the two
  numbers are on one scale (the look-back is cut at K, so it is at most K).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import check_int, check_float
from .features import FEATURES, text_features
from .record import GATES, MEMORY_GATE, Recording, step_stack

LEFT, RIGHT = 0.1, 0.9


@dataclass
class LookBack:
    """The look-back estimate of the sampled ``units`` of one layer."""

    units: np.ndarray  # (n,) unit indices
    profile: np.ndarray  # (n, K + 1): mean |d z_m(t) / d x(t - k)| for k = 0..K
    estimate: np.ndarray  # (n,) gradient-weighted mean distance over k = 1..K, in characters
    positions: int  # how many steps t the mean is over


@dataclass
class Analysis:
    """Everything the page, the plots and the tables show, computed from a :class:`Recording`."""

    features: dict[str, np.ndarray]
    #: (layer, quantity) -> (len(FEATURES), H) Pearson r (NaN where a feature or unit is constant)
    correlations: dict[tuple[int, str], np.ndarray]
    #: (layer, gate) -> (left (H,), right (H,)) fractions of steps saturated
    saturation: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    #: per layer, 1 / (1 - mean memory gate) per unit; None for the RNN
    time_constants: list[np.ndarray | None]
    #: per layer, the look-back of the sampled units; None when not computed
    look_back: list[LookBack | None]
    long_term: float
    best: list[dict] = field(default_factory=list)

    def term(self, layer: int) -> np.ndarray:
        """Per unit 'long' or 'near' (by time constant, else look-back; '' where neither is known)."""
        H = next(iter(self.correlations.values())).shape[1]
        out = np.full(H, "", dtype=object)
        tau = self.time_constants[layer]
        if tau is not None:
            out[:] = np.where(tau > self.long_term, "long", "near")
        elif self.look_back[layer] is not None:
            lb = self.look_back[layer]
            out[lb.units] = np.where(lb.estimate > self.long_term, "long", "near")
        return out

    def look_back_of(self, layer: int) -> np.ndarray:
        """(H,) look-back estimates of ``layer``, NaN for units not sampled."""
        H = next(iter(self.correlations.values())).shape[1]
        out = np.full(H, np.nan)
        lb = self.look_back[layer]
        if lb is not None:
            out[lb.units] = lb.estimate
        return out


def saturation(rec: Recording) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    """(layer, gate) -> fractions of steps with the gate < 0.1 and > 0.9, each (H,)."""
    out = {}
    for l in range(rec.num_layers):
        for g in GATES[rec.mode]:
            v = rec[l, g].double()
            out[l, g] = ((v < LEFT).double().mean(0).numpy(), (v > RIGHT).double().mean(0).numpy())
    return out


def correlations(rec: Recording, features: dict[str, np.ndarray]) -> dict[tuple[int, str], np.ndarray]:
    """(layer, quantity) -> Pearson r of every feature with every unit, (len(features), H)."""
    fm = torch.from_numpy(np.stack([features[n] for n in features], 1))  # (T, F) float64
    fc = fm - fm.mean(0)
    fn = fc.norm(dim=0)  # (F,)
    out = {}
    for l in range(rec.num_layers):
        for q in rec.quantities:
            v = rec[l, q].double()  # (T, H)
            vc = v - v.mean(0)
            denom = torch.outer(fn, vc.norm(dim=0))  # (F, H)
            r = (fc.T @ vc) / denom
            # a constant unit or feature has no correlation; rounding can push |r| past 1
            out[l, q] = torch.where(denom > 0, r.clamp(-1.0, 1.0), torch.nan).numpy()
    return out


def time_constants(rec: Recording) -> list[np.ndarray | None]:
    """Per layer, ``1 / (1 - mean g)`` per unit for the memory gate g (f or s); None for the RNN."""
    gate = MEMORY_GATE[rec.mode]
    if gate is None:
        return [None] * rec.num_layers
    out = []
    for l in range(rec.num_layers):
        mean = rec[l, gate].double().mean(0).numpy()
        with np.errstate(divide="ignore"):
            out.append(1.0 / (1.0 - mean))
    return out


def best_units(corr: dict[tuple[int, str], np.ndarray], top: int = 1) -> list[dict]:
    """Per feature the ``top`` units (over every layer and quantity) with the largest |r|."""
    rows = []
    for f, name in enumerate(FEATURES):
        cands = []
        for (l, q), r in corr.items():
            a = np.nan_to_num(np.abs(r[f]), nan=-1.0)
            for m in np.argsort(-a)[:top]:
                if a[m] >= 0:
                    cands.append((a[m], l, q, int(m), float(r[f, m])))
        cands.sort(key=lambda c: -c[0])
        for a, l, q, m, r in cands[:top]:
            rows.append({"feature": name, "layer": l, "quantity": q, "unit": m, "r": r})
    return rows


def look_back(model, rec: Recording, *, k_max: int = 64, units: int = 32, positions: int = 8,
              seed: int = 0, inputs: torch.Tensor | None = None) -> list[LookBack | None]:
    """The look-back profile and estimate of a sample of units of every layer.

    ``model`` is the recorded CharLM (its embedding gives the inputs) or layer (then
    ``inputs`` is the recorded (T, I) input). ``units`` units per layer, drawn with
    ``seed``, and ``positions`` steps t spread evenly over the text; each window
    x(t-K..t) starts from the recorded state at t-K-1, so the gradient is exact.
    The windows of all steps run as one batch, and one batched backward pass gives
    the gradient of every sampled unit.
    """
    from ..charlm.model import CharLM

    check_int("look_back", k_max, low=1)
    check_int("look_back_units", units, low=1)
    check_int("look_back_positions", positions, low=1)
    T, H, L = rec.steps, rec.hidden_size, rec.num_layers
    K = min(k_max, T - 1)
    if K < 1:
        return [None] * L
    layer = model.rnn if isinstance(model, CharLM) else model
    w = layer._param
    if inputs is None:
        with torch.no_grad():
            inputs = model.embedding(rec.ids.to(w.device))  # (T, E)
    inputs = inputs.to(w)
    ts = np.unique(np.linspace(K, T - 1, min(positions, T - K)).round().astype(int))
    P = len(ts)
    g = torch.Generator().manual_seed(seed)
    picked = [torch.randperm(H, generator=g)[:min(units, H)].sort().values for _ in range(L)]
    x = torch.stack([inputs[t - K:t + 1] for t in ts], 1).detach().requires_grad_(True)  # (K+1, P, E)
    start = [rec.state_at(int(t) - K - 1) for t in ts]  # per position, per layer (z, C) or (z,)
    state = [tuple(torch.stack([start[p][l][k] for p in range(P)]).to(w)
                   for k in range(len(start[0][l]))) for l in range(L)]  # per layer, each (P, H)
    # one cotangent per sampled (layer, unit): a one-hot on that unit's z at the last step
    # of every window; the backward runs batched over them (the forward runs once)
    N = sum(len(u) for u in picked)
    onehot = torch.zeros(N, P, L * H, dtype=w.dtype, device=w.device)
    n = 0
    for l in range(L):
        for m in picked[l].tolist():
            onehot[n, :, l * H + m] = 1.0
            n += 1
    was_training = layer.training
    layer.eval()
    try:
        with torch.enable_grad():
            kept, _, _ = step_stack(layer, x, state)
            last = torch.cat([kept[l]["z"][K] for l in range(L)], 1)  # (P, L*H)
            (grad,) = torch.autograd.grad(last, x, onehot, is_grads_batched=True)  # (N, K+1, P, E)
    finally:
        layer.train(was_training)
    # |d z_m(t) / d x(t-k)| averaged over the positions; row k = distance k
    prof_all = grad.double().norm(dim=3).mean(2).flip(1).cpu().numpy()  # (N, K+1)
    out, n = [], 0
    k = np.arange(1, K + 1)
    for l in range(L):
        prof = prof_all[n:n + len(picked[l])]
        n += len(picked[l])
        tail = prof[:, 1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            est = (tail * k).sum(1) / tail.sum(1)
        out.append(LookBack(picked[l].numpy(), prof, est, P))
    return out


def analyze(rec: Recording, model=None, *, long_term: float = 10.0, look_back_k: int = 64,
            look_back_units: int = 32, look_back_positions: int = 8, seed: int = 0,
            inputs: torch.Tensor | None = None) -> Analysis:
    """All statistics of ``rec``; the look-back needs the recorded ``model`` (skipped when None).

    ``long_term`` (characters) splits units into long-term and near-term by their
    time constant (or, for the RNN, their look-back).
    """
    long_term = check_float("long_term", long_term, low=1.0)
    if rec.text is None:
        raise ValueError("analyze needs the recorded text for its features (record a character model)")
    feats = text_features(rec.text)
    corr = correlations(rec, feats)
    lb = ([None] * rec.num_layers if model is None else
          look_back(model, rec, k_max=look_back_k, units=look_back_units,
                    positions=look_back_positions, seed=seed, inputs=inputs))
    return Analysis(feats, corr, saturation(rec), time_constants(rec), lb, long_term,
                    best_units(corr))
