"""``index.html``: one self-contained page showing what every unit does on the text.

The page needs no server and no network: its style, script and data are
inside it. The text is JSON data (with ``<``, ``>`` and ``&`` written as
``\\u003c`` ...), and the script puts each character into a span through
``textContent``, so any text shows as written and none of it is markup.

The values travel compactly: each (layer, quantity) is an array of bytes, unit
after unit (H rows of T steps), quantized between the unit's own minimum and
maximum (256 levels, an error of at most (max - min) / 510), base64-encoded.
A page over 20,000 characters x 512 units is 10 MB of bytes per quantity, so
the quantities go in by priority (the state z first, then the memory C, the
memory gate, the other gates and the candidates) up to :data:`PAGE_VALUES`;
those left out are named in the page and stay in ``units.csv`` and the API.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

import numpy as np

from .features import FEATURES
from .record import GATES, MEMORY_GATE, Recording
from .stats import Analysis

#: the most values (bytes) the page carries: about 32 MB of base64, which Chromium
#: decodes in well under a second
PAGE_VALUES = 24_000_000

#: quantities by priority for the page: the state, the memory, its gate, the other gates, candidates
PRIORITY = ("z", "C", "f", "s", "i", "o", "r", "C~", "z~")


def page_quantities(rec: Recording, budget: int = PAGE_VALUES) -> list[str]:
    """The quantities that go into the page: by :data:`PRIORITY`, while they fit in ``budget``.

    The state z always goes in, whatever its size.
    """
    per = rec.steps * rec.hidden_size * rec.num_layers
    chosen, used = [], 0
    for q in PRIORITY:
        if q in rec.quantities and (q == "z" or used + per <= budget):
            chosen.append(q)
            used += per
    return [q for q in rec.quantities if q in chosen]


def _num(x, digits: int = 4):
    """A JSON-safe float: NaN and infinities become null."""
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def _script_json(obj) -> str:
    """JSON for a <script> element: nothing in it can close the element or start markup."""
    s = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _kind(mode: str, q: str) -> str:
    """How the page colours a quantity: 'gate' in (0, 1), 'tanh' in (-1, 1), 'free' (C)."""
    if q in GATES[mode]:
        return "gate"
    return "free" if q == "C" else "tanh"


def page_data(rec: Recording, an: Analysis, *, title: str, layer: int = 0, quantity: str | None = None,
              unit: int = 0, budget: int = PAGE_VALUES) -> tuple[dict, bytes]:
    """The page's metadata (JSON-able) and its quantized values."""
    included = page_quantities(rec, budget)
    quantity = quantity if quantity in included else "z"
    blocks, blob, offset = [], [], 0
    T, H = rec.steps, rec.hidden_size
    for l in range(rec.num_layers):
        for q in included:
            v = rec[l, q].double().numpy()  # (T, H)
            lo, hi = v.min(0), v.max(0)
            span = np.where(hi > lo, hi - lo, 1.0)
            codes = np.rint((v - lo) / span * 255).astype(np.uint8)  # (T, H)
            blob.append(np.ascontiguousarray(codes.T).tobytes())  # unit after unit
            blocks.append({"layer": l, "q": q, "offset": offset, "kind": _kind(rec.mode, q),
                           "lo": [_num(x, 6) for x in lo], "hi": [_num(x, 6) for x in hi]})
            offset += T * H
    corr = {f"{l}/{q}": [[_num(x, 3) for x in row] for row in r] for (l, q), r in an.correlations.items()}
    sat = {f"{l}/{g}": [[_num(x, 3) for x in left], [_num(x, 3) for x in right]]
           for (l, g), (left, right) in an.saturation.items()}
    tau = [None if t is None else [_num(x, 2) for x in t] for t in an.time_constants]
    lb = [[_num(x, 2) for x in an.look_back_of(l)] for l in range(rec.num_layers)]
    meta = {
        "title": title, "mode": rec.mode, "text": rec.text, "T": T, "H": H, "L": rec.num_layers,
        "quantities": list(rec.quantities), "included": included, "blocks": blocks,
        "features": list(FEATURES), "corr": corr, "sat": sat, "gates": list(GATES[rec.mode]),
        "memoryGate": MEMORY_GATE[rec.mode], "tau": tau, "lookBack": lb, "longTerm": an.long_term,
        "best": [{**b, "r": _num(b["r"], 3)} for b in an.best],
        "start": {"layer": layer, "q": quantity, "unit": unit},
    }
    return meta, b"".join(blob)


