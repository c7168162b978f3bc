import pytest
import torch

from rnnforge.charlm.data import Vocab, default_corpus, load_text, split, streams
from rnnforge.errors import OptionError, UserError


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


def test_folder_skips_files_that_are_not_utf8_and_names_them(tmp_path):
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "c.md").write_text("third", encoding="utf-8")
    (tmp_path / "b.bin").write_bytes(b"\x00\xff\xfe")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("hidden folders are not corpus")
    warnings = []
    assert load_text(str(tmp_path), warn=warnings.append) == "first\n\nthird"
    assert warnings == [f"{tmp_path}: skipped 1 of 3 files that are not UTF-8 text: b.bin"]


def test_glob_chooses_the_files_at_any_depth(tmp_path):
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "sub" / "c.md").write_text("not this", encoding="utf-8")
    assert load_text(str(tmp_path), "*.txt") == "first\n\nsecond"
    with pytest.raises(OptionError, match=r"holds no files matching '\*\.rst'") as e:
        load_text(str(tmp_path), "*.rst")
    assert e.value.option == "data"


def test_a_folder_without_any_text(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\xff")
    with pytest.raises(OptionError, match=r"none of its 1 files matching '\*' is UTF-8 text"):
        load_text(str(tmp_path), warn=lambda m: None)


def test_byte_order_mark_is_not_a_character(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfhello")
    text = load_text(str(p))
    assert text == "hello" and "\ufeff" not in Vocab.from_text(text).chars
    (tmp_path / "more.txt").write_bytes("\ufeffworld \ufeff".encode())  # only a leading mark is one
    assert load_text(str(tmp_path)) == "hello\n\nworld \ufeff"
