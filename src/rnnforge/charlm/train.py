"""Training the character language model: truncated BPTT over contiguous streams.

The training text is cut into ``B`` contiguous streams (``B * world`` under
DDP, each rank taking its own ``B``); each step takes the next ``T`` characters
of every stream and carries the recurrent state over from the previous chunk
(detached: truncated backpropagation through time). AdamW, gradient clipping,
linear warm-up then cosine decay, periodic held-out bits per character, the
best checkpoint kept, and ``resume`` restoring model, optimizer, schedule,
carried state, RNG and step exactly.

The library calls: :func:`train` (a config in, a :class:`TrainResult` out),
:func:`resolve_config` (a run's config from the options given, or from the
run being resumed) and :func:`evaluate` (a checkpoint's bits per character on
a text). A folder that holds a run is never trained into silently: it is
resumed, or started over with ``force``, which says what it removes.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import KW_ONLY, asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import checkpoint, engines, runlog
from .checkpoint import BEST, CURVE, KIND, LAST, METRICS, RUN_FILES, WRITTEN, model_config, model_weights
from .data import DEFAULT_CORPUS, Vocab, load_text, split, streams, warn_stderr
from ..errors import OptionError, UserError, check_float, check_int
from ..runlog import RunExists, check_out_folder
from ..runtime import AMP, amp_dtype, dist_setup, rank_device, resolve_device, set_threads
from ..training import RunOptions, clipped_step, cosine_lr, set_lr, warmup_progress
from .generate import MAX_SEED
from .model import CELLS, CharLM, CharLMConfig, check_fits

LN2 = math.log(2.0)


@dataclass
class TrainConfig(RunOptions):
    data: str | None = None
    glob: str = "*"
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 2
    embed: int = 0
    dropout: float = 0.0
    tie_weights: bool = False
    engine: str = "auto"
    batch_size: int = 32
    seq_len: int = 128
    val_fraction: float = 0.05
    amp: str = "auto"
    _: KW_ONLY  # the shared run options are keyword-only; so is this trainer's default for one
    out: str = "runs/charlm"

    MAX_SEED = MAX_SEED  # generate's: torch's generators take any unsigned 64-bit seed

    def validate(self) -> None:
        """Every option checked, each error naming its option; the model's own ones by CharLMConfig."""
        if self.data is not None and not isinstance(self.data, str):
            raise OptionError("data", f"must be a path or {DEFAULT_CORPUS!r}, got {self.data!r}")
        if not isinstance(self.glob, str) or not self.glob:
            raise OptionError("glob", f"must be a file name pattern such as '*.txt', got {self.glob!r}")
        if self.cell not in CELLS:
            raise OptionError("cell", f"{self.cell!r} is unknown; choose one of {', '.join(CELLS)}")
        check_int("hidden", self.hidden, low=1)
        check_int("layers", self.layers, low=1)
        check_int("embed", self.embed, low=0)
        check_float("dropout", self.dropout, low=0, high=1, high_open=True)
        for name in ("batch_size", "seq_len"):
            check_int(name, getattr(self, name), low=1)
        check_float("val_fraction", self.val_fraction, low=0, high=0.5, low_open=True, high_open=True)
        if self.amp not in AMP:
            raise OptionError("amp", f"{self.amp!r}: choose one of {', '.join(AMP)}")
        self.check_run()


#: what makes a run what it is: given again on resume, these must agree with the checkpoint
RUN_IDENTITY = ("data", "glob", "val_fraction", "cell", "hidden", "layers", "embed", "dropout",
                "tie_weights", "batch_size", "seq_len", "lr", "min_lr_ratio", "warmup",
                "weight_decay", "clip", "seed")


def run_files(out: Path) -> list[str]:
    """The files that make ``out`` hold a run."""
    return runlog.run_files(out, RUN_FILES)


def resolve_config(options: dict, defaults: TrainConfig | None = None) -> TrainConfig:
    """A run's config from the ``options`` given (fields of TrainConfig; None means not given).

    A fresh run takes what is not given from ``defaults``. A resumed one
    (``resume=True``) takes it from the run's last checkpoint in ``out``: the
    model, data and budget need not be given again, and any given again must
    agree with the run (the budget may grow, and where it runs may change).
    """
    return runlog.resolve_config(TrainConfig, options, defaults, identity=RUN_IDENTITY, kinds=(KIND,),
                                 default_data=DEFAULT_CORPUS)


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
def bits_per_char(model: CharLM, val: torch.Tensor, seq_len: int, device) -> float:
    """Bits per character on streams ``val`` (S, L), the state carried across chunks of each stream."""
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


