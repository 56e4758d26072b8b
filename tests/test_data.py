"""lstmkit.data: reading and splitting corpora, vocabularies, truncated-BPTT streams, clear errors."""
import pytest
import torch

from lstmkit.config import DataConfig
from lstmkit.data import EOS, UNK, Streams, Vocab, default_text, load_corpus, load_splits, read_text
from error_table import call_row
from train_helpers import TINY, lstmkit


def test_default_corpus_is_pythons_english_text_split_90_10():
    text = default_text()
    assert len(text) > 400_000
    splits = load_splits("")
    assert splits["train"] + splits["valid"] == text
    assert len(splits["train"]) == int(0.9 * len(text))


def test_text_file_split_first_90_percent_train(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 10)
    splits = load_splits(str(path))
    assert splits == {"train": ("abcdefghij" * 10)[:90], "valid": ("abcdefghij" * 10)[90:]}


def test_folder_with_train_valid_test(tmp_path):
    for name in ("train", "valid", "test"):
        (tmp_path / f"{name}.txt").write_text(f"the {name} words\n")
    assert load_splits(str(tmp_path)) == {"train": "the train words\n", "valid": "the valid words\n",
                                          "test": "the test words\n"}


def _read(content: bytes | None):
    """A call reading folder/data.txt holding `content` (None: no such file)."""
    def call(folder):
        if content is not None:
            (folder / "data.txt").write_bytes(content)
        read_text(folder / "data.txt")
    return call


def _folder_without_splits(folder):
    (folder / "train.txt").write_text("some text")
    (folder / "notes.md").write_text("x")
    load_splits(str(folder))


# (what is wrong, the call, the exception, a regex the message must match)
BAD_DATA = [
    ("data file does not exist", _read(None), FileNotFoundError,
     r"data.txt does not exist; expected a UTF-8 text file"),
    ("empty file", _read(b""), ValueError, r"is empty \(0 bytes\); expected a text file"),
    ("only whitespace", _read(b" \n\t\n"), ValueError, r"is empty \(4 bytes\)"),
    ("binary file", _read(b"text\x00\x01binary"), ValueError,
     r"looks binary \(NUL byte at offset 4\); expected a UTF-8 text file"),
    ("Latin-1 text", _read(b"caf\xe9 latin-1"), ValueError,
     r"not UTF-8 text \(byte 0xe9 at offset 3\); expected a UTF-8 text file"),
    ("data folder without train.txt and valid.txt", _folder_without_splits, FileNotFoundError,
     r"must contain train.txt and valid.txt .*found \['notes.md', 'train.txt'\]"),
    ("characters outside the vocabulary", lambda: Vocab.build({"train": "hello", "valid": "world"}, "char").encode(
        "lox z"), ValueError, r"characters ' xz' are not in the vocabulary of 7 characters; expected some of "
                              r"'dehlorw'"),
    ("vocabulary JSON of another kind", lambda: Vocab.from_dict({"tokens": "abc"}), ValueError,
     "expected a vocabulary"),
    ("split too short for the batch", lambda: Streams(torch.arange(20), 4, 8, "train"), ValueError,
     r"train split has 20 tokens; .*--batch-size 4 x --bptt 8 need at least 36"),
]


@pytest.mark.parametrize("what,call,exc,match", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data(what, call, exc, match, tmp_path):
    with pytest.raises(exc, match=match):
        call_row(call, tmp_path)


def test_bad_data_exits_nonzero_with_message(tmp_path, capsys):
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    assert lstmkit("train", "--data", tmp_path / "blob.bin", "--dry-run", "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "blob.bin looks binary" in err and "expected a UTF-8 text file" in err
    assert not (tmp_path / "run").exists()


def test_char_vocab_round_trip():
    vocab = Vocab.build({"train": "hello", "valid": "world"}, "char")
    assert vocab.itos == sorted(set("helloworld"))
    ids = vocab.encode("low")
    assert vocab.decode(ids.tolist()) == "low"
    assert Vocab.from_dict(vocab.to_dict()).itos == vocab.itos


def test_word_vocab_eos_per_line_and_unk_for_unseen_words():
    vocab = Vocab.build({"train": "the cat sat\nthe dog\n", "valid": "a cat\n"}, "word")
    assert vocab.itos[0] == UNK and EOS in vocab.stoi
    assert vocab.itos[1:4] == [EOS, "the", "cat"]  # most frequent first, ties alphabetical
    ids = vocab.encode("a cat\n").tolist()
    assert ids == [vocab.stoi[UNK], vocab.stoi["cat"], vocab.stoi[EOS]]
    assert vocab.decode(vocab.encode("the cat sat\nthe dog\n").tolist()) == "the cat sat\nthe dog\n"
    assert vocab.encode_prompt("the dog").tolist() == [vocab.stoi["the"], vocab.stoi["dog"]]
    assert vocab.encode_prompt("").tolist() == [vocab.stoi[EOS]]


def test_streams_are_contiguous_and_targets_shift_by_one():
    tokens = torch.arange(103)
    streams = Streams(tokens, batch_size=4, bptt=5)
    L = 103 // 4  # 25 tokens per stream
    assert len(streams) == -(-(L - 1) // 5)
    x0, y0 = streams[0]
    assert x0.shape == (5, 4)
    assert torch.equal(x0[:, 1], torch.arange(L, L + 5))  # stream 1 starts at token L
    assert torch.equal(y0, x0 + 1)
    x1, _ = streams[1]
    assert torch.equal(x1[0], x0[-1] + 1)  # chunk 1 continues chunk 0 in every stream
    last_x, last_y = streams[len(streams) - 1]
    assert last_y[-1, 0] == L - 1  # every token of a stream is predicted once


def test_word_level_run_on_a_folder(tmp_path, capsys):
    for name in ("train", "valid", "test"):
        (tmp_path / f"{name}.txt").write_text("the cat sat on the mat\nthe dog ran\n" * 30)
    corpus = load_corpus(DataConfig(data=str(tmp_path), level="word"))
    assert set(corpus.splits) == {"train", "valid", "test"}
    assert lstmkit("train", "--data", tmp_path, "--level", "word", "--dry-run", *TINY, "--out", tmp_path / "run") == 0
    assert (tmp_path / "run" / "vocab.json").exists()
    out = capsys.readouterr().out
    assert "valid loss" in out and "nats/word" in out and "test loss" in out  # test.txt is evaluated once at the end
