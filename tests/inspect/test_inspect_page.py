"""The page in a real browser (headless Chromium): it runs, shows every character as
written (markup in the text stays text), and has the selectors; and its data budget."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from rnnforge.charlm import Vocab
from rnnforge.inspect import analyze, record, write_page
from rnnforge.inspect.page import page_quantities

from inspect_helpers import tiny_model

NASTY = ('Plain "quoted" text & more &amp; <b>bold</b> </div>\n'
         '<script>document.title="pwned"; window.PWNED = 1</script>\n'
         "    <img src=x onerror=\"document.body.setAttribute('data-pwned', 1)\"> (a [b] c)\n"
         "%META% %SCRIPT% \\u003c end")

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium; "
                             ".ci/run installs it where it can)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    vocab = Vocab.from_text(NASTY)
    model = tiny_model("lstm", vocab, hidden=5)
    rec = record(model, NASTY, vocab)
    an = analyze(rec, model, look_back_k=6, look_back_units=2, look_back_positions=3)
    path = tmp_path_factory.mktemp("page") / "index.html"
    write_page(path, rec, an, title="<i>nasty</i> & co", layer=1, quantity="C", unit=3)
    return path


class _Dom(HTMLParser):
    """The characters of the spans inside div#text, the script elements, the selects' options."""

    def __init__(self):
        super().__init__()
        self.in_text, self.depth, self.span = False, 0, None
        self.chars, self.classes, self.scripts, self.options, self.ids = [], [], 0, {}, {}
        self.select = None
        self.body = {}
        self.texts = {}
        self.current_id = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if "id" in a:
            self.ids[a["id"]] = (tag, a)
            self.current_id = a["id"]
            self.texts.setdefault(a["id"], "")
        if tag == "script":
            self.scripts += 1
        if tag == "select":
            self.select = a.get("id")
            self.options[self.select] = []
        if tag == "option" and self.select:
            self.options[self.select].append(a.get("value"))
        if self.in_text:
            self.depth += 1
            if tag == "span":
                self.span = ""
                self.classes.append(a.get("class", ""))
        elif tag == "div" and a.get("id") == "text":
            self.in_text, self.depth = True, 1

    def handle_endtag(self, tag):
        if tag == "select":
            self.select = None
        if self.in_text:
            if tag == "span" and self.span is not None:
                self.chars.append(self.span)
                self.span = None
            self.depth -= 1
            if self.depth == 0:
                self.in_text = False

    def handle_data(self, data):
        if self.span is not None:
            self.span += data
        if self.current_id:
            self.texts[self.current_id] += data


def _chromium(*args, timeout=90):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@needs_chromium
def test_page_runs_and_shows_the_text_as_written(page, tmp_path):
    url = page.as_uri() + "#layer=1&q=C&unit=3"
    res = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", url)
    assert res.returncode == 0, res.stderr[-2000:]
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # no script error, no message at all
    dom = _Dom()
    dom.feed(res.stdout)
    assert dom.body.get("data-ready") == "1" and "data-error" not in dom.body and "data-pwned" not in dom.body
    # one span per character, holding exactly that character: the markup of the text stayed text
    assert len(dom.chars) == len(NASTY)
    assert "".join(dom.chars) == NASTY
    assert dom.scripts == 3  # the page's own: metadata, data, code; none from the text
    assert "<title>&lt;i&gt;nasty&lt;/i&gt; &amp; co</title>" in res.stdout and "pwned" not in dom.texts.get("summary", "")
    # every span coloured, and not all alike
    assert all(re.fullmatch(r"k\d+( hl)?", c) for c in dom.classes)
    assert len(set(dom.classes)) > 3
    # the selectors: 2 layers, the LSTM's six quantities, a unit input bounded by H - 1
    assert dom.options["layer"] == ["0", "1"]
    assert dom.options["quantity"] == ["f", "i", "o", "C~", "C", "z"]
    tag, attrs = dom.ids["unit"]
    assert tag == "input" and attrs["max"] == "4"
    assert "in_quote" in dom.options["rank"] and "tau" in dom.options["rank"]
    # the view asked for in the address is the one shown
    assert "units of layer 1 (C)" in dom.texts["rankhead"]


@needs_chromium
def test_screenshot_shows_coloured_text(page, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    res = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                    "--window-size=1000,700", f"--screenshot={shot}", page.as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = imread(shot)[..., :3]  # (h, w, 3) in [0, 1]
    chroma = img.max(2) - img.min(2)
    # the coloured backgrounds of the characters: blue or red, not grey
    assert (chroma > 0.25).sum() > 2000


def test_page_source_holds_no_markup_from_the_text(page):
    src = page.read_text(encoding="utf-8")
    assert src.count("<script") == 3
    for raw in ("<b>bold</b>", "</b> </div>", "<img", 'document.title="pwned"', "<i>nasty</i>"):
        assert raw not in src
    meta = re.search(r'<script type="application/json" id="meta">(.*?)</script>', src, re.S).group(1)
    assert json.loads(meta)["text"] == NASTY  # the placeholders in the text were not expanded


def test_the_page_budget_keeps_the_state_first():
    vocab = Vocab.from_text(NASTY)
    rec = record(tiny_model("lstm", vocab, hidden=5), NASTY, vocab)
    per = rec.steps * 5 * 2
    assert page_quantities(rec, budget=0) == ["z"]
    assert page_quantities(rec, budget=2 * per) == ["C", "z"]
    assert page_quantities(rec, budget=3 * per) == ["f", "C", "z"]
    assert page_quantities(rec, budget=6 * per) == ["f", "i", "o", "C~", "C", "z"]
    gru = record(tiny_model("gru", vocab, hidden=5), NASTY, vocab)
    assert page_quantities(gru, budget=2 * per) == ["s", "z"]
    # quantized values: within half a level of the unit's range
    from rnnforge.inspect.page import page_data
    an = analyze(rec, None)
    meta, blob = page_data(rec, an, title="t")
    b = next(b for b in meta["blocks"] if b["layer"] == 1 and b["q"] == "C")
    codes = np.frombuffer(blob, dtype=np.uint8)[b["offset"]:b["offset"] + 5 * rec.steps].reshape(5, rec.steps)
    lo, hi = np.array(b["lo"]), np.array(b["hi"])
    values = lo[:, None] + codes / 255 * (hi - lo)[:, None]
    err = np.abs(values - rec[1, "C"].double().numpy().T)
    assert (err <= (hi - lo)[:, None] / 510 + 1e-6).all()
