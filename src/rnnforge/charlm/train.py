"""Training the character language model: truncated BPTT over contiguous streams.

The training text is cut into ``B`` contiguous streams (``B * world`` under
DDP, each rank taking its own ``B``); each step takes the next ``T`` characters
of every stream and carries the recurrent state over from the previous chunk
(detached: truncated backpropagation through time). AdamW, gradient clipping,
linear warm-up then cosine decay, periodic held-out bits per character, the
best checkpoint kept, and ``resume`` restoring model, optimizer, schedule,
carried state, RNG and step exactly.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import checkpoint
from .checkpoint import BEST, KIND, LAST
from .data import Vocab, load_text, split, streams
from ..errors import OptionError, UserError
from ..runtime import AMP, amp_dtype, dist_setup, rank_device, resolve_device, set_threads
from ..training import Budget, clipped_step, cosine_lr, set_lr, warmup_progress
from .model import CELLS, CharLM, CharLMConfig

LN2 = math.log(2.0)


@dataclass
class TrainConfig:
    data: str | None = None
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 2
    embed: int = 0
    dropout: float = 0.0
    tie_weights: bool = False
    engine: str = "auto"
    batch_size: int = 32
    seq_len: int = 128
    steps: int = 0
    minutes: float = 0.0
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup: int = 50
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 200
    val_fraction: float = 0.05
    seed: int = 1337
    device: str = "auto"
    amp: str = "auto"
    out: str = "runs/charlm"
    resume: bool = False
    threads: int = 0
    progress: bool = True
    tensorboard: bool = True

    def budget(self) -> Budget:
        return Budget.of(self.steps, self.minutes)

    def validate(self) -> None:
        if self.cell not in CELLS:
            raise UserError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.steps < 0 or self.minutes < 0:
            raise UserError("--steps and --minutes must not be negative")
        if self.steps == 0 and self.minutes == 0:
            raise UserError("give a budget: --steps N, --minutes M, or both")
        for name in ("hidden", "layers", "batch_size", "seq_len", "eval_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if isinstance(self.amp, bool):  # the boolean of earlier versions
            self.amp = "auto" if self.amp else "off"
        if self.amp not in AMP:
            raise OptionError("amp", f"{self.amp!r}: choose one of {', '.join(AMP)}")


def learning_rate(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio * lr``.

    Progress is the larger of the step and the time budget's fraction used, so
    the schedule ends with whichever budget ends first.
    """
    progress = warmup_progress(cfg.budget(), step, elapsed, cfg.warmup)
    return cosine_lr(cfg.lr, step, progress, warmup=cfg.warmup, min_ratio=cfg.min_lr_ratio)


def _state_tensors(state) -> list[torch.Tensor]:
    if state is None:
        return []
    return list(state) if isinstance(state, tuple) else [state]


def _detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _gather_state(state, world: int):
    """The carried state of all ranks, concatenated over the batch, for checkpoints."""
    parts = _state_tensors(state)
    if world == 1 or not parts:
        return parts
    import torch.distributed as dist

    out = []
    for t in parts:
        bucket = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(bucket, t.contiguous())
        out.append(torch.cat(bucket, 1))
    return out


@torch.no_grad()
def evaluate(model: CharLM, val: torch.Tensor, seq_len: int, device) -> float:
    """Held-out bits per character, the state carried across chunks of each stream."""
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    n = val.shape[1] - 1
    for pos in range(0, n, seq_len):
        x = val[:, pos:min(pos + seq_len, n)].to(device)
        y = val[:, pos + 1:min(pos + seq_len, n) + 1].to(device)
        logits, state = model(x, state)
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                 reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count / LN2