def evaluate(checkpoint_path: str | Path, text: str, *, seq_len: int = 128, streams_: int = 1,
             device: str | torch.device = "cpu") -> float:
    """Bits per character of the model in ``checkpoint_path`` (file or run folder) on ``text``.

    The text is read as ``streams_`` contiguous streams, chunk by chunk of
    ``seq_len`` characters with the state carried, as held-out text is in training.
    """
    from .checkpoint import load_model

    check_int("seq_len", seq_len, low=1)
    check_int("streams_", streams_, low=1)
    model, vocab, _ = load_model(checkpoint_path, resolve_device(str(device)))
    ids = vocab.encode(text)
    if len(ids) < 2 * streams_:
        raise UserError(f"the text has {len(ids)} characters; at least {2 * streams_} are needed "
                        f"({streams_} streams of a character and the next)")
    return bits_per_char(model, streams(ids, streams_), seq_len, next(model.parameters()).device)


@dataclass
class TrainResult:
    """What a finished run reports (``main`` is False on the other ranks under torchrun)."""

    out: Path
    step: int
    elapsed: float
    best_val_bpc: float
    metrics: dict
    engine: str | None
    main: bool = True


def train(cfg: TrainConfig, log=print) -> TrainResult:
    """Train until the budget is spent; checkpoints, metrics.csv and the learning curve go to ``cfg.out``.

    ``log`` receives one line per evaluation and the run's notices (rank 0 only).
    Raises RunExists when ``out`` holds a run and neither ``resume`` nor ``force``
    is set, OptionError naming the option for a bad value (``lr`` when training
    diverges), and KeyboardInterrupt after saving the state on Ctrl-C.
    """
    from ..runtime import leave_process_group

    trainer = Trainer(cfg, log=log)
    metrics = trainer.run()
    result = TrainResult(trainer.out, trainer.step, trainer.elapsed, trainer.best, metrics,
                         trainer.engine_used, trainer.is_main)
    world = trainer.world
    del trainer  # and with it the DDP wrapper, which holds the process group
    if world > 1:
        leave_process_group()
    return result


