import pytest
import torch

from rnnforge.charlm.data import Vocab, default_corpus, load_text, split, streams
from rnnforge.errors import UserError


def test_default_corpus_is_pythons_own_prose():
    from pydoc_data.topics import topics

    text = default_corpus()
    assert 300_000 < len(text) < 1_000_000
    assert topics["assert"] in text
    assert load_text(None) == text == load_text("pydoc-topics")


def test_folder_is_read_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    assert load_text(str(tmp_path)) == "first\n\nsecond"


def test_non_utf8_names_file_and_offset(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf".encode() + b"\xe9 au lait")
    with pytest.raises(UserError, match=r"latin1\.txt is not UTF-8 text: byte 0xe9 at offset 3"):
        load_text(str(p))


def test_missing_data_path(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        load_text(str(tmp_path / "nope.txt"))


def test_vocab_round_trip_and_unknown_characters():
    v = Vocab.from_text("hello world")
    assert v.chars == " dehlorw"
    ids = v.encode("world hello")
    assert ids.tolist() == [7, 5, 6, 4, 1, 0, 3, 2, 4, 4, 5]
    assert v.decode(ids) == "world hello"
    with pytest.raises(UserError, match=r"not in the model's vocabulary: 'X', '!'"):
        v.encode("hello X!X")


def test_streams_are_contiguous_and_split_holds_out_the_end():
    ids = torch.arange(103)
    tr, va = split(ids, 0.1)
    assert va.tolist() == list(range(93, 103)) and tr.tolist() == list(range(93))
    s = streams(tr, 4)
    assert s.shape == (4, 23)
    assert s[1].tolist() == list(range(23, 46))
