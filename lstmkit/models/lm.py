"""Character/word language model (embedding -> lstmkit LSTM -> linear decoder) and its training task."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lstmkit.config import DataConfig, ModelConfig
from lstmkit.data import Corpus, Streams, Vocab, load_corpus
from lstmkit.locked_dropout import locked_dropout
from lstmkit.models.regularizers import embedding_dropout, run_with, weight_drop
from lstmkit.models.structure import build_lstm
from lstmkit.models.task import Batch


class LanguageModel(nn.Module):
    """Predicts the next token at every step. Time-major: x (T, B) -> logits (T, B, V)."""

    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        output_size = cfg.proj_size or cfg.hidden_size  # P or H
        embedding_dim = cfg.embedding_dim or output_size
        if cfg.tie_weights and embedding_dim != output_size:
            raise ValueError(f"weight tying needs embedding_dim == LSTM output size (proj_size or hidden_size) = "
                             f"{output_size}; given embedding_dim={embedding_dim} (set it to {output_size} or 0)")
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = build_lstm(cfg, embedding_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.weight_drop, self.embedding_dropout = cfg.weight_drop, cfg.embedding_dropout
        self.locked_input_dropout, self.locked_output_dropout = cfg.locked_input_dropout, cfg.locked_output_dropout
        self.decoder = nn.Linear(output_size, vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if cfg.tie_weights:
            self.decoder.weight = self.embedding.weight  # one (V, E) matrix reads tokens in and scores them out
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor, state=None):
        e = self.dropout(embedding_dropout(self.embedding, x, self.embedding_dropout, self.training))  # (T, B, E)
        e = locked_dropout(e, self.locked_input_dropout, self.training)
        dropped = weight_drop(self.lstm, self.weight_drop, self.training)  # W_hh, one DropConnect mask per call
        y, state = run_with(self.lstm, dropped, e, state)  # (T, B, P or H)
        y = locked_dropout(y, self.locked_output_dropout, self.training)
        return self.decoder(self.dropout(y)), state  # (T, B, V)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, n: int, temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue `prompt` ((T0,) ids, T0 >= 1) by `n` sampled ids; temperature 0 picks the most likely."""
        if prompt.numel() == 0:
            raise ValueError("generate needs a prompt of at least one token; given an empty prompt")
        training = self.training
        self.eval()
        logits, state = self(prompt.view(-1, 1))  # (T0, 1, V)
        out = []
        for _ in range(n):
            scores = logits[-1, 0]  # (V,)
            if temperature == 0:
                token = scores.argmax().view(1)
            else:
                scores = scores / temperature
                if top_k:
                    kth = scores.topk(min(top_k, scores.numel())).values[-1]
                    scores = scores.masked_fill(scores < kth, -math.inf)
                token = torch.multinomial(scores.softmax(-1), 1, generator=generator)
            out.append(token)
            logits, state = self(token.view(1, 1), state)
        self.train(training)
        return torch.cat(out) if out else prompt.new_empty(0)


class LanguageModelTask:
    """Next-token prediction on a corpus in contiguous chunks (see `lstmkit.data.Streams`)."""

    def __init__(self, data_cfg: DataConfig, metadata: dict | None = None):
        vocab = Vocab.from_dict(metadata["vocab"]) if metadata else None
        self.corpus: Corpus = load_corpus(data_cfg, vocab)
        self.vocab = self.corpus.vocab
        self.batch_size, self.bptt = data_cfg.batch_size, data_cfg.bptt
        self.train = Streams(self.corpus.splits["train"], self.batch_size, self.bptt, "train")
        self.source = data_cfg.data or "Python's pydoc topics"
        self.final_splits = tuple(split for split in self.corpus.splits if split == "test")

    def describe(self) -> str:
        sizes = ", ".join(f"{len(tokens):,} {name}" for name, tokens in self.corpus.splits.items())
        return f"{self.source}: {self.vocab.level} level, vocabulary {len(self.vocab):,}, tokens {sizes}"

    def metadata(self) -> dict:
        return {"vocab": self.vocab.to_dict()}

    def build_model(self, cfg: ModelConfig) -> LanguageModel:
        return LanguageModel(len(self.vocab), cfg)

    def batch(self, step: int, rows: slice) -> Batch:
        i = step % len(self.train)
        x, y = self.train[i]  # (T, B) each
        return Batch(x[:, rows], y[:, rows], carry=i > 0)  # a new pass over the text starts from a zero state

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.flatten(0, 1), target.flatten())  # (T*B, V) vs (T*B,)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int | None = None, split: str = "valid") -> dict[str, float]:
        """Mean next-token loss over the split read as carried-state streams: nats, bits and perplexity."""
        tokens = self.corpus.splits[split]
        streams = Streams(tokens, max(1, min(self.batch_size, len(tokens) // (self.bptt + 1))), self.bptt, split)
        device = next(model.parameters()).device
        total, count, state = 0.0, 0, None
        for i in range(min(len(streams), max_batches or len(streams))):
            x, y = (t.to(device) for t in streams[i])
            output, state = model(x, state)
            total += self.loss(output, y).item() * y.numel()
            count += y.numel()
        nats = total / count
        return {f"{split}_loss": nats, f"{split}_bits": nats / math.log(2), f"{split}_ppl": math.exp(min(nats, 700))}

    def report(self, metrics: dict[str, float], split: str = "valid") -> str:
        unit = self.vocab.level
        return (f"{split} loss {metrics[f'{split}_loss']:.4f} nats/{unit}, {metrics[f'{split}_bits']:.4f} bits/{unit}, "
                f"perplexity {metrics[f'{split}_ppl']:.2f}")

    def sample(self, model: LanguageModel, length: int, seed: int) -> str:
        device = next(model.parameters()).device
        prompt = self.vocab.encode_prompt("").to(device)
        ids = model.generate(prompt, length, generator=torch.Generator(device).manual_seed(seed))
        return self.vocab.decode(ids.tolist())
