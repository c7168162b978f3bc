"""The memory experiment's tasks: two that need long-term memory, two near-term.

Every batch is generated on the fly from a ``torch.Generator``.

``adding`` -- long term (Hochreiter & Schmidhuber 1997; set-up of Le, Jaitly &
    Hinton 2015). Input (T, B, 2): channel 0 a value uniform in [0, 1], channel
    1 a marker that is 1 at exactly two steps, one in the first half
    ``[0, T//2)`` and one in the second ``[T//2, T)``. Target: the sum of the
    two marked values, read from the last state. Error: test MSE. Always
    answering 1 (the mean) gives MSE = Var(U1 + U2) = 1/6 ≈ 0.167. Solved:
    test MSE < 0.01.
``copy`` -- long term, discrete. Input: ``K`` symbols from an alphabet of
    ``A``, then ``T`` blank steps, then ``K`` steps of a "recall" cue, one-hot
    over ``A + 2`` channels (length ``K + T + K``). Target: the ``K`` symbols,
    in order, at the recall steps. Error: fraction of recalled symbols wrong.
    Chance: ``1 - 1/A``. Solved: error < 0.01.
``delay`` -- near term. Input: random bits (T, B, 1). Target at every step
    ``t >= k``: the bit of step ``t - k``. Error: fraction of bits wrong.
    Chance: 0.5. Solved: error < 0.01.
``parity`` -- near term, nonlinear. Target at every step ``t >= k - 1``: the
    parity (XOR) of the last ``k`` bits, steps ``t-k+1 .. t``. Chance 0.5,
    solved: error < 0.01.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ...errors import OptionError, check_int

#: error below which a run counts as solved, for every task
SOLVED_BELOW = 0.01


class Task:
    """A sequence task: what to generate, which states to read, how to score.

    ``sample(T, batch, generator)`` returns ``(x, y)`` with ``x`` (L, B, I)
    float32 (``L`` the sequence length, ``T`` except for ``copy``) and ``y``
    the targets; ``states(out)`` picks the hidden states (N, B, H) or (B, H)
    that the readout maps to predictions for ``y``.
    """

    name: str = ""
    input_size: int = 1
    output_size: int = 2
    metric: str = "error rate"
    long_term: bool = True

    def min_length(self) -> int:
        return 2

    def sequence_length(self, T: int) -> int:
        return T

    def sample(self, T: int, batch: int, generator: torch.Generator):
        raise NotImplementedError

    def states(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def baseline(self) -> float:
        """The error of the best answer that ignores the input."""
        raise NotImplementedError

    def baseline_label(self) -> str:
        return "chance"

    # classification by default: logits (..., C), targets (...)
    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), y.reshape(-1))

    def error(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        return (pred.argmax(-1) != y).float().mean().item()

    def describe(self) -> str:
        return self.name


class AddingTask(Task):
    name = "adding"
    input_size = 2
    output_size = 1
    metric = "test MSE"

    def sample(self, T, batch, generator):
        values = torch.rand(T, batch, generator=generator)  # (T, B)
        first = torch.randint(0, T // 2, (batch,), generator=generator)  # (B,) in the first half
        second = torch.randint(T // 2, T, (batch,), generator=generator)  # (B,) in the second half
        cols = torch.arange(batch)
        markers = torch.zeros(T, batch)
        markers[first, cols] = 1.0
        markers[second, cols] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (T, B, 2)
        y = values[first, cols] + values[second, cols]  # (B,)
        return x, y

    def states(self, out):
        return out[-1]  # (B, H): the last state

    @property
    def baseline(self):
        return 1.0 / 6.0  # Var(U1 + U2), U ~ U[0, 1]: the MSE of always answering 1

    def baseline_label(self):
        return "always 1"

    def loss(self, pred, y):
        return F.mse_loss(pred.squeeze(-1), y)

    def error(self, pred, y):
        return F.mse_loss(pred.squeeze(-1), y).item()

    def describe(self):
        return "adding problem: sum of the two marked values among T, read at the last step"


class CopyTask(Task):
    name = "copy"
    metric = "recall error rate"

    def __init__(self, symbols: int = 5, alphabet: int = 8) -> None:
        self.symbols, self.alphabet = symbols, alphabet
        self.input_size = alphabet + 2  # A symbols, blank (A), recall cue (A + 1)
        self.output_size = alphabet

    def sequence_length(self, T):
        return T + 2 * self.symbols

    def sample(self, T, batch, generator):
        K, A = self.symbols, self.alphabet
        y = torch.randint(0, A, (K, batch), generator=generator)  # (K, B)
        tokens = torch.full((K + T + K, batch), A, dtype=torch.long)  # blanks
        tokens[:K] = y
        tokens[K + T:] = A + 1  # recall cue: "now say the symbols"
        x = F.one_hot(tokens, A + 2).float()  # (K+T+K, B, A+2)
        return x, y

    def states(self, out):
        return out[-self.symbols:]  # (K, B, H): the recall steps

    @property
    def baseline(self):
        return 1.0 - 1.0 / self.alphabet

    def describe(self):
        return (f"copy: recall {self.symbols} symbols of {self.alphabet} after T blank steps")


class DelayTask(Task):
    name = "delay"
    long_term = False
    metric = "error rate"

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def min_length(self):
        return max(2, self.k + 1)

    def sample(self, T, batch, generator):
        bits = torch.randint(0, 2, (T, batch), generator=generator)  # (T, B)
        return bits.float().unsqueeze(-1), bits[:T - self.k]  # y[j] = bit j, read at step j + k

    def states(self, out):
        return out[self.k:]  # (T-k, B, H)

    @property
    def baseline(self):
        return 0.5

    def describe(self):
        return f"delay: at every step, the input bit of {self.k} steps ago"


class ParityTask(Task):
    name = "parity"
    long_term = False
    metric = "error rate"

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def min_length(self):
        return max(2, self.k)

    def sample(self, T, batch, generator):
        bits = torch.randint(0, 2, (T, batch), generator=generator)  # (T, B)
        windows = bits.unfold(0, self.k, 1)  # (T-k+1, B, k): steps t-k+1 .. t
        return bits.float().unsqueeze(-1), windows.sum(-1) % 2

    def states(self, out):
        return out[self.k - 1:]  # (T-k+1, B, H)

    @property
    def baseline(self):
        return 0.5

    def describe(self):
        return f"parity: at every step, the XOR of the last {self.k} input bits"


TASKS: dict[str, Callable[..., Task]] = {
    "adding": lambda **kw: AddingTask(),
    "copy": lambda symbols=5, alphabet=8, **kw: CopyTask(symbols, alphabet),
    "delay": lambda k=3, **kw: DelayTask(k),
    "parity": lambda k=3, **kw: ParityTask(k),
}


def make_task(name: str, *, k: int = 3, symbols: int = 5, alphabet: int = 8) -> Task:
    """The task called ``name``, with its options checked."""
    if name not in TASKS:
        raise OptionError("task", f"must be one of {', '.join(TASKS)}, got {name!r}")
    check_int("k", k, low=1)
    check_int("symbols", symbols, low=1)
    check_int("alphabet", alphabet, low=2)
    return TASKS[name](k=k, symbols=symbols, alphabet=alphabet)