def write_page(path, rec: Recording, an: Analysis, *, title: str = "rnnforge inspect", layer: int = 0,
               quantity: str | None = None, unit: int = 0, budget: int = PAGE_VALUES) -> Path:
    """Write the self-contained page to ``path``; returns the path."""
    meta, blob = page_data(rec, an, title=title, layer=layer, quantity=quantity, unit=unit, budget=budget)
    parts = {"TITLE": html.escape(title), "STYLE": _STYLE, "META": _script_json(meta),
             "DATA": base64.b64encode(blob).decode("ascii"), "SCRIPT": _SCRIPT}
    # one pass over the template: what is put in is never searched again for placeholders
    doc = re.sub(r"%(TITLE|STYLE|META|DATA|SCRIPT)%", lambda m: parts[m.group(1)], _TEMPLATE)
    path = Path(path)
    path.write_text(doc, encoding="utf-8")
    return path


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>%TITLE%</title>
<style>%STYLE%</style>
</head>
<body>
<header>
  <h1>%TITLE%</h1>
  <p id="summary"></p>
</header>
<div id="controls">
  <label>layer <select id="layer"></select></label>
  <label>quantity <select id="quantity"></select></label>
  <label>unit <input id="unit" type="number" min="0" value="0" step="1"></label>
  <button id="prev" type="button" title="previous unit">&#8592;</button>
  <button id="next" type="button" title="next unit">&#8594;</button>
  <label>rank units by <select id="rank"></select></label>
  <span id="legend">low <span id="swatches"></span> high</span>
</div>
<div id="status">hover over the text to read the unit's value</div>
<main>
  <div id="text" aria-label="the text, coloured by the chosen unit"></div>
  <aside>
    <h2>this unit</h2>
    <div id="unitinfo"></div>
    <h2 id="rankhead">ranking</h2>
    <ol id="ranking"></ol>
    <h2>best unit per feature</h2>
    <table id="best"><thead><tr><th>feature</th><th>layer</th><th>quantity</th><th>unit</th><th>r</th></tr></thead><tbody></tbody></table>
    <p id="omitted"></p>
  </aside>
</main>
<script type="application/json" id="meta">%META%</script>
<script type="application/octet-stream" id="data">%DATA%</script>
<script>%SCRIPT%</script>
</body>
</html>
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fff; }
header { padding: 8px 16px 0; }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 14px; margin: 12px 0 4px; }
#summary { margin: 4px 0; color: #555; font-size: 13px; }
#controls { padding: 6px 16px; display: flex; flex-wrap: wrap; gap: 12px; align-items: center;
            border-bottom: 1px solid #ddd; font-size: 13px; }
#unit { width: 5em; }
#legend { display: inline-flex; align-items: center; gap: 4px; }
#swatches i { display: inline-block; width: 6px; height: 14px; }
#status { padding: 4px 16px; font: 13px ui-monospace, monospace; background: #f6f6f6; min-height: 1.4em;
          white-space: pre; overflow: hidden; }
main { display: flex; gap: 16px; padding: 8px 16px; align-items: flex-start; }
#text { flex: 1; font: 14px/1.5 ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre-wrap;
        word-break: break-all; max-height: calc(100vh - 140px); overflow-y: auto; }
