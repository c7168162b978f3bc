"""Training the sequence VAE on lines, with the remedies against posterior collapse.

Each step takes ``batch_size`` lines (a fresh seeded permutation per epoch),
pads them and runs encoder and decoder with ``lengths=`` so that padding is
inert. The loss per line is ``rec + beta * KL`` (nats), divided by the batch's
characters so that the learning rate does not depend on line length. Against
posterior collapse (the decoder ignoring z and the KL going to zero), each
switchable:

* KL annealing (Bowman et al. 2016): ``beta`` rises linearly from 0 to 1 over
  ``anneal_fraction`` of the budget; ``cyclical`` (Fu et al. 2019) repeats that
  ramp in each of ``cycles`` cycles, rising over ``anneal_fraction`` of a cycle;
* free bits (Kingma et al. 2016): the KL of dimension j counts as
  ``max(free_bits, mean over the batch of KL_j)``, so the encoder is not pushed
  below ``free_bits`` bits per dimension;
* character dropout (Bowman et al.'s word dropout): the decoder's input
  characters are replaced by a mask symbol with probability ``char_dropout``,
  at training time only;
* aggressive encoder updates (He et al. 2019): during the first ``aggressive``
  fraction of the budget, ``aggressive_steps`` encoder-only updates on fresh
  batches precede each joint update.

AdamW, clipping, warm-up and cosine decay (:mod:`rnnforge.training`), the run
folder, metrics.csv and learning curve (:mod:`rnnforge.runlog`) and atomic
checkpoints, as the character model has. ``objective="lm"`` trains the plain
:class:`~rnnforge.charlm.CharLM` on the same lines with the same loop: the
yardstick of the evaluation. At the end the aggregate posterior of the
training codes is fitted and stored in both checkpoints.
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

from .. import checkpoint, runlog
from ..charlm.data import DEFAULT_CORPUS, Vocab
from ..errors import OptionError, UserError, check_float, check_int
from ..runtime import resolve_device, set_threads
from ..training import RunOptions, clipped_step, cosine_lr, set_lr, warmup_progress
from .checkpoint import BEST, CURVE, KIND, LAST, LM_KIND, METRICS, RUN_FILES, WRITTEN
from .data import MAX_CHARS, batch, encode_lines, load_lines
from .model import CELLS, SequenceVAE, VAEConfig
from .posterior import AggregatePosterior

LN2 = math.log(2.0)
ANNEAL = ("none", "linear", "cyclical")
OBJECTIVES = ("vae", "lm")


@dataclass
class VAETrainConfig(RunOptions):
    data: str | None = None
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embed: int = 64
    latent: int = 32
    bidirectional: bool = True
    max_len: int = MAX_CHARS
    engine: str = "auto"
    readout_z: bool = False
    objective: str = "vae"
    kl_anneal: str = "linear"
    anneal_fraction: float = 0.5
    cycles: int = 4
    # the variant chosen on the validation lines (docs/vae.md, Benchmark)
    free_bits: float = 0.625
    char_dropout: float = 0.0
    aggressive: float = 0.0
    aggressive_steps: int = 5
    batch_size: int = 32
    eval_lines: int = 400
    _: KW_ONLY  # the shared run options are keyword-only; so are this trainer's defaults for them
    lr: float = 2e-3
    out: str = "runs/vae"
    tensorboard: bool = False

    def validate(self) -> None:
        if self.data is not None and not isinstance(self.data, str):
            raise OptionError("data", f"must be a path or {DEFAULT_CORPUS!r}, got {self.data!r}")
        if self.cell not in CELLS:
            raise OptionError("cell", f"{self.cell!r} is unknown; choose one of {', '.join(CELLS)}")
        for name in ("hidden", "layers", "embed", "latent", "max_len", "batch_size", "eval_lines",
                     "cycles"):
            check_int(name, getattr(self, name), low=1)
        check_int("aggressive_steps", self.aggressive_steps, low=0)
        if self.objective not in OBJECTIVES:
            raise OptionError("objective", f"{self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if self.kl_anneal not in ANNEAL:
            raise OptionError("kl_anneal", f"{self.kl_anneal!r}: choose one of {', '.join(ANNEAL)}")
        check_float("anneal_fraction", self.anneal_fraction, low=0, high=1, low_open=True)
        check_float("free_bits", self.free_bits, low=0)
        check_float("char_dropout", self.char_dropout, low=0, high=1, high_open=True)
        check_float("aggressive", self.aggressive, low=0, high=1)
        self.check_run()

    def model_config(self, vocab_size: int) -> VAEConfig:
        return VAEConfig(vocab_size, self.cell, self.hidden, self.layers, self.embed, self.latent,
                         self.bidirectional, self.max_len, self.engine, readout_z=self.readout_z)


#: what makes a run what it is: given again on resume, these must agree with the checkpoint
RUN_IDENTITY = ("data", "cell", "hidden", "layers", "embed", "latent", "bidirectional", "max_len",
                "readout_z", "objective", "kl_anneal", "anneal_fraction", "cycles", "free_bits",
                "char_dropout", "aggressive", "aggressive_steps", "batch_size", "lr", "min_lr_ratio", "warmup",
                "weight_decay", "clip", "seed")


def resolve_config(options: dict, defaults: VAETrainConfig | None = None) -> VAETrainConfig:
    """The run's config from the ``options`` given (None: not given); with ``resume`` the rest
    comes from the run's last checkpoint, and what is given again must agree with it."""
    # a run saved before the readout could see z was trained without it, whatever today's default
    return runlog.resolve_config(VAETrainConfig, options, defaults, identity=RUN_IDENTITY,
                                 kinds=(KIND, LM_KIND), default_data=DEFAULT_CORPUS,
                                 saved_defaults={"readout_z": False})


