"""Regenerate the CPU tables of BENCHMARKS.md: run each benchmark in turn and keep its output.

    python benchmarks/run_all.py --list            # the parts, their commands and expected times
    python benchmarks/run_all.py                   # every default part (about 40 min)
    python benchmarks/run_all.py --quick           # the same with tiny sizes: a smoke run (about 6 min)
    python benchmarks/run_all.py --only engines sampling
    python benchmarks/run_all.py --all             # also the memory experiment (about 40 min more)

Each part runs its commands with this interpreter, from the repository root, and writes
their output (stdout and stderr) to OUT/PART.txt; OUT/index.md lists every command with its
exit code and time. Training runs a part makes go to OUT/work/PART/, which is emptied before
the part starts, so a rerun starts clean. The expected times are those of the 2-core machine
of BENCHMARKS.md at low load; a busy machine takes longer and gives noisier ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = "python"  # stands for sys.executable in the listed commands
RF = (PY, "-m", "rnnforge")
WORK = "{work}"  # replaced by the part's work folder


@dataclass
class Part:
    name: str
    what: str  # the BENCHMARKS.md table(s) it regenerates
    minutes: float  # expected time of the full part
    quick_minutes: float
    commands: list[tuple[str, ...]]
    quick: list[tuple[str, ...]]
    env: dict[str, str] = field(default_factory=dict)
    default: bool = True


def _engines(*args: str) -> tuple[str, ...]:
    return (PY, "benchmarks/bench_engines.py", *args)


def _charlm(*args: str) -> tuple[str, ...]:
    return (PY, "benchmarks/bench_charlm.py", *args)


def _sampling(*args: str) -> tuple[str, ...]:
    return (PY, "benchmarks/bench_sampling.py", *args)


def _forecast(*args: str) -> tuple[str, ...]:
    return (PY, "benchmarks/bench_forecast.py", *args)


TINY_SHAPES = ("--shapes", "32x4x16x32", "50x1x16x16")
QUICK_FORECAST = ("--steps", "20", "--ensemble", "1", "--windows", "2", "--samples", "100",
                  "--baselines", "seasonal-naive")

PARTS = [
    Part("engines", "Engines against torch.nn, CPU (1 and 2 threads)", 3, 0.5,
         [_engines("--parts", "table", "--threads", str(n), "--repeats", "7") for n in (1, 2)],
         [_engines("--parts", "table", "--threads", "1", "--repeats", "1", *TINY_SHAPES)]),
    Part("engines-torch-loops", "What engine=\"auto\" picks: fused with its C loops off", 2, 0.3,
         [_engines("--parts", "table", "--threads", "1", "--clock", "cpu", "--repeats", "9",
                   "--engines", "native", "fused")],
         [_engines("--parts", "table", "--threads", "1", "--repeats", "1", "--engines", "fused", *TINY_SHAPES)],
         env={"RNNFORGE_NO_CKERNELS": "1"}),
    Part("c-loops", "Where the fused engine's C loops run (1 and 2 threads)", 4, 0.5,
         [_engines("--parts", part, "--threads", str(n), "--repeats", "5")
          for part in ("loops", "wide") for n in (1, 2)],
         [_engines("--parts", "loops", "--threads", "1", "--repeats", "1", "--cells", "gru")]),
    Part("generation", "Generation (chars/s at batch 1, 1 and 2 threads; model paths alone)", 2, 0.3,
         [_charlm("--skip-quality", "--threads", str(n), "--steps", "3", "--repeats", "9", "--chars", "1000")
          for n in (1, 2)]
         + [_engines("--parts", "generate", "--threads", "1", "--repeats", "7", "--chars", "400")],
         [_engines("--parts", "generate", "--threads", "1", "--repeats", "1", "--chars", "50")]),
    Part("training", "Character model: training tokens/s against torch.nn", 2, 0.3,
         [_engines("--parts", "train", "--threads", str(n), "--repeats", "7") for n in (1, 2)]
         + [_charlm("--skip-quality", "--threads", "1", "--steps", "20", "--repeats", "7")],
         [_engines("--parts", "train", "--threads", "1", "--repeats", "1", "--train-steps", "1")]),
    Part("charlm-quality", "Character model: held-out bits/char against torch.nn, and the demo", 9, 0.7,
         [_charlm("--minutes", "2.5", "--steps", "40", "--repeats", "5"),
          (*RF, "demo", "--out", f"{WORK}/demo", "--no-progress")],
         [_charlm("--minutes", "0.1", "--steps", "2", "--repeats", "1", "--chars", "50"),
          (*RF, "demo", "--out", f"{WORK}/demo", "--no-progress", "--steps", "5", "--eval-every", "5",
           "--sample-length", "20")]),
    Part("sampling", "Samplers: PINV against scipy, categorical against torch.multinomial", 3, 0.5,
         [_sampling("--repeat", "5", "--threads", "1"),
          _sampling("--repeat", "5", "--threads", "2"),
          _sampling("--only", "pinv", "--draws", "100000", "--repeat", "40", "--threads", "1"),
          _sampling("--only", "categorical", "--repeat", "50", "--threads", "1"),
          _sampling("--only", "categorical", "--repeat", "50", "--threads", "2")],
         [_sampling("--draws", "100000", "--repeat", "1", "--threads", "1")]),
    Part("forecast-speed", "Forecasting: sampling speed per cell and head", 1, 1,
         [_forecast("speed")], [_forecast("speed")]),
    Part("forecast-sunspots", "Forecasting: sunspots against the baselines", 4, 0.5,
         [_forecast("accuracy", "--series", "sunspots", "--out", WORK)],
         [_forecast("accuracy", "--series", "sunspots", "--out", WORK, *QUICK_FORECAST)]),
    Part("forecast-co2", "Forecasting: co2 against the baselines, and CRPS per band and window", 8, 1,
         [_forecast("accuracy", "--series", "co2", "--out", f"{WORK}/record"),
          (PY, "benchmarks/co2_bands.py", "--root", WORK, "record")],
         [_forecast("accuracy", "--series", "co2", "--out", f"{WORK}/record", *QUICK_FORECAST,
                    "--rollout-steps", "5")]),
    Part("memory", "Memory experiment: adding (long term), delay and parity (near term)", 40, 1,
         [(*RF, "experiment", "memory", "--task", "adding", "--cells", "rnn", "rnn-tanh", "gru", "lstm",
           "lstm-fb", "--lengths", "50", "100", "200", "400", "1000", "--seeds", "0", "1", "--steps", "3000",
           "--seconds-per-run", "45", "--out", f"{WORK}/adding", "--no-progress"),
          (*RF, "experiment", "memory", "--task", "adding", "--cells", "lstm", "lstm-fb", "--lengths", "400",
           "--seeds", "0", "--steps", "6000", "--seconds-per-run", "180", "--out", f"{WORK}/adding-lstm-400",
           "--no-progress"),
          (*RF, "experiment", "memory", "--task", "delay", "--k", "5", "--cells", "rnn", "rnn-tanh", "gru",
           "lstm", "--lengths", "50", "200", "--seeds", "0", "1", "--steps", "3000", "--seconds-per-run", "30",
           "--out", f"{WORK}/delay", "--no-progress"),
          (*RF, "experiment", "memory", "--task", "parity", "--k", "3", "--cells", "rnn", "rnn-tanh", "gru",
           "lstm", "--lengths", "50", "200", "--seeds", "0", "1", "--steps", "3000", "--seconds-per-run", "30",
           "--out", f"{WORK}/parity", "--no-progress")],
         [(*RF, "experiment", "memory", "--quick", "--out", f"{WORK}/quick", "--no-progress")],
         default=False),
]
BY_NAME = {p.name: p for p in PARTS}


def shown(cmd: tuple[str, ...], work: Path) -> str:
    """The command as a person would type it in the repository root."""
    try:
        work = work.relative_to(ROOT)
    except ValueError:
        pass
    return " ".join(str(a).replace(WORK, str(work)) for a in cmd)


def chosen(args) -> list[Part]:
    if args.only:
        return [BY_NAME[n] for n in args.only]
    return [p for p in PARTS if p.default or args.all]


def listing(parts: list[Part], quick: bool, out: Path) -> str:
    lines = []
    for p in parts:
        mins = p.quick_minutes if quick else p.minutes
        flag = "" if p.default else "  [not in the default set: --all or --only]"
        lines.append(f"{p.name}: {p.what}; about {mins:g} min{flag}")
        env = " ".join(f"{k}={v}" for k, v in p.env.items())
        for cmd in (p.quick if quick else p.commands):
            lines.append(f"    {env + ' ' if env else ''}{shown(cmd, out / 'work' / p.name)}")
    total = sum(p.quick_minutes if quick else p.minutes for p in parts)
    lines.append(f"about {total:g} min in all ('python' is {sys.executable})")
    return "\n".join(lines)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}; "
            f"started {time.strftime('%Y-%m-%d %H:%M:%S')}")


def run_part(part: Part, quick: bool, out: Path, env: dict[str, str]) -> list[tuple[str, int, float]]:
    work = out / "work" / part.name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    results = []
    log = out / f"{part.name}.txt"
    with open(log, "w") as f:
        for cmd in (part.quick if quick else part.commands):
            text = shown(cmd, work)
            argv = [sys.executable if a == PY else str(a).replace(WORK, str(work)) for a in cmd]
            print(f"[{part.name}] {text}", flush=True)
            f.write(f"$ {text}\n")
            f.flush()
            t0 = time.perf_counter()
            rc = subprocess.run(argv, cwd=ROOT, env={**env, **part.env}, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL).returncode
            seconds = time.perf_counter() - t0
            f.write(f"\n(exit code {rc}, {seconds:.0f} s)\n\n")
            f.flush()
            print(f"[{part.name}]   exit code {rc}, {seconds:.0f} s -> {log}", flush=True)
            results.append((text, rc, seconds))
    return results


def write_index(out: Path, header: str, done: dict[str, list[tuple[str, int, float]]], note: str = "") -> None:
    lines = ["# Benchmark outputs", "", header, ""]
    if note:
        lines += [note, ""]
    lines += ["| part | command | exit code | seconds |", "|---|---|---|---|"]
    for name, rows in done.items():
        for text, rc, seconds in rows:
            lines.append(f"| [{name}]({name}.txt) | `{text}` | {rc} | {seconds:.0f} |")
    (out / "index.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="print the parts and their commands, run nothing")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that every part runs, not its figures")
    p.add_argument("--only", nargs="+", choices=list(BY_NAME), metavar="PART",
                   help=f"run these parts only: {', '.join(BY_NAME)}")
    p.add_argument("--all", action="store_true", help="also the parts left out by default (the memory experiment)")
    p.add_argument("--out", default="runs/bench", help="folder for the outputs (default: runs/bench)")
    args = p.parse_args(argv)
    parts = chosen(args)
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    if args.list:
        print(listing(parts, args.quick, out))
        return 0
    if out.exists() and not out.is_dir():
        p.error(f"--out {args.out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        p.error(f"--out {args.out}: cannot create the folder ({e.strerror})")
    env = dict(os.environ)
    # the checkout's own package first, whatever is installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    header = machine() + ("; --quick (smoke run: the figures mean nothing)" if args.quick else "")
    print(f"writing to {out}/ ({len(parts)} parts, about "
          f"{sum(q.quick_minutes if args.quick else q.minutes for q in parts):g} min)", flush=True)
    done: dict[str, list[tuple[str, int, float]]] = {}
    try:
        for part in parts:
            done[part.name] = run_part(part, args.quick, out, env)
            write_index(out, header, done)
    except KeyboardInterrupt:
        write_index(out, header, done, note="Interrupted.")
        print(f"\ninterrupted; what finished is in {out}/index.md", file=sys.stderr)
        return 130
    failed = [f"{name}: {text}" for name, rows in done.items() for text, rc, _ in rows if rc != 0]
    print(f"outputs in {out}/ (index: {out}/index.md)")
    if failed:
        print("failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