class Trainer:
    """Holds everything a run needs; ``run()`` trains until a budget is spent."""

    def __init__(self, cfg: TrainConfig, log=print) -> None:
        cfg.validate()
        self.cfg, self.log = cfg, log
        self.budget = cfg.budget()
        set_threads(cfg.threads)
        self.device = rank_device(resolve_device(cfg.device))
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        # float16's narrow range needs the loss scaled; bfloat16 has float32's
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)  # NCCL's collectives run on the current device
        self.rank, self.world = dist_setup(self.device)
        self.is_main = self.rank == 0
        self.out = Path(cfg.out)

        resume_meta = resume_tensors = None
        if cfg.resume:
            path = self.out / LAST
            resume_tensors, resume_meta = checkpoint.load(path)
            if resume_meta.get("kind") != KIND or "optimizer" not in resume_meta:
                raise UserError(f"{path} holds no training state to resume from")

        text = load_text(cfg.data)
        self.vocab = Vocab(resume_meta["vocab"]) if resume_meta else Vocab.from_text(text)
        ids = self.vocab.encode(text)
        train_ids, val_ids = split(ids, cfg.val_fraction)
        B, T = cfg.batch_size, cfg.seq_len
        per_stream = len(train_ids) // (B * self.world)
        if per_stream < T + 1:
            raise UserError(f"the corpus is too short: {len(train_ids)} training characters make "
                            f"{B * self.world} streams of {per_stream}, shorter than one chunk of "
                            f"--seq-len {T} + 1; use more text, a smaller --batch-size or --seq-len")
        self.train_streams = streams(train_ids, B * self.world)[self.rank * B:(self.rank + 1) * B]
        self.chunks_per_epoch = (self.train_streams.shape[1] - 1) // T
        self.val_streams = streams(val_ids, max(1, min(16, len(val_ids) // (T + 1))))

        torch.manual_seed(cfg.seed)
        mcfg = CharLMConfig(len(self.vocab), cfg.cell, cfg.hidden, cfg.layers, cfg.embed,
                            cfg.dropout, cfg.tie_weights, True, cfg.engine)
        self.model = CharLM(mcfg).to(self.device)
        self.opt = self.make_optimizer()
        self.step, self.elapsed, self.best = 0, 0.0, float("inf")
        self.state = None
        self.engine_used = None  # the engine of the training steps (evaluation may pick another)
        if resume_meta:
            self._restore(resume_tensors, resume_meta)
        self.net = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def make_optimizer(self) -> torch.optim.AdamW:
        """AdamW with weight decay on the weight matrices only (not embedding, biases)."""
        named = list(self.model.named_parameters())
        decay = [p for n, p in named if p.dim() >= 2 and not n.startswith("embedding")]
        other = [p for n, p in named if not (p.dim() >= 2 and not n.startswith("embedding"))]
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                  {"params": other, "weight_decay": 0.0}], lr=self.cfg.lr)

    # -- checkpoints ----------------------------------------------------------------
    def _meta(self, metrics: dict) -> dict:
        return {"kind": KIND, "model": self.model.config_dict(), "vocab": self.vocab.chars,
                "train": asdict(self.cfg), "step": self.step, "elapsed": self.elapsed,
                "best_val_bpc": self.best, "metrics": metrics,
                "engine": self.engine_used or getattr(self.model.rnn, "engine_used", None), "world": self.world}

    def save(self, name: str, metrics: dict, with_training_state: bool) -> None:
        # every rank joins the state gather; only rank 0 writes
        state = _gather_state(self.state, self.world) if with_training_state else []
        if not self.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        meta = self._meta(metrics)
        if with_training_state:
            opt_t, opt_skel = checkpoint.flatten_optimizer(self.opt.state_dict())
            tensors.update(opt_t)
            tensors["rng.torch"] = torch.get_rng_state()
            if self.device.type == "cuda":
                tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
            for i, s in enumerate(state):
                tensors[f"carry.{i}"] = s
            meta["optimizer"] = opt_skel
            if self.scaler:
                meta["scaler"] = self.scaler.state_dict()
        checkpoint.save(self.out / name, tensors, meta)

    def _restore(self, tensors: dict, meta: dict) -> None:
        saved = meta["model"]
        if saved != self.model.config_dict():
            raise UserError(f"--resume: the checkpoint's model {saved} differs from the requested "
                            f"{self.model.config_dict()}; resume with the same model flags")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.opt.load_state_dict(checkpoint.unflatten_optimizer(tensors, meta["optimizer"]))
        self.step, self.elapsed, self.best = meta["step"], meta["elapsed"], meta["best_val_bpc"]
        if self.scaler and "scaler" in meta:
            self.scaler.load_state_dict(meta["scaler"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        carry = [tensors[f"carry.{i}"] for i in range(2) if f"carry.{i}" in tensors]
        if carry and meta.get("world", 1) == self.world:
            B = self.cfg.batch_size
            carry = [c[:, self.rank * B:(self.rank + 1) * B].to(self.device) for c in carry]
            self.state = tuple(carry) if len(carry) == 2 else carry[0]

    # -- the loop -------------------------------------------------------------------
    def _budget_left(self) -> bool:
        return not self.budget.spent(self.step, self.elapsed)

    def train_step(self) -> float:
        cfg, T = self.cfg, self.cfg.seq_len
        chunk = self.step % self.chunks_per_epoch
        if chunk == 0:
            self.state = None  # a new pass over the streams starts from zeros
        pos = chunk * T
        x = self.train_streams[:, pos:pos + T].to(self.device, non_blocking=True)  # (B, T)
        y = self.train_streams[:, pos + 1:pos + T + 1].to(self.device, non_blocking=True)
        set_lr(self.opt, learning_rate(cfg, self.step, self.elapsed))
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits, state = self.net(x, self.state)  # (B, T, V)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.engine_used = getattr(self.model.rnn, "engine_used", None)
        self.opt.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        clipped_step(self.opt, self.model.parameters(), cfg.clip, self.scaler)
        self.state = _detach(state)
        self.step += 1
        return loss.item()

    def run(self) -> dict:
        """Train until a budget is spent (or Ctrl-C); returns the final metrics."""
        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        logger = _MetricsLog(self.out, cfg.tensorboard, self.log) if self.is_main else None
        bar = None
        if self.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps or None, initial=self.step, unit="step", dynamic_ncols=True,
                       file=sys.stderr, mininterval=0.5)
        tokens_per_step = cfg.batch_size * cfg.seq_len * self.world
        metrics: dict = {}
        interrupted = False
        ema_loss, ema_rate = None, None
        self.model.train()
        try:
            while self._budget_left():
                t0 = time.perf_counter()
                loss = self.train_step()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                ema_loss = loss if ema_loss is None else 0.95 * ema_loss + 0.05 * loss
                rate = tokens_per_step / dt
                ema_rate = rate if ema_rate is None else 0.9 * ema_rate + 0.1 * rate
                last = not self._budget_left()
                if bar is not None:
                    post = {"loss": f"{ema_loss:.3f}", "bpc": f"{ema_loss / LN2:.3f}",
                            "tok/s": f"{ema_rate:,.0f}"}
                    if cfg.minutes:
                        post["left"] = f"{max(0.0, cfg.minutes * 60 - self.elapsed):.0f}s"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                if self.step % cfg.eval_every == 0 or last:
                    metrics = self._evaluate_and_save(ema_loss, ema_rate, logger)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if bar is not None:
                bar.close()
        if interrupted:
            self.save(LAST, metrics, with_training_state=True)
            if self.is_main:
                self.log(f"interrupted at step {self.step}: saved {self.out / LAST}; "
                         f"continue with --resume")
            if logger:
                logger.close()
            raise KeyboardInterrupt
        if logger:
            logger.close()
            logger.plot(self.out / "learning_curve.png")
        return metrics

    def _evaluate_and_save(self, train_loss: float, rate: float, logger) -> dict:
        val_bpc = evaluate(self.model, self.val_streams, self.cfg.seq_len, self.device)
        metrics = {"step": self.step, "elapsed_s": round(self.elapsed, 2),
                   "lr": self.opt.param_groups[0]["lr"], "train_loss": train_loss,
                   "train_bpc": train_loss / LN2, "val_bpc": val_bpc, "tokens_per_s": rate}
        improved = val_bpc < self.best
        if improved:
            self.best = val_bpc
        if logger:
            logger.write(metrics)
        if improved:
            self.save(BEST, metrics, with_training_state=False)
        self.save(LAST, metrics, with_training_state=True)
        return metrics


class _MetricsLog:
    """metrics.csv always; TensorBoard too when it is installed and asked for."""

    COLUMNS = ("step", "elapsed_s", "lr", "train_loss", "train_bpc", "val_bpc", "tokens_per_s")

    def __init__(self, out: Path, tensorboard: bool, log) -> None:
        self.path = out / "metrics.csv"
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=self.COLUMNS)
        if new:
            self.csv.writeheader()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log("tensorboard is not installed: metrics go to metrics.csv only "
                    "(pip install tensorboard, or pass --no-tensorboard to silence this)")

    def write(self, m: dict) -> None:
        self.csv.writerow({k: m[k] for k in self.COLUMNS})
        self.file.flush()
        if self.tb:
            for k in ("lr", "train_bpc", "val_bpc", "tokens_per_s"):
                self.tb.add_scalar(k, m[k], m["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb:
            self.tb.close()

    def plot(self, png: Path) -> None:
        """The learning curve: train and held-out bits per character against step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return
        step = [int(r["step"]) for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        ax.plot(step, [float(r["train_bpc"]) for r in rows], label="train (running mean)")
        ax.plot(step, [float(r["val_bpc"]) for r in rows], marker="o", ms=3, label="held-out")
        ax.set_xlabel("step")
        ax.set_ylabel("bits per character")
        ax.set_title("rnnforge character language model")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        checkpoint.atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)


def config_from_args(args) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