#text span { cursor: crosshair; }
#text span.hl { outline: 1px solid #000; }
aside { width: 330px; font-size: 13px; max-height: calc(100vh - 140px); overflow-y: auto; }
#ranking { padding-left: 2.2em; margin: 0; }
#ranking a, #best a { color: #1a4f9c; text-decoration: none; }
#ranking li.cur { font-weight: bold; }
table { border-collapse: collapse; }
td, th { padding: 1px 6px; text-align: left; }
td.num { text-align: right; }
"""

_SCRIPT = r"""
"use strict";
window.addEventListener("error", function (e) { document.body.setAttribute("data-error", String(e.message)); });
(function () {
  var meta = JSON.parse(document.getElementById("meta").textContent);
  var raw = atob(document.getElementById("data").textContent.trim());
  var bytes = new Uint8Array(raw.length);
  for (var k = 0; k < raw.length; k++) bytes[k] = raw.charCodeAt(k);
  raw = null;
  var T = meta.T, H = meta.H, L = meta.L, text = meta.text;
  var blocks = {};
  meta.blocks.forEach(function (b) { blocks[b.layer + "/" + b.q] = b; });

  // 33 colours from blue (low) through white to red (high)
  var LEVELS = 33, mid = (LEVELS - 1) / 2, css = [];
  for (var c = 0; c < LEVELS; c++) {
    var s = (c - mid) / mid, a = Math.abs(s);
    var rgb = s < 0 ? [255 - 180 * a, 255 - 120 * a, 255] : [255, 255 - 170 * a, 255 - 190 * a];
    css.push("#text span.k" + c + "{background:rgb(" + rgb.map(Math.round).join(",") + ")}");
    var i = document.createElement("i");
    i.style.background = "rgb(" + rgb.map(Math.round).join(",") + ")";
    if (c % 2 === 0) document.getElementById("swatches").appendChild(i);
  }
  var style = document.createElement("style");
  style.textContent = css.join("\n");
  document.head.appendChild(style);

  // the text: one span per character, its content set as text, never parsed as markup
  var box = document.getElementById("text"), spans = new Array(T), frag = document.createDocumentFragment();
  for (var t = 0; t < T; t++) {
    var sp = document.createElement("span");
    sp.textContent = text[t];
    sp.i = t;
    spans[t] = sp;
    frag.appendChild(sp);
  }
  box.appendChild(frag);

  var el = function (id) { return document.getElementById(id); };
  var view = { layer: 0, q: "z", unit: 0, rank: meta.features[0] };
  var NAMES = { f: "forget gate f", i: "input gate i", o: "output gate o", "C~": "candidate C~",
                C: "memory C", z: "state z", s: "update gate s", r: "reset gate r", "z~": "candidate z~" };

  function value(b, unit, t) {
    var lo = b.lo[unit], hi = b.hi[unit];
    return lo + bytes[b.offset + unit * T + t] / 255 * (hi - lo);
  }
  // where a value sits on the colour scale, in [-1, 1]
  function scale(b, unit) {
    if (b.kind === "gate") return { c: 0.5, w: 0.5 };
    if (b.kind === "tanh") return { c: 0, w: 1 };
    return { c: 0, w: Math.max(Math.abs(b.lo[unit]), Math.abs(b.hi[unit]), 1e-9) };
  }
  function fmt(x, d) { return x === null || x === undefined ? "n/a" : Number(x).toFixed(d); }

  function option(sel, value, label) {
    var o = document.createElement("option");
    o.value = value; o.textContent = label; sel.appendChild(o);
  }
  for (var l = 0; l < L; l++) option(el("layer"), l, String(l));
  meta.included.forEach(function (q) { option(el("quantity"), q, NAMES[q] || q); });
  meta.features.forEach(function (f) { option(el("rank"), f, "|r| with " + f); });
  if (meta.memoryGate) option(el("rank"), "tau", "time constant 1/(1 - mean " + meta.memoryGate + ")");
  option(el("rank"), "lookback", "look-back (gradient)");
  meta.gates.forEach(function (g) {
    option(el("rank"), "right:" + g, g + " right-saturated (> 0.9)");
    option(el("rank"), "left:" + g, g + " left-saturated (< 0.1)");
  });
  el("unit").max = H - 1;

  var summary = meta.mode + ", " + L + " layer(s) x " + H + " units, " + T + " characters";
  el("summary").textContent = summary;
  var left = meta.quantities.filter(function (q) { return meta.included.indexOf(q) < 0; });
  if (left.length) el("omitted").textContent = "Not in this page (size): " + left.join(", ") +
    "; their numbers are in units.csv and in rnnforge.inspect.record.";

  function link(layer, q, unit, label) {
    var a = document.createElement("a");
    a.href = "#layer=" + layer + "&q=" + encodeURIComponent(q) + "&unit=" + unit;
    a.textContent = label;
    return a;
  }

  function paint() {
    var b = blocks[view.layer + "/" + view.q], sc = scale(b, view.unit), lut = new Uint8Array(256);
    for (var k = 0; k < 256; k++) {
      var v = b.lo[view.unit] + k / 255 * (b.hi[view.unit] - b.lo[view.unit]);
      var s = Math.max(-1, Math.min(1, (v - sc.c) / sc.w));
      lut[k] = Math.round(mid + s * mid);
    }
    var base = b.offset + view.unit * T;
    for (var t = 0; t < T; t++) spans[t].className = "k" + lut[bytes[base + t]];
  }

  function metric(key, layer, q, unit) {
    if (key === "tau") return meta.tau[layer] ? meta.tau[layer][unit] : null;
    if (key === "lookback") return meta.lookBack[layer][unit];
    if (key.indexOf(":") > 0) {
      var side = key.split(":")[0], g = key.split(":")[1], s = meta.sat[layer + "/" + g];
      return s ? s[side === "left" ? 0 : 1][unit] : null;
    }
    return meta.corr[layer + "/" + q][meta.features.indexOf(key)][unit];
  }

  function rank() {
    var list = el("ranking"), rows = [];
    list.textContent = "";
    for (var m = 0; m < H; m++) {
      var x = metric(view.rank, view.layer, view.q, m);
      if (x !== null && x !== undefined) rows.push([m, x]);
    }
    var corr = meta.features.indexOf(view.rank) >= 0;
    rows.sort(function (a, b) { return corr ? Math.abs(b[1]) - Math.abs(a[1]) : b[1] - a[1]; });
    el("rankhead").textContent = "units of layer " + view.layer + (corr ? " (" + view.q + ")" : "") +
      " by " + el("rank").selectedOptions[0].textContent;
    rows.slice(0, 30).forEach(function (row) {
      var li = document.createElement("li");
      li.appendChild(link(view.layer, view.q, row[0], "unit " + row[0]));
      li.appendChild(document.createTextNode("  " + fmt(row[1], corr ? 3 : 2)));
      if (row[0] === view.unit) li.className = "cur";
      list.appendChild(li);
    });
  }

  function info() {
    var lines = [], l = view.layer, m = view.unit, corr = meta.corr[l + "/" + view.q];
    if (meta.tau[l]) lines.push("time constant " + fmt(meta.tau[l][m], 1) + " characters");
    if (meta.lookBack[l][m] !== null) lines.push("look-back " + fmt(meta.lookBack[l][m], 1) + " characters");
    meta.gates.forEach(function (g) {
      var s = meta.sat[l + "/" + g];
      lines.push(g + " saturated: left " + fmt(s[0][m], 2) + ", right " + fmt(s[1][m], 2));
    });
    var top = meta.features.map(function (f, j) { return [f, corr[j][m]]; })
      .filter(function (p) { return p[1] !== null; })
      .sort(function (a, b) { return Math.abs(b[1]) - Math.abs(a[1]); }).slice(0, 3);
    lines.push(view.q + " correlates with " + top.map(function (p) { return p[0] + " " + fmt(p[1], 2); }).join(", "));
    el("unitinfo").textContent = lines.join("\n");
    el("unitinfo").style.whiteSpace = "pre-line";
  }

  function show() {
    el("layer").value = view.layer; el("quantity").value = view.q; el("unit").value = view.unit;
    el("rank").value = view.rank;
    paint(); rank(); info();
  }

  function set(changes, push) {
    Object.keys(changes).forEach(function (k) { view[k] = changes[k]; });
    view.layer = Math.max(0, Math.min(L - 1, parseInt(view.layer, 10) || 0));
    view.unit = Math.max(0, Math.min(H - 1, parseInt(view.unit, 10) || 0));
    if (meta.included.indexOf(view.q) < 0) view.q = "z";
    if (push) history.replaceState(null, "", "#layer=" + view.layer + "&q=" + encodeURIComponent(view.q) +
                                   "&unit=" + view.unit + "&rank=" + encodeURIComponent(view.rank));
    show();
  }

  function fromHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var p = kv.split("=");
      if (p.length === 2) out[p[0]] = decodeURIComponent(p[1]);
    });
    if (out.rank && el("rank").querySelector("option[value='" + CSS.escape(out.rank) + "']") === null) delete out.rank;
    return out;
  }

  var best = el("best").querySelector("tbody");
  meta.best.forEach(function (b) {
    var tr = document.createElement("tr");
    [b.feature, b.layer, b.quantity].forEach(function (x) {
      var td = document.createElement("td"); td.textContent = String(x); tr.appendChild(td);
    });
    var td = document.createElement("td");
    if (meta.included.indexOf(b.quantity) >= 0) td.appendChild(link(b.layer, b.quantity, b.unit, String(b.unit)));
    else td.textContent = String(b.unit);
    tr.appendChild(td);
    td = document.createElement("td"); td.className = "num"; td.textContent = fmt(b.r, 3); tr.appendChild(td);
    tr.addEventListener("click", function () { set({ rank: b.feature }, true); });
    best.appendChild(tr);
  });

  el("layer").addEventListener("change", function () { set({ layer: this.value }, true); });
  el("quantity").addEventListener("change", function () { set({ q: this.value }, true); });
  el("unit").addEventListener("change", function () { set({ unit: this.value }, true); });
  el("rank").addEventListener("change", function () { set({ rank: this.value }, true); });
  el("prev").addEventListener("click", function () { set({ unit: view.unit - 1 }, true); });
  el("next").addEventListener("click", function () { set({ unit: view.unit + 1 }, true); });
  window.addEventListener("hashchange", function () { set(fromHash(), false); });

  var lastHover = null;
  box.addEventListener("mouseover", function (e) {
    var t = e.target.i;
    if (t === undefined) return;
    if (lastHover !== null) spans[lastHover].classList.remove("hl");
    spans[t].classList.add("hl");
    lastHover = t;
    var b = blocks[view.layer + "/" + view.q];
    var ch = JSON.stringify(text[t]);
    el("status").textContent = "position " + t + "  " + ch + "  layer " + view.layer + " " + view.q +
      " unit " + view.unit + " = " + value(b, view.unit, t).toFixed(3);
  });

  set(Object.assign({ layer: meta.start.layer, q: meta.start.q, unit: meta.start.unit }, fromHash()), false);
  document.body.setAttribute("data-ready", "1");
  // milliseconds from navigation to a painted page: the load-time benchmark reads it
  document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
})();
"""