def kl_weight(cfg: VAETrainConfig, progress: float) -> float:
    """beta at ``progress`` (the budget's fraction spent) for the configured annealing."""
    if cfg.objective == "lm" or cfg.kl_anneal == "none":
        return 1.0
    if cfg.kl_anneal == "linear":
        return min(1.0, progress / cfg.anneal_fraction)
    tau = (progress * cfg.cycles) % 1.0 if progress < 1 else 1.0  # position in the current cycle
    return min(1.0, tau / cfg.anneal_fraction)


def lm_nll(model, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """-log p(x) per line (nats) under a CharLM read as ``[\\n, x] -> [x, \\n]``. The model is causal,
    so what follows a line's end in its padded row never reaches its scores."""
    inp = F.pad(ids, (1, 0), value=0)
    logits, _ = model(inp)
    pos = torch.arange(inp.shape[1], device=ids.device)
    targets = F.pad(ids, (0, 1), value=0).masked_fill(pos == lengths.unsqueeze(1), 0)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    return (nll * (pos <= lengths.unsqueeze(1))).sum(1)


@dataclass
class TrainResult:
    out: Path
    step: int
    elapsed: float
    best: float
    metrics: dict


def train(cfg: VAETrainConfig, log=print) -> TrainResult:
    """Train until the budget is spent; checkpoints, metrics.csv and the learning curve go to
    ``cfg.out``, the fitted aggregate posterior into the checkpoints. RunExists when ``out``
    holds a run and neither ``resume`` nor ``force`` is set."""
    t = Trainer(cfg, log)
    metrics = t.run()
    if cfg.objective == "vae":
        t.attach_posteriors()
    return TrainResult(t.out, t.step, t.elapsed, t.best, metrics)


class _MetricsLog(runlog.MetricsLog):
    COLUMNS = ("step", "elapsed_s", "lr", "beta", "train_loss", "val_nelbo_bpc", "val_rec_bpc",
               "val_kl_bits", "active_units", "lines_per_s")
    SCALARS = ("lr", "beta", "train_loss", "val_nelbo_bpc", "val_kl_bits", "active_units")
    CURVES = (("train_loss", "train objective (running mean)"), ("val_nelbo_bpc", "held-out -ELBO"),
              ("val_rec_bpc", "held-out reconstruction"))
    YLABEL = "bits per character"
    TITLE = "rnnforge sequence VAE"


@torch.no_grad()
def heldout(model, encoded: list[torch.Tensor], device, objective: str = "vae", batch_size: int = 64,
            generator: torch.Generator | None = None) -> dict:
    """-ELBO and its parts on ``encoded`` lines (one draw per line), in bits; active units."""
    was = model.training
    model.eval()
    rec = kl = chars = 0.0
    mus = []
    for i in range(0, len(encoded), batch_size):
        ids, lengths = batch(encoded[i:i + batch_size])
        ids, lengths = ids.to(device), lengths.to(device)
        chars += float((lengths + 1).sum())
        if objective == "lm":
            rec += float(lm_nll(model, ids, lengths).sum())
            continue
        o = model(ids, lengths, generator=generator)
        rec += float(o["rec"].sum())
        kl += float(o["kl"].sum())
        mus.append(o["mu"].float().cpu())
    model.train(was)
    n = len(encoded)
    active = int((torch.cat(mus).var(0) > 0.01).sum()) if mus and n > 1 else 0
    return {"nelbo_bpc": (rec + kl) / chars / LN2, "rec_bpc": rec / chars / LN2,
            "kl_bits": kl / n / LN2, "active_units": active}


class Trainer:
    def __init__(self, cfg: VAETrainConfig, log=print) -> None:
        cfg.validate()
        self.cfg, self.log = cfg, log
        self.budget = cfg.budget()
        set_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.out)
        runlog.check_out_folder(self.out)
        kind = KIND if cfg.objective == "vae" else LM_KIND
        self.kind = kind
        meta = tensors = None
        existing = runlog.run_files(self.out, RUN_FILES)
        if cfg.resume:
            tensors, meta = runlog.resume_state(self.out, (kind,), cfg)
        elif existing and not cfg.force:
            raise runlog.RunExists(self.out, existing)
        checkpoint.remove_temporaries(self.out, WRITTEN)
        if cfg.force and existing:
            gone = existing + [n for n in (CURVE, "tensorboard") if (self.out / n).exists()]
            log(f"starting over in {self.out}: removing {', '.join(gone)}")
            for name in gone:
                p = self.out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if meta:
            runlog.trim_metrics(self.out / METRICS, meta["step"], _MetricsLog.COLUMNS)

        lines = load_lines(cfg.data, cfg.max_len)
        self.vocab = Vocab(meta["vocab"]) if meta else lines.vocab()
        self.train_lines = lines.train
        self.train_enc = encode_lines(self.vocab, lines.train)
        self.val_enc = encode_lines(self.vocab, lines.val[:cfg.eval_lines])
        if len(self.train_enc) < cfg.batch_size:
            raise UserError(f"the data has {len(self.train_enc)} training lines, fewer than one batch "
                            f"of {cfg.batch_size}; use more lines or a smaller batch size")
        self.batches_per_epoch = len(self.train_enc) // cfg.batch_size

        torch.manual_seed(cfg.seed)
        if cfg.objective == "vae":
            self.model = SequenceVAE(cfg.model_config(len(self.vocab))).to(self.device)
        else:
            from ..charlm.model import CharLM, CharLMConfig

            self.model = CharLM(CharLMConfig(len(self.vocab), cfg.cell, cfg.hidden, cfg.layers, cfg.embed,
                                             engine=cfg.engine)).to(self.device)
        named = list(self.model.named_parameters())
        decay = [p for n, p in named if p.dim() >= 2 and not n.startswith("embedding")]
        other = [p for n, p in named if not (p.dim() >= 2 and not n.startswith("embedding"))]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": other, "weight_decay": 0.0}], lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # draws of u, dropout masks, extra batches
        self.step, self.elapsed, self.best, self.ema = 0, 0.0, float("inf"), None
        if meta:
            self._restore(tensors, meta)

    # -- checkpoints ----------------------------------------------------------------
    def _meta(self, metrics: dict) -> dict:
        train = asdict(self.cfg)
        if train["data"] not in (None, "", DEFAULT_CORPUS):
            train["data"] = str(Path(train["data"]).resolve())
        train["resume"] = train["force"] = False
        return {"kind": self.kind, "model": self.model.config_dict(), "vocab": self.vocab.chars,
                "train": train, "step": self.step, "elapsed": self.elapsed, "best": self.best,
                "metrics": metrics, "train_loss_ema": self.ema}

    def save(self, name: str, metrics: dict, with_state: bool) -> None:
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise OptionError("lr", f"{self.cfg.lr:g} is likely too high: training diverged by step "
                                    f"{self.step}; the last good checkpoint is kept")
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        meta = self._meta(metrics)
        if with_state:
            opt_t, skel = checkpoint.flatten_optimizer(self.opt.state_dict())
            tensors.update(opt_t)
            tensors["rng.torch"] = torch.get_rng_state()
            tensors["rng.vae"] = self.gen.get_state()
            meta["optimizer"] = skel
        checkpoint.save(self.out / name, tensors, meta)

    def _restore(self, tensors: dict, meta: dict) -> None:
        path = self.out / LAST
        try:
            self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            self.opt.load_state_dict(checkpoint.unflatten_optimizer(tensors, meta["optimizer"]))
            torch.set_rng_state(tensors["rng.torch"])
            self.gen.set_state(tensors["rng.vae"])
            self.step, self.elapsed, self.best = int(meta["step"]), float(meta["elapsed"]), float(meta["best"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"{path}: the training state cannot be restored "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r})") from None
        ema = meta.get("train_loss_ema")
        self.ema = float(ema) if isinstance(ema, (int, float)) else None

    # -- the loop -------------------------------------------------------------------
    def progress(self) -> float:
        return self.budget.progress(self.step, self.elapsed)

    def _batch(self, rows=None):
        if rows is None:
            B, epoch, k = self.cfg.batch_size, *divmod(self.step, self.batches_per_epoch)
            perm = torch.randperm(len(self.train_enc), generator=torch.Generator().manual_seed(
                self.cfg.seed * 7919 + epoch))
            rows = perm[k * B:(k + 1) * B].tolist()
        ids, lengths = batch([self.train_enc[i] for i in rows])
        return ids.to(self.device), lengths.to(self.device)

    def objective(self, ids, lengths, beta: float) -> tuple[torch.Tensor, float]:
        """(loss per character to minimise, the same with beta = 1 in bits per character)."""
        chars = float((lengths + 1).sum())
        if self.cfg.objective == "lm":
            loss = lm_nll(self.model, ids, lengths).sum() / chars
            return loss, loss.item() / LN2
        o = self.model(ids, lengths, generator=self.gen, char_dropout=self.cfg.char_dropout)
        B = ids.shape[0]
        kl = o["kl"]  # (B, d) nats
        if self.cfg.free_bits > 0:
            kl_term = torch.clamp(kl.mean(0), min=self.cfg.free_bits * LN2).sum() * B
        else:
            kl_term = kl.sum()
        loss = (o["rec"].sum() + beta * kl_term) / chars
        return loss, (o["rec"].sum() + kl.sum()).item() / chars / LN2

    def train_step(self) -> float:
        cfg = self.cfg
        set_lr(self.opt, cosine_lr(cfg.lr, self.step, warmup_progress(self.budget, self.step, self.elapsed,
                                                                      cfg.warmup),
                                   warmup=cfg.warmup, min_ratio=cfg.min_lr_ratio))
        beta = kl_weight(cfg, self.progress())
        if cfg.objective == "vae" and cfg.aggressive > 0 and self.progress() < cfg.aggressive:
            enc = {id(p) for m in (self.model.encoder, self.model.to_mu, self.model.to_logvar)
                   for p in m.parameters()}
            for _ in range(cfg.aggressive_steps):
                rows = torch.randint(len(self.train_enc), (cfg.batch_size,), generator=self.gen).tolist()
                loss, _ = self.objective(*self._batch(rows), beta)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                for p in self.model.parameters():  # the decoder and the shared embedding stay put
                    if id(p) not in enc:
                        p.grad = None
                clipped_step(self.opt, self.model.parameters(), cfg.clip)
        loss, value = self.objective(*self._batch(), beta)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clipped_step(self.opt, self.model.parameters(), cfg.clip)
        if not math.isfinite(value):
            raise OptionError("lr", f"{cfg.lr:g} is likely too high: training diverged at step "
                                    f"{self.step + 1} (the loss became {value})")
        self.step += 1
        return value

    def run(self) -> dict:
        cfg = self.cfg
        logger = _MetricsLog(self.out, cfg.tensorboard, self.log)
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps or None, initial=self.step, unit="step", dynamic_ncols=True,
                       file=sys.stderr, mininterval=0.5)
        metrics, rate = {}, None
        self.model.train()
        try:
            while not self.budget.spent(self.step, self.elapsed):
                t0 = time.perf_counter()
                value = self.train_step()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                self.ema = value if self.ema is None else 0.95 * self.ema + 0.05 * value
                rate = cfg.batch_size / dt if rate is None else 0.9 * rate + 0.1 * cfg.batch_size / dt
                if bar is not None:
                    bar.set_postfix({"-elbo bpc": f"{self.ema:.3f}"}, refresh=False)
                    bar.update(1)
                last = self.budget.spent(self.step, self.elapsed)
                if self.step % cfg.eval_every == 0 or last:
                    metrics = self._evaluate_and_save(rate, logger, bar)
        except KeyboardInterrupt:
            logger.close()
            self.save(LAST, metrics, True)
            self.log(f"interrupted at step {self.step}: saved {self.out / LAST}; resume to continue")
            raise
        finally:
            if bar is not None:
                bar.close()
        logger.close()
        logger.plot(self.out / CURVE)
        return metrics

    def _evaluate_and_save(self, rate: float, logger, bar) -> dict:
        # a generator of its own: evaluating must not move the training's random stream
        h = heldout(self.model, self.val_enc, self.device, self.cfg.objective,
                    generator=torch.Generator().manual_seed(self.step))
        metrics = {"step": self.step, "elapsed_s": round(self.elapsed, 2), "lr": self.opt.param_groups[0]["lr"],
                   "beta": kl_weight(self.cfg, self.progress()), "train_loss": self.ema,
                   "val_nelbo_bpc": h["nelbo_bpc"], "val_rec_bpc": h["rec_bpc"], "val_kl_bits": h["kl_bits"],
                   "active_units": h["active_units"], "lines_per_s": rate}
        if not math.isfinite(h["nelbo_bpc"]):
            raise OptionError("lr", f"{self.cfg.lr:g} is likely too high: the held-out loss became "
                                    f"{h['nelbo_bpc']} at step {self.step}")
        improved = h["nelbo_bpc"] < self.best
        if improved:
            self.best = h["nelbo_bpc"]
        logger.write(metrics)
        if improved:
            self.save(BEST, metrics, False)
        self.save(LAST, metrics, True)
        of = f"/{self.cfg.steps}" if self.cfg.steps else ""
        if self.cfg.objective == "lm":
            line = (f"step {self.step}{of}: train {self.ema:.3f} bpc, held-out {h['nelbo_bpc']:.3f} bpc, "
                    f"best {self.best:.3f}")
        else:
            line = (f"step {self.step}{of}: beta {metrics['beta']:.2f}, train -ELBO {self.ema:.3f} bpc, "
                    f"held-out -ELBO {h['nelbo_bpc']:.3f} bpc (reconstruction {h['rec_bpc']:.3f}, "
                    f"KL {h['kl_bits']:.1f} bits/line, {h['active_units']}/{self.cfg.latent} active), "
                    f"best {self.best:.3f}")
        with bar.external_write_mode() if bar is not None else nullcontext():
            self.log(line)
        return metrics

    def attach_posteriors(self) -> None:
        """Fit the aggregate posterior with each checkpoint's weights and store it in that file."""
        from .checkpoint import load_vae, store_posterior

        for name in (BEST, LAST):
            path = self.out / name
            if path.exists():
                model = load_vae(path, self.device)[0]
                post = fit_posterior(model, self.train_enc, self.device, seed=self.cfg.seed)
                store_posterior(path, post)


