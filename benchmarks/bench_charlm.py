"""Character language model: rnnforge against the same model built on torch.nn.LSTM.

Three figures, all as ratios measured in one run on one machine:

1. training throughput: tokens/s of a training step (forward, backward, AdamW),
   the two models interleaved step by step, median over many steps;
2. quality: held-out bits per character after the same wall-clock budget, same
   data, seed and initial weights (the torch.nn twin is made with ``to_torch``);
3. generation: characters per second at batch 1, sampling included, of the whole
   ``rnnforge.charlm.generate.generate`` loop against the torch.nn model stepped one call
   per character (with ``sample_categorical`` per character, and again with the
   ``CategoricalStepper`` that ``generate`` uses), interleaved, medians.

    python benchmarks/bench_charlm.py                 # 2 x 2.5 min of training
    python benchmarks/bench_charlm.py --minutes 0.5   # quicker, noisier
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import replace

import torch

from rnnforge.charlm.train import Trainer, TrainConfig


def torch_twin(trainer: Trainer) -> Trainer:
    """Swap the rnnforge stack of ``trainer`` for an identical torch.nn.LSTM."""
    trainer.model.rnn = trainer.model.rnn.to_torch()
    trainer.opt = trainer.make_optimizer()
    return trainer


def throughput(cfg: TrainConfig, steps: int) -> dict[str, float]:
    a = Trainer(replace(cfg, out="/tmp/rnnforge-bench/a"))
    b = torch_twin(Trainer(replace(cfg, out="/tmp/rnnforge-bench/b")))
    times = {"rnnforge": [], "torch.nn": []}
    for _ in range(5):  # warm-up
        a.train_step(), b.train_step()
    for _ in range(steps):
        for name, t in (("rnnforge", a), ("torch.nn", b)):
            t0 = time.perf_counter()
            t.train_step()
            times[name].append(time.perf_counter() - t0)
    tok = cfg.batch_size * cfg.seq_len
    return {k: tok / statistics.median(v) for k, v in times.items()} | {"engine": a.model.rnn.engine_used}


def quality(cfg: TrainConfig) -> dict[str, float]:
    out = {}
    for name in ("rnnforge", "torch.nn"):
        t = Trainer(replace(cfg, out=f"/tmp/rnnforge-bench/q-{name}"))
        if name == "torch.nn":
            torch_twin(t)
        t.run()
        out[name] = (t.best, t.step * cfg.batch_size * cfg.seq_len / t.elapsed, t.step)
    return out


@torch.no_grad()
def generation(cfg: TrainConfig, chars: int, repeats: int) -> dict[str, float]:
    """chars/s of the whole ``generate`` loop against torch.nn stepped one call per character.

    Two torch.nn loops: with the library's one-call ``sample_categorical`` per
    character (the issue's baseline), and with the ``CategoricalStepper`` that
    ``generate`` itself uses, so the share of the model path alone shows too.
    """
    from rnnforge.charlm.generate import generate
    from rnnforge.sampling import sample_categorical
    from rnnforge.sampling.categorical import CategoricalStepper

    t = Trainer(replace(cfg, out="/tmp/rnnforge-bench/g"))
    model, vocab = t.model.eval(), t.vocab
    twin = model.rnn.to_torch().eval()
    gen = torch.Generator().manual_seed(0)

    def ours():
        for _ in generate(model, vocab, "The ", chars, seed=0):
            pass

    def theirs(draw=None):
        logits, state = model(vocab.encode("The ")[None])
        logits = logits[:, -1]
        state = None
        for _ in range(chars):
            nxt = draw(logits) if draw else sample_categorical(logits, generator=gen)  # (1,)
            vocab.chars[nxt.item()]
            z, state = twin(model.embedding(nxt)[:, None], state)  # (1, 1, H)
            logits = model.readout(z[:, 0])

    def theirs_stepper():
        theirs(CategoricalStepper(1, len(vocab), generator=gen).draw)

    runs = {"rnnforge": ours, "torch.nn": theirs, "torch.nn+stepper": theirs_stepper}
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: chars / statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.5, help="training budget of each quality run")
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per model")
    ap.add_argument("--chars", type=int, default=1000, help="characters per generation timing")
    ap.add_argument("--repeats", type=int, default=5, help="generation timings per model")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--skip-quality", action="store_true", help="only throughput and generation")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # force: each run of the benchmark starts its scratch runs over
    cfg = replace(TrainConfig(), minutes=args.minutes, device="cpu", progress=False, tensorboard=False,
                  eval_every=100, lr=4e-3, warmup=30, force=True)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()} {platform.processor() or ''} "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {cfg.layers}x{cfg.hidden} "
          f"{cfg.cell}, B={cfg.batch_size}, T={cfg.seq_len}")
    tp = throughput(cfg, args.steps)
    print(f"training tokens/s: rnnforge ({tp['engine']}) {tp['rnnforge']:,.0f}, torch.nn {tp['torch.nn']:,.0f}, "
          f"ratio {tp['rnnforge'] / tp['torch.nn']:.3f}")
    g = generation(cfg, args.chars, args.repeats)
    print(f"generation chars/s at batch 1: rnnforge {g['rnnforge']:,.0f}, torch.nn stepped {g['torch.nn']:,.0f}, "
          f"ratio {g['rnnforge'] / g['torch.nn']:.2f}; torch.nn stepped with generate's own sampler "
          f"{g['torch.nn+stepper']:,.0f}, ratio {g['rnnforge'] / g['torch.nn+stepper']:.2f}")
    if not args.skip_quality:
        q = quality(cfg)
        (a, ta, sa), (b, tb, sb) = q["rnnforge"], q["torch.nn"]
        print(f"held-out bits/char after {args.minutes} min: rnnforge {a:.4f} ({sa} steps, {ta:,.0f} tok/s), "
              f"torch.nn {b:.4f} ({sb} steps, {tb:,.0f} tok/s), relative difference {(a - b) / b:+.2%}")


if __name__ == "__main__":
    main()
