"""The text features on hand-made strings, value by value."""

import numpy as np

from rnnforge.inspect import FEATURES, text_features


def _check(text, **expected):
    got = text_features(text)
    assert set(got) == set(FEATURES)
    for name, want in expected.items():
        assert got[name].shape == (len(text),), name
        np.testing.assert_array_equal(got[name], np.array(want, dtype=float), err_msg=name)


def test_quotes_open_on_the_opening_quote_and_close_on_the_closing_one():
    _check('a"bc"d', in_quote=[0, 1, 1, 1, 0, 0])
    # a blank line ends a quotation left open
    _check('"a\n\nb', in_quote=[1, 1, 1, 0, 0])


def test_nested_brackets_and_their_depth():
    text = "f(a[b(c)]){x}"
    _check(text,
           depth=[0, 1, 1, 2, 2, 3, 3, 2, 1, 0, 1, 1, 0],
           in_parens=[0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
           in_brackets=[0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0])
    # a closer that does not match the innermost opener is ignored; a blank line clears
    _check("(]x\n\ny", depth=[1, 1, 1, 1, 0, 0], in_parens=[1, 1, 1, 1, 0, 0])


def test_lines_indentation_and_words():
    text = "ab\n  cd\nx"
    _check(text,
           line_pos=[1, 2, 0, 1, 2, 3, 4, 0, 1],
           indented=[0, 0, 0, 1, 1, 1, 1, 0, 0],
           word_start=[1, 0, 0, 0, 0, 1, 0, 0, 1],
           in_word=[1, 1, 0, 0, 0, 1, 1, 0, 1],
           after_space=[0, 0, 0, 1, 1, 1, 0, 0, 1])
    _check("x_1 (y)\ttab", word_start=[1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0],
           after_space=[0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    _check("\tz", indented=[1, 1], line_pos=[1, 2])


def test_empty_text_gives_empty_features():
    got = text_features("")
    assert all(v.shape == (0,) for v in got.values())
