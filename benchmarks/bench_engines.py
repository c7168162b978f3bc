"""Engine benchmark: every engine against torch.nn on CPU, as ratios from one run.

Three parts, each printing a markdown table (``--parts`` picks):

``table``      forward and forward+backward time of torch.nn, reference, native
               and fused for each cell at (T=256, B=32, I=128, H=256) and
               (T=1000, B=1, I=H=128) -- issues 2 and 6; the same code as
               ``rnnforge bench``, and like it the engine ``auto`` runs per row
               (measured, or the fixed rule under ``RNNFORGE_AUTOTUNE=0``).
``generate``   ms per character of a character model (embedding -> 2-layer
               LSTM H=256 -> linear readout over V=100 -> one categorical draw by
               inverse transform: float64 cumsum, one torch.rand, searchsorted)
               at batch 1: torch.nn.LSTM called once per character against
               rnnforge's ``LSTM.step`` (the fast decode path), ``decode.step_tokens``
               and ``decode.TokenDecoder`` (what ``generate`` steps), all with the
               same sampler, so the rows compare the model paths alone.
``profile``    torch.profiler's top operators of one fused forward+backward per cell
               and shape (where the time goes, for the targets not reached).
``loops``      the fused engine with its loops over time in C against its torch-op
               loops, per cell, batch (1 to 64) and H (128, 256): the measurement
               behind ``fused.C_LOOP_MAX_BATCH``.
``wide``       the same past that range: H 256 to 1024 and B 8 to 256 (T=32), the
               measurement behind ``fused.C_LOOP_MAX_HIDDEN``.
``train``      training tokens/s of the demo model (embedding -> 2x256 LSTM ->
               readout, Adam) on T=128 chunks of B=32, torch.nn against each
               rnnforge engine.

Engines take turns within each repeat and the median is reported, so load
from other processes hits all of them alike; compare ratios, not absolute ms.

    .venv/bin/python benchmarks/bench_engines.py --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

import rnnforge as rf
from rnnforge.engines.decode import TokenDecoder, step_tokens
from rnnforge import bench as _bench
from rnnforge.bench import CELLS, DEFAULT_SHAPES, engine_table, format_table, parse_shape


# -- generation ------------------------------------------------------------------------------
def _draw(logits: torch.Tensor) -> torch.Tensor:
    """One categorical draw per row by inverse transform: F^{-1}(u) on the float64 CDF."""
    cdf = torch.softmax(logits, -1, dtype=torch.float64).cumsum_(-1)  # (B, V)
    u = torch.rand((logits.shape[0], 1), dtype=torch.float64)  # one uniform per row
    return torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_max_(logits.shape[-1] - 1).squeeze(1)


def generation(chars: int, repeats: int, V: int = 100, H: int = 256, L: int = 2, B: int = 1):
    """{name: ms per character} for torch.nn stepping and rnnforge's decode path."""
    torch.manual_seed(0)
    emb, readout = nn.Embedding(V, H), nn.Linear(H, V)
    ref = nn.LSTM(H, H, L)
    ours = rf.LSTM.from_torch(ref)

    def run_torch():
        idx, state = torch.zeros(B, dtype=torch.long), None
        for _ in range(chars):
            out, state = ref(emb(idx).unsqueeze(0), state)  # (1, B, H)
            idx = _draw(readout(out[0]))

    def run_ours():
        idx, state = torch.zeros(B, dtype=torch.long), None
        for _ in range(chars):
            z, state = ours.step(emb(idx), state)  # (B, H)
            idx = _draw(readout(z))

    def run_tokens():
        idx, state = torch.zeros(B, dtype=torch.long), None
        for _ in range(chars):
            z, state = step_tokens(ours, emb, idx, state)  # (B, H)
            idx = _draw(readout(z))

    def run_decoder():
        idx = torch.zeros(B, dtype=torch.long)
        dec = TokenDecoder(ours, emb, readout, None, batch=B)
        for _ in range(chars):
            idx = _draw(dec.step(idx))

    runs = {"torch.nn.LSTM, one call per char": run_torch,
            "rnnforge LSTM.step(embedding(ids)) (decode path)": run_ours,
            "rnnforge decode.step_tokens (embedding folded into layer 0)": run_tokens,
            "rnnforge decode.TokenDecoder (generate's stepper: state in place, readout inside)": run_decoder}
    times = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(repeats):
            for k, fn in runs.items():
                times[k].append(_bench._time(fn) * 1e3 / chars)
    return {k: statistics.median(v) for k, v in times.items()}


