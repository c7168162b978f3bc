"""What every run folder shares: the overwrite guard, metrics.csv (and TensorBoard), the learning curve.

A trainer names the files that make a folder hold a run and the columns of its
metrics; these helpers do the rest the same way for every application.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path

from . import checkpoint
from .errors import OptionError, UserError
from .training import RESUME_AND_FORCE


#: the checkpoints of a run folder: the best weights so far, and the latest with the training state
BEST, LAST = "best.safetensors", "last.safetensors"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the best (else last) checkpoint of a run folder."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).exists():
                return path / name
        raise UserError(f"{path} holds no checkpoint ({BEST} or {LAST}); train into it first")
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    return path


class RunExists(UserError):
    """``out`` already holds a run and neither resume nor force was asked for."""

    def __init__(self, out: Path, files: list[str]) -> None:
        self.out, self.files = out, files
        super().__init__(f"{out} holds a run ({', '.join(files)}); resume it, or force a fresh start")


def run_files(out: Path, names) -> list[str]:
    """Those of ``names`` that exist in ``out`` (the files that make it hold a run)."""
    return [name for name in names if (Path(out) / name).exists()]


def check_out_folder(out: Path) -> None:
    """``out`` must be a folder (or not exist yet) that this process can write into."""
    if out.exists() and not out.is_dir():
        raise OptionError("out", f"{out} is a file, not a folder; give a folder for the run")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OptionError("out", f"{out}: {probe} is a file, so the folder cannot be made")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rnnforge-probe.", dir=out)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OptionError("out", f"{out}: cannot write there ({e.strerror or e})") from None


def same_data(a, b, default: str) -> bool:
    """Whether two ``data`` options name the same corpus: ``default`` (or None, '') is the
    embedded one; paths are compared resolved."""
    if a in (None, "", default) or b in (None, "", default):
        return (a in (None, "", default)) == (b in (None, "", default))
    return Path(a).resolve() == Path(b).resolve()


def resolve_config(cls, options: dict, defaults=None, *, identity: tuple, kinds: tuple,
                   default_data: str, saved_defaults: dict | None = None):
    """A run's config (a dataclass ``cls``) from the ``options`` given (None: not given).

    A fresh run takes what is not given from ``defaults``. A resumed one (``resume``)
    takes it from the run's last checkpoint in ``out``, whose ``kind`` must be one of
    ``kinds``: the model, data and budget need not be given again, and the options of
    ``identity`` given again must agree with the run (the budget may grow, and where it
    runs may change). ``saved_defaults`` fill options that checkpoints written before
    the option existed lack (what those runs were trained with, whatever today's default).
    """
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise UserError(f"unknown training options: {', '.join(unknown)}")
    given = {k: v for k, v in options.items() if v is not None}
    base = defaults or cls()
    if given.get("resume") and given.get("force"):
        raise OptionError("force", RESUME_AND_FORCE)
    if not given.get("resume"):
        return replace(base, **given)
    out = Path(given.get("out", base.out))
    path = out / LAST
    if not path.exists():
        raise UserError(f"{path} does not exist: there is no run to resume in {out}")
    meta = checkpoint.read_meta(path)
    saved = meta.get("train")
    if meta.get("kind") not in kinds or not isinstance(saved, dict):
        raise UserError(f"{path} holds no {kinds[0]} training config to resume from")
    saved = {**(saved_defaults or {}), **saved}
    try:
        cfg = replace(cls(), **{k: v for k, v in saved.items() if k in names})
        cfg.validate()
    except (OptionError, TypeError) as e:
        raise UserError(f"{path}: the saved training config is invalid ({e})") from None
    for name in identity:
        if name in given:
            new, old = given[name], getattr(cfg, name)
            if not (same_data(new, old, default_data) if name == "data" else new == old):
                raise OptionError(name, f"is {new!r}, but the run in {out} was trained with {old!r}; "
                                        f"leave it out to resume with the run's value")
    return replace(cfg, **{k: v for k, v in given.items() if k not in identity})


def resume_state(out: Path, kinds: tuple, cfg, numbers: tuple = ("step", "elapsed")):
    """``(tensors, meta)`` of the run in ``out`` to resume: its last checkpoint, which must be
    of one of ``kinds`` and hold the training state (optimizer, and the ``numbers``, each a
    number). A run whose budget (``cfg.budget()``) is spent is finished: the error names the
    budget option to raise."""
    path = out / LAST
    if not path.exists():
        raise UserError(f"{path} does not exist: there is no run to resume in {out}")
    tensors, meta = checkpoint.load(path)
    if meta.get("kind") not in kinds or "optimizer" not in meta:
        raise UserError(f"{path} holds no {kinds[0]} training state to resume from")
    for key in numbers:
        value, wanted = meta.get(key), int if key == "step" else (int, float)
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise UserError(f"{path}: the checkpoint's {key!r} is missing or not a number")
    step, elapsed = meta["step"], float(meta["elapsed"])
    if cfg.budget().spent(step, elapsed):
        option = "steps" if cfg.steps and step >= cfg.steps else "minutes"
        spent = (f"{step} of {cfg.steps} steps" if option == "steps"
                 else f"{elapsed / 60:.2f} of {cfg.minutes} minutes")
        raise OptionError(option, f"{getattr(cfg, option)}: the run in {out} is finished "
                                  f"({spent} done); give a larger value to train it further")
    return tensors, meta


def trim_metrics(path: Path, step: int, columns) -> None:
    """Drop the rows of ``path`` written after ``step`` (a kill between a row and its checkpoint:
    resume trains those steps again)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
    if len(keep) != len(rows):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(keep)
        checkpoint.atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


class MetricsLog:
    """metrics.csv always; TensorBoard too when it is installed and asked for.

    Subclasses set ``COLUMNS`` (the CSV's), ``SCALARS`` (those sent to TensorBoard),
    ``CURVES`` ((column, label) pairs of the learning curve), ``YLABEL`` and ``TITLE``.
    """

    COLUMNS: tuple = ()
    SCALARS: tuple = ()
    CURVES: tuple = ()
    YLABEL = ""
    TITLE = ""

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
                    "(pip install tensorboard, or turn tensorboard off to silence this)")

    def write(self, m: dict) -> None:
        self.csv.writerow({k: m[k] for k in self.COLUMNS})
        self.file.flush()
        if self.tb:
            for k in self.SCALARS:
                self.tb.add_scalar(k, m[k], m["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb:
            self.tb.close()

    def plot(self, png: Path) -> None:
        """The learning curve: the ``CURVES`` columns against step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return
        step = [int(r["step"]) for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for i, (column, label) in enumerate(self.CURVES):
            kw = {"marker": "o", "ms": 3} if i else {}
            ax.plot(step, [float(r[column]) for r in rows], label=label, **kw)
        ax.set_xlabel("step")
        ax.set_ylabel(self.YLABEL)
        ax.set_title(self.TITLE)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        checkpoint.atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