@torch.no_grad()
def codes(model: SequenceVAE, encoded: list[torch.Tensor], device, *, generator=None,
          batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z ~ q(z|x), mu, logvar) for each line, float64 (n, d) on the CPU."""
    from .model import reparameterize, uniforms

    model.eval()
    zs, mus, lvs = [], [], []
    for i in range(0, len(encoded), batch_size):
        ids, lengths = batch(encoded[i:i + batch_size])
        mu, logvar = model.encode(ids.to(device), lengths.to(device))
        mu, logvar = mu.double().cpu(), logvar.double().cpu()
        zs.append(reparameterize(mu, logvar, uniforms(mu.shape, generator=generator)))
        mus.append(mu)
        lvs.append(logvar)
    return torch.cat(zs), torch.cat(mus), torch.cat(lvs)


def fit_posterior(model: SequenceVAE, encoded: list[torch.Tensor], device, *, seed: int = 0,
                  max_points: int | None = None, with_codes: bool = False):
    """The aggregate posterior of ``encoded`` lines' codes, one draw of q(z|x) per line; with
    ``with_codes``, (the fit, those codes (n, d))."""
    from .posterior import MAX_POINTS

    g = torch.Generator().manual_seed(seed)
    z = codes(model, encoded, device, generator=g)[0]
    post = AggregatePosterior.fit(z, generator=g, max_points=max_points or MAX_POINTS)
    return (post, z) if with_codes else post