def check_generation_agrees(V=100, H=256, L=2, steps=50) -> bool:
    """The four loops draw the same characters under one seed (the same function)."""
    torch.manual_seed(0)
    emb, readout = nn.Embedding(V, H), nn.Linear(H, V)
    ref = nn.LSTM(H, H, L)
    ours = rf.LSTM.from_torch(ref)
    seqs = []
    with torch.no_grad():
        for which in ("torch", "step", "tokens", "decoder"):
            torch.manual_seed(1)
            idx, state, seq = torch.zeros(1, dtype=torch.long), None, []
            dec = TokenDecoder(ours, emb, readout, None, batch=1)
            for _ in range(steps):
                if which == "decoder":
                    idx = _draw(dec.step(idx))
                    seq.append(int(idx))
                    continue
                if which == "step":
                    z, state = ours.step(emb(idx), state)
                elif which == "tokens":
                    z, state = step_tokens(ours, emb, idx, state)
                else:
                    out, state = ref(emb(idx).unsqueeze(0), state)
                    z = out[0]
                idx = _draw(readout(z))
                seq.append(int(idx))
            seqs.append(seq)
    return seqs[0] == seqs[1] == seqs[2] == seqs[3]


# -- training --------------------------------------------------------------------------------
class _CharModel(nn.Module):
    def __init__(self, rnn, V, H):
        super().__init__()
        self.emb, self.rnn, self.readout = nn.Embedding(V, H), rnn, nn.Linear(H, V)

    def forward(self, ids):
        z, _ = self.rnn(self.emb(ids))  # (B, T, H)
        return self.readout(z)  # (B, T, V)


