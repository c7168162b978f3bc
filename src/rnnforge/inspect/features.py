"""Text features computed from the characters alone, one value per character.

Each feature describes the state of the text *after* reading character t, what
a forward recurrent unit at step t has seen: an opening quote is already
inside the quotation, a closing one is outside again; a newline starts a new
line at position 0.

    in_quote      between a double quote " and the next one
    in_parens     inside round parentheses ( )
    in_brackets   inside square brackets [ ] or braces { }
    depth         nesting depth of ( [ { together (a closer that does not match
                  the innermost opener is ignored)
    line_pos      characters read since the last newline
    indented      the line began with a space or tab: a code block or indented line
    word_start    the character begins a word (a letter, digit or _ after anything else)
    in_word       the character is a letter, digit or _
    after_space   the previous character was a space, tab or newline

A blank line ends a quotation or bracket left open, so that one stray quote or
parenthesis does not flip the rest of the text.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("in_quote", "in_parens", "in_brackets", "depth", "line_pos", "indented",
            "word_start", "in_word", "after_space")

OPEN, CLOSE = "([{", ")]}"


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


def text_features(text: str) -> dict[str, np.ndarray]:
    """Every feature of :data:`FEATURES` for ``text``: name -> float64 array (len(text),)."""
    out = {name: np.zeros(len(text)) for name in FEATURES}
    quote = False
    stack: list[str] = []  # the open brackets, innermost last
    line_pos = 0
    indented = False
    prev = "\n"
    for t, c in enumerate(text):
        if c == "\n":
            if prev == "\n":  # a blank line ends a quotation or bracket left open
                quote = False
                stack.clear()
            line_pos, indented = 0, False
        else:
            line_pos += 1
            if line_pos == 1:
                indented = c in " \t"
        if c == '"':
            quote = not quote
        if c in OPEN:
            stack.append(c)
        elif c in CLOSE and stack and OPEN.index(stack[-1]) == CLOSE.index(c):
            stack.pop()
        out["in_quote"][t] = quote
        out["in_parens"][t] = "(" in stack
        out["in_brackets"][t] = "[" in stack or "{" in stack
        out["depth"][t] = len(stack)
        out["line_pos"][t] = line_pos
        out["indented"][t] = indented
        out["word_start"][t] = _word(c) and not _word(prev)
        out["in_word"][t] = _word(c)
        out["after_space"][t] = prev in " \t\n" and t > 0
        prev = c
    return out
