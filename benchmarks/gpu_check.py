"""One-shot GPU check: correctness of every engine on CUDA, then timings.

Run on a machine with a CUDA GPU (PYTHONPATH=src python benchmarks/gpu_check.py).
``DEVICE=cpu QUICK=1`` runs the same script on the CPU with small sizes, to
check the script itself before spending device time on it.
Correctness first (each engine against the reference on the GPU in float64 and
float32, outputs, states and every gradient), then only engines that passed
are timed against torch.nn (cuDNN), then a short mixed-precision training run
of the character model, GPU text generation, GPU sampling, and a forecaster trained
(teacher forcing, then the rollout objective) and sampled on the GPU.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

import torch

import rnnforge as rf
from rnnforge import engines

dev = torch.device(os.environ.get("DEVICE", "cuda"))
QUICK = bool(os.environ.get("QUICK"))
results: dict = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__}
print(results, flush=True)

MODES = {"lstm": lambda **k: rf.LSTM(**k), "gru": lambda **k: rf.GRU(**k),
         "rnn_tanh": lambda **k: rf.RNN(nonlinearity="tanh", **k),
         "rnn_sigmoid": lambda **k: rf.RNN(nonlinearity="sigmoid", **k)}


def run(layer, x, lengths=None):
    layer.zero_grad(set_to_none=True)
    xx = x.clone().requires_grad_(True)
    out, h = layer(xx, lengths=lengths)
    h = h if isinstance(h, tuple) else (h,)
    loss = out.square().sum() + sum(t.square().sum() for t in h)
    loss.backward()
    grads = [p.grad.clone() for p in layer.parameters()] + [xx.grad.clone()]
    return [out.detach(), *[t.detach() for t in h]], grads


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# cuDNN's RNNs take TF32 tensor cores for float32 by default (torch.backends.cudnn.allow_tf32),
# about 5e-4 relative error against full float32; the correctness checks run without them
torch.backends.cudnn.allow_tf32 = False
passed = {}
for mode, make in MODES.items():
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        layer = make(input_size=7, hidden_size=13, num_layers=2, bidirectional=True, bias=True,
                     device=dev, dtype=dtype)
        x = torch.randn(9, 5, 7, device=dev, dtype=dtype)
        lengths = torch.tensor([9, 3, 7, 1, 9])
        layer.engine = "reference"
        ref = [run(layer, x), run(layer, x, lengths)]
        for name, eng in engines.ENGINES.items():
            if name == "reference":
                continue
            reason = eng.why_not(layer, x, None)
            if reason:
                print(f"{mode:12s} {str(dtype):14s} {name:8s} skipped: {reason}")
                continue
            layer.engine = name
            worst = 0.0
            for (ro, rg), lens in zip(ref, (None, lengths)):
                o, g = run(layer, x, lens)
                worst = max([worst] + [rel(a, b) for a, b in zip(o + g, ro + rg)])
            ok = worst < (1e-10 if dtype == torch.float64 else 1e-4)
            passed[(mode, name)] = passed.get((mode, name), True) and ok
            print(f"{mode:12s} {str(dtype):14s} {name:8s} max rel err {worst:.2e} {'ok' if ok else 'FAIL'}",
                  flush=True)


def timeit(fn, reps=20):
    """Median milliseconds of ``fn``: CUDA events on the GPU, the host clock on the CPU."""
    if QUICK:
        reps = 2
    for _ in range(1 if QUICK else 3):
        fn()
    ts = []
    for _ in range(reps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            ts.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


torch.backends.cudnn.allow_tf32 = True  # timings with torch's defaults, for us and torch.nn alike
timings = []
SHAPES = ((16, 4, 8, 16),) if QUICK else ((256, 32, 128, 256), (1000, 1, 128, 128))
for (T, B, I, H) in SHAPES:
    for mode, make in MODES.items():
        torch.manual_seed(0)
        layer = make(input_size=I, hidden_size=H, bias=True, device=dev)
        x = torch.randn(T, B, I, device=dev, requires_grad=True)
        peer = layer.to_torch() if mode != "rnn_sigmoid" else rf.RNN(I, H, nonlinearity="tanh", bias=True, device=dev).to_torch()

        def fb(m):
            def f():
                out, _ = m(x)
                out.sum().backward()
            return f
        t_peer = timeit(fb(peer))
        row = {"shape": (T, B, I, H), "mode": mode, "torch.nn fwd+bwd ms": round(t_peer, 3)}
        for name in engines.ENGINES:
            if name == "reference" and T > 300:
                continue
            layer.engine = name  # named, so that why_not says only whether it *can* run
            if engines.ENGINES[name].why_not(layer, x, None) or not passed.get((mode, name), name == "reference"):
                continue
            t = timeit(fb(layer), reps=5 if name == "reference" else 20)
            row[f"{name} ms"] = round(t, 3)
            row[f"{name} speed vs torch.nn"] = round(t_peer / t, 3)
        timings.append(row)
        print(json.dumps(row), flush=True)
results["timings"] = timings

# character model: mixed precision training on GPU, then generation
from rnnforge.charlm.generate import generate  # noqa: E402
from rnnforge.charlm.train import Trainer, TrainConfig  # noqa: E402

out = os.environ.get("OUT", "/tmp")  # where gpu_results.json goes
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

with open(f"{out}/gpu_results.json", "w") as f:
    json.dump(results, f, indent=1, default=str)
print("all engine checks passed" if all(passed.values()) else f"FAILED: {[k for k, v in passed.items() if not v]}")
sys.exit(0 if all(passed.values()) else 1)