def training(steps: int, repeats: int, engines, T=128, B=32, V=100, H=256, L=2):
    """{name: tokens/s} of Adam training steps on random ids."""
    torch.manual_seed(0)
    ref = nn.LSTM(H, H, L, batch_first=True)
    models = {"torch.nn": _CharModel(ref, V, H)}
    for e in engines:
        m = _CharModel(rf.LSTM.from_torch(ref, engine=e), V, H)
        m.load_state_dict(models["torch.nn"].state_dict(), strict=False)
        models[e] = m
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, m in models.items()}
    ids = torch.randint(V, (B, T + 1))
    loss_fn = nn.CrossEntropyLoss()

    def train_steps(k, n):
        m, opt = models[k], opts[k]
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            logits = m(ids[:, :-1])
            loss = loss_fn(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
            loss.backward()
            opt.step()

    times = {k: [] for k in models}
    for k in models:
        train_steps(k, 1)  # warm-up
    for _ in range(repeats):
        for k in models:
            times[k].append(_bench._time(lambda: train_steps(k, steps)) / steps)
    return {k: B * T / statistics.median(v) for k, v in times.items()}


def profile_fused(cell: str, shape, rows: int = 8) -> str:
    """torch.profiler table (self CPU time) of one fused forward+backward, after two warm-ups."""
    from torch.profiler import profile

    from rnnforge.bench import make_modules

    T, B, I, H = shape
    torch.manual_seed(0)
    _, layers = make_modules(cell, I, H, ["fused"])
    layer = layers["fused"]
    x = torch.randn(T, B, I, requires_grad=True)
    for _ in range(2):
        layer(x)[0].sum().backward()
    with profile() as prof:
        layer(x)[0].sum().backward()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def c_loop_crossover(cells, repeats: int, batches=(1, 2, 4, 8, 16, 32, 64), sizes=((200, 128), (100, 256))):
    """fused forward+backward with its loops over time in C against the same engine
    with its torch-op loops, per cell, batch and hidden size (I=128): the measurement
    behind ``fused.C_LOOP_MAX_BATCH`` and ``C_LOOP_MAX_HIDDEN``. Interleaved, medians of
    ``repeats``."""
    from rnnforge.bench import make_modules
    from rnnforge.engines.fused import cloops  # where the dispatch reads its limits

    saved, saved_hidden = dict(cloops.C_LOOP_MAX_BATCH), cloops.C_LOOP_MAX_HIDDEN
    print("| cell | T x B x H | C loops ms | torch loops ms | torch / C |\n|---|---|---:|---:|---:|")
    try:
        for cell in cells:
            for T, H in sizes:
                for B in batches:
                    torch.manual_seed(0)
                    layer = make_modules(cell, 128, H, ["fused"])[1]["fused"]
                    x = torch.randn(T, B, 128, requires_grad=True)
                    times = {"c": [], "torch": []}
                    for r in range(repeats + 1):
                        for name, cap in (("c", 1 << 30), ("torch", -1)):
                            cloops.C_LOOP_MAX_BATCH = dict.fromkeys(saved, cap)
                            cloops.C_LOOP_MAX_HIDDEN = cap
                            t0 = time.perf_counter()
                            layer(x)[0].sum().backward()
                            if r:  # the first round warms up
                                times[name].append(time.perf_counter() - t0)
                    c, t = statistics.median(times["c"]), statistics.median(times["torch"])
                    print(f"| {cell} | {T}x{B}x{H} | {1e3 * c:.2f} | {1e3 * t:.2f} | {t / c:.2f} |", flush=True)
    finally:
        cloops.C_LOOP_MAX_BATCH, cloops.C_LOOP_MAX_HIDDEN = saved, saved_hidden


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["table", "generate", "train"],
                   choices=["table", "generate", "train", "profile", "loops", "wide"],
                   help="which benchmarks to run")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 keeps the default")
    p.add_argument("--clock", choices=sorted(_bench.CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: process CPU time (steadier on a shared machine)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats; medians are shown")
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), metavar="TxBxIxH")
    p.add_argument("--engines", nargs="+", default=["reference", "native", "fused"])
    p.add_argument("--chars", type=int, default=400, help="characters per generation repeat")
    p.add_argument("--train-steps", type=int, default=3, help="training steps per repeat")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _bench.set_clock(args.clock)
    print(f"# {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.clock} clock, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC")
    if "table" in args.parts:
        print("\n## Engine table (speed = torch.nn time / engine time)\n")
        print(_bench.auto_line() + "\n")
        print(format_table([]))
        engine_table(args.cells, [parse_shape(s) for s in args.shapes], args.engines, args.repeats)
    if "generate" in args.parts:
        print("\n## Generation, batch 1, 2-layer LSTM H=256, V=100, sampling included\n")
        print(f"same draws as torch.nn under one seed: {check_generation_agrees()}")
        res = generation(args.chars, args.repeats)
        base = res["torch.nn.LSTM, one call per char"]
        print("| loop | ms / char | speed vs torch.nn |\n|---|---:|---:|")
        for k, v in res.items():
            print(f"| {k} | {v:.3f} | {base / v:.2f}x |")
    if "profile" in args.parts:
        for shape in args.shapes:
            for cell in args.cells:
                print(f"\n## Profile: fused {cell} {shape}, forward+backward\n\n```")
                print(profile_fused(cell, parse_shape(shape)))
                print("```")
    if "loops" in args.parts:
        print("\n## fused: loops over time in C against torch-op loops, forward+backward, I=128\n")
        c_loop_crossover([c for c in args.cells if c != "rnn_sigmoid"], args.repeats)
    if "wide" in args.parts:
        print("\n## fused: C loops against torch-op loops past the first range (H up to 1024, "
              "B up to 256), forward+backward, I=128\n")
        c_loop_crossover([c for c in args.cells if c != "rnn_sigmoid"], args.repeats,
                         batches=(8, 32, 128, 256), sizes=((32, 256), (32, 512), (32, 1024)))
    if "train" in args.parts:
        print("\n## Training, embedding -> 2x256 LSTM -> readout, Adam, T=128, B=32\n")
        res = training(args.train_steps, args.repeats, [e for e in args.engines if e != "reference"] + ["auto"])
        base = res["torch.nn"]
        print("| model | tokens / s | vs torch.nn |\n|---|---:|---:|")
        for k, v in res.items():
            print(f"| {k} | {v:.0f} | {base and v / base:.2f}x |")


if __name__ == "__main__":
    main()
