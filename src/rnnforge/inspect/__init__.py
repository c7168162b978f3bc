"""Look inside the notes' cells on real text: every gate and state of a trained
character model at every character, what the units track, how long they remember.

In a notebook::

    from rnnforge.charlm import load_model
    from rnnforge import inspect

    model, vocab, _ = load_model("runs/gru")
    rec = inspect.record(model, "def f(x):\\n    return (x + 1)\\n", vocab)
    rec[0, "s"]                       # (T, H) update gate of layer 0 at every character
    an = inspect.analyze(rec, model)  # saturation, correlations, time constants, look-back
    an.best                           # the best unit per text feature

``inspect_checkpoint`` is what ``rnnforge inspect`` runs: record, analyse and
write the page, the PNGs, ``units.csv`` and ``report.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionError, UserError, check_float, check_int
from .features import FEATURES, text_features
from .page import PAGE_VALUES, write_page
from .record import GATES, MEMORY_GATE, QUANTITIES, Recording, record
from .stats import Analysis, analyze

__all__ = ["FEATURES", "GATES", "MEMORY_GATE", "QUANTITIES", "Analysis", "Inspection", "Recording",
           "analyze", "inspect_checkpoint", "held_out_text", "record", "text_features", "write_page"]


@dataclass
class Inspection:
    """What :func:`inspect_checkpoint` made: the recording, its analysis, the files and timings."""

    recording: Recording
    analysis: Analysis
    files: dict[str, Path]
    seconds_record: float  # recording and statistics (look-back included)
    seconds_write: float  # page, PNGs and tables


def held_out_text(meta: dict) -> str:
    """The held-out end of the run's training text, as training split it off."""
    import torch

    from ..charlm.data import DEFAULT_CORPUS, load_text, split

    train = meta.get("train") or {}
    data = train.get("data")
    if data not in (None, "", DEFAULT_CORPUS) and not Path(data).exists():
        raise UserError(f"the run's training text {data!r} is not found here, so its held-out part "
                        f"cannot be inspected; give a text to inspect instead")
    text = load_text(data)
    _, val = split(torch.arange(len(text)), train.get("val_fraction", 0.05))
    return text[int(val[0]):]


def inspect_checkpoint(checkpoint, out=None, *, text: str | None = None, text_file=None, length: int = 5000,
                       layer: int = 0, quantity: str | None = None, unit: int = 0, long_term: float = 10.0,
                       look_back: int = 64, look_back_units: int = 32, look_back_positions: int = 16,
                       seed: int = 0, device: str = "cpu", page_values: int = PAGE_VALUES) -> Inspection:
    """Record a character model over a text and write the page, PNGs and tables to ``out``.

    The text is ``text`` itself, else the file ``text_file``, else the held-out end
    of the run's training text; of a file or the held-out text the first ``length``
    characters are used (0: all). ``out`` defaults to ``inspect/`` beside the
    checkpoint. ``layer``, ``quantity`` and ``unit`` choose the view the page opens
    on. ``look_back*`` set the gradient look-back estimate: distances 1..look_back
    for ``look_back_units`` units per layer at ``look_back_positions`` steps.
    """
    from ..charlm.checkpoint import load_model, resolve_checkpoint
    from ..charlm.data import read_utf8
    from ..runtime import resolve_device
    from . import plots, tables

    check_int("length", length, low=0)
    check_int("layer", layer, low=0)
    check_int("unit", unit, low=0)
    check_float("long_term", long_term, low=1.0)
    check_int("look_back", look_back, low=1)
    check_int("look_back_units", look_back_units, low=1)
    check_int("look_back_positions", look_back_positions, low=1)
    check_int("page_values", page_values, low=0)
    path = resolve_checkpoint(checkpoint)
    model, vocab, meta = load_model(path, resolve_device(device))
    c = model.config
    if layer >= c.layers:
        raise OptionError("layer", f"must be in [0, {c.layers - 1}] for a {c.layers}-layer model, got {layer}")
    if unit >= c.hidden:
        raise OptionError("unit", f"must be in [0, {c.hidden - 1}] for {c.hidden} units per layer, got {unit}")
    mode = model.rnn.mode
    if quantity is not None and quantity not in QUANTITIES[mode]:
        raise OptionError("quantity", f"{quantity!r} is not recorded for the {c.cell} cell; "
                                      f"choose one of {', '.join(QUANTITIES[mode])}")
    if text is not None:
        source = "the given text"
    else:
        if text_file is not None:
            text, source = read_utf8(Path(text_file)), str(text_file)
        else:
            text, source = held_out_text(meta), "the run's held-out text"
        text = text[:length] if length else text
    if not text:
        raise UserError("the text to inspect is empty")
    vocab.encode(text)  # characters outside the vocabulary: one error naming them, before any work

    out = Path(out) if out is not None else path.parent / "inspect"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rec = record(model, text, vocab)
    an = analyze(rec, model, long_term=long_term, look_back_k=look_back, look_back_units=look_back_units,
                 look_back_positions=look_back_positions, seed=seed)
    t1 = time.perf_counter()
    title = f"{path.parent.name}/{path.name}"
    files = {"index.html": write_page(out / "index.html", rec, an, title=title, layer=layer,
                                      quantity=quantity, unit=unit, budget=page_values)}
    files["heatmap.png"] = plots.heatmap(out / "heatmap.png", rec, an,
                                         extra=(layer, quantity or "z", unit))
    sat = plots.saturation_plot(out / "saturation.png", rec, an)
    if sat is not None:
        files["saturation.png"] = sat
    files["time_constants.png"] = plots.time_constant_plot(out / "time_constants.png", rec, an)
    files["units.csv"] = tables.write_units_csv(out / "units.csv", rec, an)
    t2 = time.perf_counter()
    described = {
        "index.html": "the text coloured by any unit; selectors, rankings, hover for values",
        "heatmap.png": "a stretch of text x the best unit per feature",
        "saturation.png": "gate saturation per unit (Karpathy et al. 2015, Fig. 3)",
        "time_constants.png": "histogram of time constants and look-back",
        "units.csv": "every number per layer, quantity and unit",
    }
    files["report.md"] = tables.write_report(out / "report.md", rec, an, title=title, source=source,
                                             seconds=t1 - t0,
                                             files={k: described[k] for k in files if k in described})
    return Inspection(rec, an, files, t1 - t0, t2 - t1)
