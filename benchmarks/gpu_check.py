"""One-shot GPU check (issue 17's benchmark): correctness of every engine, then timings.

Run on a machine with a CUDA GPU: ``PYTHONPATH=src python benchmarks/gpu_check.py``;
it writes ``$OUT/gpu_results.json`` (default /tmp) after every section, so a run cut
short still leaves what it measured. ``DEVICE=cpu QUICK=1`` runs the same script on
the CPU at tiny sizes, to check the script itself before spending device time on it
(there the ``triton`` engine, when registered, runs under ``TRITON_INTERPRET=1``).
``BUDGET_S`` (default 240) bounds the timed sections: rows past it are skipped with
that reason, so the whole run stays under five minutes.

1. Correctness: every registered engine (``rnnforge.engines.ENGINES``, so ``triton``
   when it is there) against the reference engine on the device in float64 and
   float32 (outputs, states and every gradient, with and without lengths) and, for
   half types, against the float32 reference. An engine that cannot run says why
   (``why_not``), and that goes into the JSON. Only engines that passed are timed.
2. Timings with CUDA events (host clock on the CPU), medians, against torch.nn
   (cuDNN) in the same dtype, in one run: shapes (T, B, I=H) (1024, 16, 256),
   (256, 64, 512), (128, 256, 1024); float32 with TF32 off (cuDNN and our
   engines), float32 with cuDNN's default TF32 on (torch.nn and native only: the
   other engines' float32 mode is their own, stated per engine), bfloat16,
   float16; forward (with autograd recording, as in training) and forward+backward;
   the sigmoid RNN against cuDNN's tanh RNN on the same shape (and the reference
   loop at the first shape); native against torch.nn.
3. Batch-1 generation of a 2 x 512 LSTM character model in µs per character:
   ``generate`` (CUDA graph replay, and op by op), against torch.nn eager and
   torch.nn under CUDA-graph replay (the same step: embedding, LSTM, linear, an
   inverse-transform draw from uniforms drawn on the device).
4. The older checks: mixed-precision training of the character model, text
   generation, categorical sampling, the forecaster trained and sampled on the device.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

dev_name = os.environ.get("DEVICE", "cuda")
QUICK = bool(os.environ.get("QUICK"))
if dev_name == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: kernels interpreted

import torch  # noqa: E402

import rnnforge as rf  # noqa: E402
from rnnforge import engines  # noqa: E402

dev = torch.device(dev_name)
CUDA = dev.type == "cuda"
START = time.perf_counter()
BUDGET_S = float(os.environ.get("BUDGET_S", "240"))
RESERVE_S = 0 if QUICK else 75  # kept from the timings for generation and the older checks
out_dir = os.environ.get("OUT", "/tmp")  # where gpu_results.json goes
os.makedirs(out_dir, exist_ok=True)
results: dict = {"device": torch.cuda.get_device_name(0) if CUDA else "cpu", "torch": torch.__version__,
                 "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if CUDA else None,
                 "quick": QUICK, "engines": list(engines.ENGINES)}
try:
    import triton

    results["triton"] = triton.__version__
except ImportError:
    results["triton"] = None
if CUDA:
    import subprocess

    try:
        results["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        results["driver"] = repr(e)
print(results, flush=True)


def dump() -> None:
    with open(f"{out_dir}/gpu_results.json", "w") as f:
        json.dump(results, f, indent=1, default=str)


def left() -> float:
    return BUDGET_S - (time.perf_counter() - START)


MODES = {"lstm": lambda **k: rf.LSTM(**k), "gru": lambda **k: rf.GRU(**k),
         "rnn_tanh": lambda **k: rf.RNN(nonlinearity="tanh", **k),
         "rnn_sigmoid": lambda **k: rf.RNN(nonlinearity="sigmoid", **k)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def run(layer, x, lengths=None):
    layer.zero_grad(set_to_none=True)
    xx = x.clone().requires_grad_(True)
    out, h = layer(xx, lengths=lengths)
    h = h if isinstance(h, tuple) else (h,)
    loss = out.float().square().sum() + sum(t.float().square().sum() for t in h)
    loss.backward()
    grads = [p.grad.clone() for p in layer.parameters()] + [xx.grad.clone()]
    return [out.detach(), *[t.detach() for t in h]], grads


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# -- 1. correctness ----------------------------------------------------------------------------
# cuDNN's RNNs take TF32 tensor cores for float32 by default (torch.backends.cudnn.allow_tf32),
# about 5e-4 relative error against full float32; the correctness checks run without them
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}
passed: dict = {}
correctness: list = []
for mode, make in MODES.items():
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        base = torch.float64 if dtype == torch.float64 else torch.float32  # the reference's dtype
        torch.manual_seed(0)
        layer = make(input_size=7, hidden_size=13, num_layers=2, bidirectional=True, bias=True,
                     device=dev, dtype=base)
        x = torch.randn(9, 5, 7, device=dev, dtype=base)
        lengths = torch.tensor([9, 3, 7, 1, 9])
        layer.engine = "reference"
        ref = [run(layer, x), run(layer, x, lengths)]  # float64, or float32 for every other dtype
        low = dtype in (torch.bfloat16, torch.float16)
        if low:
            layer.to(dtype)
        xd = x.to(dtype)
        for name, ranked in engines.ENGINES.items():
            if name == "reference":
                continue
            row = {"mode": mode, "dtype": str(dtype).replace("torch.", ""), "engine": name}
            reason = ranked.engine.why_not(layer, xd, None)
            if reason:
                row["skipped"] = reason
                correctness.append(row)
                print(f"{mode:12s} {row['dtype']:9s} {name:8s} skipped: {reason}", flush=True)
                continue
            layer.engine = name
            worst = 0.0
            try:
                for (ro, rg), lens in zip(ref, (None, lengths)):
                    o, g = run(layer, xd, lens)
                    worst = max([worst] + [rel(a, b) for a, b in zip(o + g, ro + rg)])
                ok = worst < TOL[dtype]
            except Exception as e:  # a crash is a failure, reported with its message
                row["error"], ok, worst = repr(e), False, float("nan")
            row.update({"max_rel_err": worst, "tolerance": TOL[dtype], "ok": ok})
            correctness.append(row)
            passed[(mode, name, dtype)] = ok
            print(f"{mode:12s} {row['dtype']:9s} {name:8s} max rel err {worst:.2e} {'ok' if ok else 'FAIL'}",
                  flush=True)
results["correctness"] = correctness
dump()


# -- 2. timings ----------------------------------------------------------------------------------
def timeit(fn, target_s=0.25):
    """Median milliseconds of ``fn``: CUDA events on the GPU, the host clock on the CPU; as many
    repetitions (3 to 20) as fit in about ``target_s``."""
    def once():
        if CUDA:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            return s.elapsed_time(e)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    fn()  # warm-up: lazy initialisation, autotuning, kernel compilation
    if CUDA:
        torch.cuda.synchronize()
    first = once()
    reps = 2 if QUICK else max(3, min(20, int(target_s * 1e3 / max(first, 1e-3))))
    return statistics.median([first] + [once() for _ in range(reps - 1)])


def fwd(m, x):
    def f():
        m(x)
    return f


def fwd_bwd(m, x):
    def f():
        out, _ = m(x)
        out.float().sum().backward()
    return f


SHAPES = ((8, 2, 16),) if QUICK else ((1024, 16, 256), (256, 64, 512), (128, 256, 1024))
SETTINGS = (("float32", False), ("float32", True), ("bfloat16", False), ("float16", False))  # (dtype, TF32)
timings: list = []
for (T, B, H) in SHAPES:
    for dname, tf32 in SETTINGS:
        dtype = DTYPES[dname]
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for mode, make in MODES.items():
            row = {"shape": [T, B, H], "mode": mode, "dtype": dname, "tf32": tf32}
            timings.append(row)
            if left() <= RESERVE_S:
                row["skipped"] = "time budget of the run spent (BUDGET_S)"
                continue
            torch.manual_seed(0)
            layer = make(input_size=H, hidden_size=H, bias=True, device=dev, dtype=dtype)
            x = torch.randn(T, B, H, device=dev, dtype=dtype, requires_grad=True)
            twin = layer if mode != "rnn_sigmoid" else rf.RNN(H, H, nonlinearity="tanh", bias=True,
                                                               device=dev, dtype=dtype)
            peer = twin.to_torch()  # cuDNN on the GPU; for the sigmoid RNN, cuDNN's tanh RNN
            row["torch.nn"] = "tanh RNN" if mode == "rnn_sigmoid" else mode
            try:
                row["torch.nn fwd ms"] = round(timeit(fwd(peer, x)), 4)
                row["torch.nn fwd+bwd ms"] = round(timeit(fwd_bwd(peer, x)), 4)
            except Exception as e:  # e.g. no half-precision RNN kernels on the CPU
                row["torch.nn skipped"] = repr(e)
                continue
            names = [n for n in engines.ENGINES if n != "reference"]
            if mode == "rnn_sigmoid" and (T, B, H) == SHAPES[0] and not tf32:
                names.append("reference")  # the Python loop the sigmoid RNN had before
            for name in names:
                if tf32 and name != "native":
                    continue  # TF32 changes only cuDNN's float32: our own kernels' mode is their own
                why = engines.ENGINES[name].engine.why_not(layer, x, None)
                if why is None and name != "reference" and not passed.get((mode, name, dtype), False):
                    why = "failed (or did not run) the correctness check above in this dtype"
                if why:
                    row[f"{name} skipped"] = why
                    continue
                if left() <= RESERVE_S:
                    row[f"{name} skipped"] = "time budget of the run spent (BUDGET_S)"
                    continue
                layer.engine = name
                mode32 = getattr(engines.ENGINES[name].engine, "float32_mode", None)
                if mode32 and dname == "float32":
                    row[f"{name} float32 mode"] = mode32
                try:
                    t_f = timeit(fwd(layer, x), 0.1 if name == "reference" else 0.25)
                    t_fb = timeit(fwd_bwd(layer, x), 0.1 if name == "reference" else 0.25)
                except Exception as e:  # report, do not hide
                    row[f"{name} error"] = repr(e)
                    continue
                row[f"{name} fwd ms"], row[f"{name} fwd+bwd ms"] = round(t_f, 4), round(t_fb, 4)
                if "torch.nn fwd ms" in row:
                    row[f"{name} fwd x torch.nn"] = round(row["torch.nn fwd ms"] / t_f, 3)
                    row[f"{name} fwd+bwd x torch.nn"] = round(row["torch.nn fwd+bwd ms"] / t_fb, 3)
            print(json.dumps(row), flush=True)
        dump()
torch.backends.cudnn.allow_tf32 = True
torch.backends.cuda.matmul.allow_tf32 = False
results["timings"] = timings
dump()


# -- 3. batch-1 generation of a 2 x 512 LSTM character model -----------------------------------
def generation_bench() -> dict:
    from rnnforge.charlm.data import Vocab
    from rnnforge.charlm.generate import generate
    from rnnforge.charlm.model import CharLM, CharLMConfig

    V, Hd, n = 96, (32 if QUICK else 512), (40 if QUICK else 3000)
    chars = "".join(chr(32 + i) for i in range(V))
    vocab = Vocab.from_text(chars)
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(vocab_size=V, cell="lstm", hidden=Hd, layers=2)).to(dev).eval()
    row: dict = {"model": f"2 x {Hd} LSTM, V={V}, batch 1", "chars": n}

    def per_char(fn):
        fn(n)  # warm-up at the timed length: the graphs are captured here, not in the timing
        if CUDA:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(n)
        if CUDA:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n * 1e6

    def measure(label, fn):
        try:
            row[f"{label} us/char"] = round(per_char(fn), 2)
        except Exception as e:  # report, do not hide
            row[f"{label} error"] = repr(e)

    for label, graph in (("rnnforge graph", None), ("rnnforge eager", False)):
        if graph is None and not CUDA:
            row[f"{label} skipped"] = "CUDA graphs need a CUDA device"
            continue
        measure(label, lambda k, graph=graph: sum(1 for _ in generate(model, vocab, "a", k, seed=0,
                                                                      cuda_graph=graph)))
    a = "".join(generate(model, vocab, "a", 300, seed=5, cuda_graph=False))
    if CUDA:
        row["graph text == eager text"] = a == "".join(generate(model, vocab, "a", 300, seed=5))

    # torch.nn: the same step written with nn.LSTM, a linear readout and an inverse-transform draw
    emb = torch.nn.Embedding(V, Hd).to(dev)
    lstm = torch.nn.LSTM(Hd, Hd, 2).to(dev)
    head = torch.nn.Linear(Hd, V).to(dev)
    ids = torch.zeros(1, 1, dtype=torch.long, device=dev)
    h = torch.zeros(2, 1, Hd, device=dev)
    c = torch.zeros(2, 1, Hd, device=dev)
    u = torch.rand(n + 64, 1, device=dev, dtype=torch.float64)
    pos = torch.zeros(1, dtype=torch.long, device=dev)

    @torch.no_grad()
    def nn_step():
        z, (h2, c2) = lstm(emb(ids), (h, c))
        h.copy_(h2)
        c.copy_(c2)
        cdf = torch.softmax(head(z[0]).double(), -1).cumsum(-1)  # (1, V)
        k = torch.searchsorted(cdf, u.index_select(0, pos) * cdf[:, -1:]).clamp_(max=V - 1)
        ids.copy_(k.view(1, 1))
        pos.add_(1)

    def nn_eager(k):
        pos.zero_()
        for _ in range(k):
            nn_step()

    measure("torch.nn eager", nn_eager)
    if CUDA:
        from rnnforge.engines.decode import CudaGraph

        def nn_graph(k):
            pos.zero_()
            for _ in range(k):
                g()

        try:
            g = CudaGraph(nn_step, [h, c, ids, pos])
            measure("torch.nn graph", nn_graph)
        except Exception as e:  # report, do not hide
            row["torch.nn graph error"] = repr(e)
        if "rnnforge graph us/char" in row and "torch.nn graph us/char" in row:
            row["rnnforge graph x torch.nn graph"] = round(row["torch.nn graph us/char"]
                                                           / row["rnnforge graph us/char"], 3)
    else:
        row["torch.nn graph skipped"] = "CUDA graphs need a CUDA device"
    return row


try:
    results["generation"] = generation_bench()
except Exception as e:  # report, do not hide
    results["generation"] = {"error": repr(e)}
print("generation", results["generation"], flush=True)
dump()

# character model: mixed precision training on GPU, then generation
from rnnforge.charlm.generate import generate  # noqa: E402
from rnnforge.charlm.train import Trainer, TrainConfig  # noqa: E402

runs = tempfile.mkdtemp(prefix="gpu_check_")  # checkpoints of the training runs (not sent back)
t = Trainer(TrainConfig(steps=5 if QUICK else 300, eval_every=150, device=str(dev), out=f"{runs}/charlm",
                        progress=False, tensorboard=False, batch_size=64, hidden=32 if QUICK else 256))
m = t.run()
results["train"] = {"val_bpc": m["val_bpc"], "tokens_per_s": m["tokens_per_s"], "amp": str(t.amp_dtype),
                    "engine": t.engine_used}
print("train", results["train"], flush=True)

# every cell under autocast, and fp16 with the GradScaler (an H100 would otherwise only ever take bf16)
amp_runs = {}
for cell, amp in (("lstm", "fp16"), ("gru", "bf16"), ("rnn-tanh", "bf16"), ("rnn", "bf16"), ("rnn", "fp16")):
    key = f"{cell} {amp}"
    try:
        ta = Trainer(TrainConfig(cell=cell, steps=5 if QUICK else 60, eval_every=30, device=str(dev),
                                 amp=amp if dev.type == "cuda" else "off", out=f"{runs}/amp-{cell}-{amp}",
                                 progress=False, tensorboard=False, batch_size=32, hidden=32 if QUICK else 128))
        first = ta.train_step()
        ma = ta.run()
        amp_runs[key] = {"first_loss": round(first, 4), "val_bpc": ma["val_bpc"], "engine": ta.engine_used,
                         "dtype": str(ta.amp_dtype), "scale": ta.scaler.get_scale() if ta.scaler else None}
    except Exception as e:  # report, do not hide
        amp_runs[key] = {"error": repr(e)}
    print("amp", key, amp_runs[key], flush=True)
results["amp"] = amp_runs
model = t.model.eval()
a = "".join(generate(model, t.vocab, "The ", 200, seed=1))
b = "".join(generate(model, t.vocab, "The ", 200, seed=1))
t0 = time.perf_counter()
n = sum(1 for _ in generate(model, t.vocab, "The ", 50 if QUICK else 1000, seed=2))
results["generate"] = {"same_seed_same_text": a == b, "chars_per_s": n / (time.perf_counter() - t0)}
print("generate", results["generate"], repr(a[:120]), flush=True)

try:
    from rnnforge import sampling

    logits = torch.randn(16, 50304, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    idx = sampling.sample_categorical(logits, generator=g)
    results["sampling"] = {"categorical_device": str(idx.device), "shape": list(idx.shape)}
    print("sampling", results["sampling"], flush=True)
except Exception as e:  # report, do not hide
    results["sampling"] = {"error": repr(e)}
    print("sampling FAILED", repr(e), flush=True)

try:  # forecaster: teacher-forced and rollout training, then 1000 sample paths, all on the device
    from rnnforge.forecast.series import load
    from rnnforge.forecast import trainer as ftrain
    from rnnforge.forecast.model import Forecaster, ModelConfig

    (co2,) = load("co2")
    torch.manual_seed(0)
    fm = Forecaster(ModelConfig(cell="lstm", head="gaussian", hidden=16, layers=1,
                                features=dict(lags=[1, 2, 52], harmonics=2)))
    kw = dict(context=120, horizon=52, minutes=None, device=str(dev), log=None, val_windows=2)
    tf = ftrain.fit(fm, [co2], steps=20 if QUICK else 200, **kw)
    ro = ftrain.fit(fm, [co2], steps=4 if QUICK else 40, objective="rollout", log_every=2 if QUICK else 10, **kw)
    gen = torch.Generator(device=dev).manual_seed(0)
    fm.sample_paths([co2], [len(co2)], context=120, horizon=52, num_samples=10, generator=gen, device=dev)
    t0 = time.perf_counter()
    paths = fm.sample_paths([co2], [len(co2)], context=120, horizon=52, num_samples=1000, generator=gen,
                            device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    results["forecast"] = {"teacher_s_per_step": tf.seconds / tf.steps, "rollout_s_per_step": ro.seconds / ro.steps,
                           "rollout_val": ro.val_losses, "rollout_kept": ro.best_step,
                           "paths_1000x52_s": time.perf_counter() - t0, "paths_finite": bool((paths == paths).all()),
                           "path_mean_last": float(paths[0, :, -1].mean())}
    print("forecast", results["forecast"], flush=True)
except Exception as e:  # report, do not hide
    results["forecast"] = {"error": repr(e)}
    print("forecast FAILED", repr(e), flush=True)

results["elapsed_s"] = round(time.perf_counter() - START, 1)
dump()
print("all engine checks passed" if all(passed.values()) else f"FAILED: {[k for k, v in passed.items() if not v]}")
sys.exit(0 if all(passed.values()) else 1)