class Trainer:
    """Holds everything a run needs; ``run()`` trains until a budget is spent."""

    def __init__(self, cfg: TrainConfig, log=print) -> None:
        cfg.validate()
        self.cfg = cfg
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
        self.log = log if self.is_main else (lambda *a: None)
        self.warn = warn_stderr if self.is_main else (lambda *a: None)
        self.out = Path(cfg.out)
        check_out_folder(self.out)

        resume_meta = resume_tensors = None
        existing = run_files(self.out)
        if cfg.resume:
            resume_tensors, resume_meta = runlog.resume_state(
                self.out, (KIND,), cfg, numbers=("step", "elapsed", "best_val_bpc"))
        elif existing and not cfg.force:
            raise RunExists(self.out, existing)
        if self.world > 1:  # every rank has checked the folder before rank 0 changes it
            import torch.distributed as dist

            dist.barrier()
        if self.is_main:
            self._prepare_out(existing, resume_meta["step"] if resume_meta else None)

        text = load_text(cfg.data, cfg.glob, warn=self.warn)
        self.vocab = Vocab(resume_meta["vocab"]) if resume_meta else Vocab.from_text(text)
        ids = self.vocab.encode(text)
        train_ids, val_ids = split(ids, cfg.val_fraction)
        B, T = cfg.batch_size, cfg.seq_len
        per_stream = len(train_ids) // (B * self.world)
        if per_stream < T + 1:
            raise UserError(f"the corpus is too short: {len(train_ids)} training characters make "
                            f"{B * self.world} streams of {per_stream}, shorter than one chunk of "
                            f"{T} + 1 characters; use more text, or a smaller batch size or "
                            f"sequence length")
        self.train_streams = streams(train_ids, B * self.world)[self.rank * B:(self.rank + 1) * B]
        self.chunks_per_epoch = (self.train_streams.shape[1] - 1) // T
        self.val_streams = streams(val_ids, max(1, min(16, len(val_ids) // (T + 1))))

        torch.manual_seed(cfg.seed)
        mcfg = CharLMConfig(len(self.vocab), cfg.cell, cfg.hidden, cfg.layers, cfg.embed,
                            cfg.dropout, cfg.tie_weights, True, cfg.engine)
        check_fits(mcfg, self.device)
        self.model = CharLM(mcfg).to(self.device)
        self._check_engine()
        if resume_meta and cfg.engine == "auto" and resume_meta.get("engine") in engines.ENGINES:
            # the engine the run trained with (auto's choice may differ on this machine or day):
            # a resumed run repeats the uninterrupted one
            engines.pin(self.model.rnn, resume_meta["engine"])
        self.opt = self.make_optimizer()
        self.step, self.elapsed, self.best = 0, 0.0, float("inf")
        self.ema_loss = None  # the running mean of the training loss that evaluations report
        self.saved_step = None  # the step of the last checkpoint written (divergence keeps it)
        self.state = None
        self.bar = None  # the progress bar while run() runs
        self.engine_used = None  # the engine of the training steps (evaluation may pick another)
        if resume_meta:
            self._restore(resume_tensors, resume_meta)
        self.net = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _prepare_out(self, existing: list[str], resume_step: int | None) -> None:
        """Clear what a killed run left, start over when forced, and trim metrics.csv to the checkpoint."""
        checkpoint.remove_temporaries(self.out, WRITTEN)
        if self.cfg.force and existing:
            gone = existing + [n for n in (CURVE, "tensorboard") if (self.out / n).exists()]
            self.log(f"starting over in {self.out}: removing {', '.join(gone)}")
            for name in gone:
                p = self.out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if resume_step is not None:
            runlog.trim_metrics(self.out / METRICS, resume_step, _MetricsLog.COLUMNS)

    def _check_engine(self) -> None:
        """A named engine that cannot train this cell is an error now, not at the first step."""
        from ..engines import ENGINES

        name = self.cfg.engine
        if name == "auto":
            return
        x = torch.zeros(self.cfg.batch_size, self.cfg.seq_len, self.model.config.embed,
                        device=self.device, requires_grad=True)
        reason = ENGINES[name].why_not(self.model.rnn, x, None)
        if reason is not None:
            raise OptionError("engine", f"{name} cannot train the {self.cfg.cell} cell here: {reason}")

    def make_optimizer(self) -> torch.optim.AdamW:
        """AdamW with weight decay on the weight matrices only (not embedding, biases)."""
        named = list(self.model.named_parameters())
        decay = [p for n, p in named if p.dim() >= 2 and not n.startswith("embedding")]
        other = [p for n, p in named if not (p.dim() >= 2 and not n.startswith("embedding"))]
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                  {"params": other, "weight_decay": 0.0}], lr=self.cfg.lr)

    # -- checkpoints ----------------------------------------------------------------
    def _meta(self, metrics: dict) -> dict:
        train = asdict(self.cfg)
        if train["data"] not in (None, "", DEFAULT_CORPUS):
            train["data"] = str(Path(train["data"]).resolve())  # resumable from any folder
        return {"kind": KIND, "model": self.model.config_dict(), "vocab": self.vocab.chars,
                "train": train, "step": self.step, "elapsed": self.elapsed,
                "best_val_bpc": self.best, "metrics": metrics, "train_loss_ema": self.ema_loss,
                "engine": self.engine_used or getattr(self.model.rnn, "engine_used", None), "world": self.world}

    def save(self, name: str, metrics: dict, with_training_state: bool) -> None:
        # every rank joins the state gather; only rank 0 writes
        state = _gather_state(self.state, self.world) if with_training_state else []
        if not self.is_main:
            return
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise self._diverged(float("nan"), self.step)  # never write NaN weights over good ones
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
        if name == LAST:
            self.saved_step = self.step

    def _restore(self, tensors: dict, meta: dict) -> None:
        path = self.out / LAST
        saved = model_config(path, meta)
        if saved != self.model.config:
            diff = [f"{k} {getattr(saved, k)!r} (requested {getattr(self.model.config, k)!r})"
                    for k in ("cell", "hidden", "layers", "embed", "dropout", "tie_weights", "vocab_size")
                    if getattr(saved, k) != getattr(self.model.config, k)]
            raise UserError(f"{path}: the checkpoint's model differs from the requested one: "
                            f"{', '.join(diff) or saved}; resume with the run's model options")
        self.model.load_state_dict(model_weights(path, saved, tensors))
        try:
            self.opt.load_state_dict(checkpoint.unflatten_optimizer(tensors, meta["optimizer"]))
            rng = tensors["rng.torch"]
            if self.scaler and "scaler" in meta:
                self.scaler.load_state_dict(meta["scaler"])
            torch.set_rng_state(rng)
            if "rng.cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        except KeyError as e:
            raise UserError(f"{path}: the training state cannot be restored ({e.args[0]!r} is missing)") from None
        except (TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise UserError(f"{path}: the training state cannot be restored "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r})") from None
        self.step, self.elapsed, self.best = meta["step"], float(meta["elapsed"]), float(meta["best_val_bpc"])
        self.saved_step = self.step
        ema = meta.get("train_loss_ema")
        self.ema_loss = float(ema) if isinstance(ema, (int, float)) and math.isfinite(ema) else None
        carry = [tensors[f"carry.{i}"] for i in range(2) if f"carry.{i}" in tensors]
        if carry and meta.get("world", 1) == self.world:
            B = self.cfg.batch_size
            carry = [c[:, self.rank * B:(self.rank + 1) * B].to(self.device) for c in carry]
            self.state = tuple(carry) if len(carry) == 2 else carry[0]

    def _diverged(self, loss: float, step: int) -> OptionError:
        kept = (f"the last good checkpoint, {self.out / LAST} at step {self.saved_step}, is kept"
                if self.saved_step is not None else "no checkpoint was written")
        return OptionError("lr", f"{self.cfg.lr:g} is likely too high: training diverged at step "
                                 f"{step} (the loss became {loss}) and stopped; {kept}")

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
        # a non-finite loss gives non-finite gradients, and clipped_step skips such a step
        clipped_step(self.opt, self.model.parameters(), cfg.clip, self.scaler)
        value = loss.item()
        if not math.isfinite(value):
            raise self._diverged(value, self.step + 1)
        self.state = _detach(state)
        self.step += 1
        return value

    def run(self) -> dict:
        """Train until a budget is spent (or Ctrl-C); returns the final metrics."""
        cfg = self.cfg
        logger = _MetricsLog(self.out, cfg.tensorboard, self.warn) if self.is_main else None
        self.bar = None
        if self.is_main and cfg.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.steps or None, initial=self.step, unit="step", dynamic_ncols=True,
                            file=sys.stderr, mininterval=0.5)
        tokens_per_step = cfg.batch_size * cfg.seq_len * self.world
        metrics: dict = {}
        ema_rate = None
        self.model.train()
        try:
            while self._budget_left():
                t0 = time.perf_counter()
                loss = self.train_step()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                self.ema_loss = loss if self.ema_loss is None else 0.95 * self.ema_loss + 0.05 * loss
                rate = tokens_per_step / dt
                ema_rate = rate if ema_rate is None else 0.9 * ema_rate + 0.1 * rate
                last = not self._budget_left()
                if self.bar is not None:
                    post = {"loss": f"{self.ema_loss:.3f}", "bpc": f"{self.ema_loss / LN2:.3f}",
                            "tok/s": f"{ema_rate:,.0f}"}
                    if cfg.minutes:
                        post["left"] = f"{max(0.0, cfg.minutes * 60 - self.elapsed):.0f}s"
                    self.bar.set_postfix(post, refresh=False)
                    self.bar.update(1)
                if self.step % cfg.eval_every == 0 or last:
                    metrics = self._evaluate_and_save(self.ema_loss, ema_rate, logger)
        except KeyboardInterrupt:
            self._close(logger)
            self.save(LAST, metrics, with_training_state=True)
            self.log(f"interrupted at step {self.step}: saved {self.out / LAST}; resume to continue")
            if logger:
                logger.plot(self.out / CURVE)
            raise
        except BaseException:
            self._close(logger)
            raise
        self._close(logger)
        if logger:
            logger.plot(self.out / CURVE)
        return metrics

    def _close(self, logger) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if logger:
            logger.close()

    def _evaluate_and_save(self, train_loss: float, rate: float, logger) -> dict:
        val_bpc = bits_per_char(self.model, self.val_streams, self.cfg.seq_len, self.device)
        if not math.isfinite(val_bpc):
            raise self._diverged(val_bpc * LN2, self.step)
        metrics = {"step": self.step, "elapsed_s": round(self.elapsed, 2),
                   "lr": self.opt.param_groups[0]["lr"], "train_loss": train_loss,
                   "train_bpc": train_loss / LN2, "val_bpc": val_bpc, "tokens_per_s": rate}
        improved = val_bpc < self.best
        if improved:
            self.best = val_bpc
        if logger:  # before the checkpoint: a kill between the two leaves a row that resume drops
            logger.write(metrics)
        if improved:
            self.save(BEST, metrics, with_training_state=False)
        self.save(LAST, metrics, with_training_state=True)
        of = f"/{self.cfg.steps}" if self.cfg.steps else ""
        line = (f"step {self.step}{of}: train loss {train_loss:.4f} ({train_loss / LN2:.3f} bpc), "
                f"held-out {val_bpc:.3f} bpc, best {self.best:.3f}")
        with self.bar.external_write_mode() if self.bar is not None else nullcontext():
            self.log(line)
        return metrics


class _MetricsLog(runlog.MetricsLog):
    COLUMNS = ("step", "elapsed_s", "lr", "train_loss", "train_bpc", "val_bpc", "tokens_per_s")
    SCALARS = ("lr", "train_bpc", "val_bpc", "tokens_per_s")
    CURVES = (("train_bpc", "train (running mean)"), ("val_bpc", "held-out"))
    YLABEL = "bits per character"
    TITLE = "rnnforge character language model"
