"""Text corpora for language models: reading, splits, vocabulary and truncated-BPTT batches.

A corpus is one of
  * the default: the English text shipped with Python (`pydoc_data.topics`), no download;
  * a text file, split into the first 90% for training and the last 10% for validation
    (as nanoGPT splits Tiny Shakespeare);
  * a folder with train.txt, valid.txt and optionally test.txt (PTB / WikiText style).
Tokens are characters or whitespace-separated words (one <eos> per line, <unk> for unseen words).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import torch

from lstmkit.config import DataConfig

TRAIN_FRACTION = 0.9
SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")  # the last is optional
EOS, UNK = "<eos>", "<unk>"


def read_text(path: Path) -> str:
    """The UTF-8 text in `path`; clear errors for a missing, binary or empty file."""
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist; expected a UTF-8 text file")
    raw = path.read_bytes()
    nul = raw.find(b"\0")
    if nul >= 0:
        raise ValueError(f"{path} looks binary (NUL byte at offset {nul}); expected a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
                         "expected a UTF-8 text file") from None
    if not text.strip():
        raise ValueError(f"{path} is empty ({len(raw)} bytes); expected a text file with some text")
    return text


def default_text() -> str:
    import pydoc_data.topics
    return "".join(pydoc_data.topics.topics.values())


def load_splits(data: str) -> dict[str, str]:
    """{'train': ..., 'valid': ...[, 'test': ...]} texts for `--data` (see the module docstring)."""
    if not data:
        text = default_text()
    elif Path(data).is_dir():
        folder = Path(data)
        present = [name for name in SPLIT_FILES if (folder / name).is_file()]
        if not {"train.txt", "valid.txt"} <= set(present):
            found = sorted(p.name for p in folder.iterdir())
            raise FileNotFoundError(f"data folder {folder} must contain train.txt and valid.txt (test.txt optional); "
                                    f"found {found or 'nothing'}")
        return {name.removesuffix(".txt"): read_text(folder / name) for name in present}
    else:
        text = read_text(Path(data))
    cut = int(len(text) * TRAIN_FRACTION)
    return {"train": text[:cut], "valid": text[cut:]}


def tokenize(text: str, level: str, eos: bool = True) -> list[str]:
    """Characters, or the words of each line followed by <eos> (as the PTB word-level models do)."""
    if level == "char":
        return list(text)
    if not eos:
        return text.split()
    return [word for line in text.splitlines() for word in (*line.split(), EOS)]


class Vocab:
    """Token <-> id. Characters have no <unk> (the vocabulary holds every character of the corpus);
    words seen only outside the training split map to <unk>."""

    def __init__(self, level: str, tokens: list[str]):
        self.level, self.itos = level, list(tokens)
        self.stoi = {token: i for i, token in enumerate(self.itos)}
        self.unk = self.stoi.get(UNK) if level == "word" else None
        self.separator = "" if level == "char" else " "  # between decoded tokens

    @classmethod
    def build(cls, splits: dict[str, str], level: str) -> Vocab:
        if level == "char":
            return cls(level, sorted(set("".join(splits.values()))))
        counts = collections.Counter(tokenize(splits["train"], level))
        counts.pop(UNK, None)
        return cls(level, [UNK] + sorted(counts, key=lambda w: (-counts[w], w)))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, eos: bool = True) -> torch.Tensor:
        tokens = tokenize(text, self.level, eos)
        if self.unk is None:
            unknown = sorted(set(tokens) - self.stoi.keys())
            if unknown:
                raise ValueError(f"characters {''.join(unknown)!r} are not in the vocabulary of {len(self)} "
                                 f"characters; expected some of {''.join(self.itos)!r}")
            return torch.tensor([self.stoi[t] for t in tokens], dtype=torch.long)
        return torch.tensor([self.stoi.get(t, self.unk) for t in tokens], dtype=torch.long)

    def encode_prompt(self, text: str) -> torch.Tensor:
        """A generation prompt's ids (no trailing <eos>); an empty prompt starts at a line break."""
        if text:
            return self.encode(text, eos=False)
        start = "\n" if self.level == "char" else EOS
        return torch.tensor([self.stoi.get(start, 0)], dtype=torch.long)

    def decode(self, ids) -> str:
        text = self.separator.join(self.itos[i] for i in ids)
        return text if self.level == "char" else "\n".join(line.strip(" ") for line in text.split(EOS))

    def to_dict(self) -> dict:
        return {"level": self.level, "tokens": self.itos}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        if not isinstance(d, dict) or d.get("level") not in ("char", "word") or not isinstance(d.get("tokens"), list):
            raise ValueError(f"expected a vocabulary {{'level': 'char'|'word', 'tokens': [...]}}; given {str(d)[:80]}")
        return cls(d["level"], d["tokens"])


@dataclass
class Corpus:
    vocab: Vocab
    splits: dict[str, torch.Tensor]  # 'train', 'valid'[, 'test'] -> (N,) token ids


def load_corpus(cfg: DataConfig, vocab: Vocab | None = None) -> Corpus:
    """Read and encode `cfg.data`; pass the saved `vocab` when continuing a run."""
    texts = load_splits(cfg.data)
    vocab = vocab or Vocab.build(texts, cfg.level)
    return Corpus(vocab, {name: vocab.encode(text) for name, text in texts.items()})


class Streams:
    """Truncated-BPTT batches: the token stream cut into B parallel streams, read T tokens at a time.

    Chunk i of stream b continues chunk i-1 of stream b, so a model carrying its state across
    chunks sees unbroken text (the batching of PyTorch's word_language_model example).
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, bptt: int, name: str = "data"):
        B, T = batch_size, bptt
        L = len(tokens) // B  # tokens per stream
        if L < T + 1:
            raise ValueError(f"the {name} split has {len(tokens)} tokens; batches of --batch-size {B} x --bptt {T} "
                             f"need at least {B * (T + 1)}; expected a larger text or smaller batches")
        self.data = tokens[:L * B].view(B, L).t().contiguous()  # (L, B)
        self.bptt = T

    def __len__(self) -> int:
        """Chunks per pass; a final chunk shorter than T is kept."""
        return -(-(len(self.data) - 1) // self.bptt)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and target (each (T, B)) of chunk i; the target is the input shifted by one token."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.bptt
        end = min(start + self.bptt, len(self.data) - 1)
        return self.data[start:end], self.data[start + 1:end + 1]
