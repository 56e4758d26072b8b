"""The comparison `lstmkit compress` reports: parameters, bytes, inference speed and validation loss per model."""
from __future__ import annotations

import math

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from lstmkit.bench.report import table
from lstmkit.bench.timing import time_interleaved
from lstmkit.compress.prune import sparsity
from lstmkit.compress.saved import pack_sparse

COLUMNS = ("model", "parameters", "weight MiB", "size ratio", "tokens/s", "speed ratio", "LSTM sparsity",
           "valid loss", "loss change")


def stored_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as a compressed checkpoint stores them, each shared (tied) tensor once."""
    seen, unique = set(), {}
    for key, t in model.state_dict().items():
        if (t.data_ptr(), t.shape) not in seen or t.numel() == 0:  # a tied parameter appears once per name
            seen.add((t.data_ptr(), t.shape))
            unique[key] = t
    return pack_sparse(unique)


def stored_numbers(model: nn.Module) -> int:
    """Numbers the model stores: every weight, bias and scale, a pruned matrix's kept values only (its bit mask
    is not counted)."""
    return sum(t.numel() for k, t in stored_tensors(model).items() if not k.endswith("mask_bits"))


def stored_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights in a safetensors file (header included)."""
    return len(safetensors_bytes({k: t.contiguous() for k, t in stored_tensors(model).items()}))


def measure(models: dict[str, nn.Module], task, batch: torch.Tensor, repeats: int, warmup: int,
            max_batches: int | None = None) -> list[dict]:
    """One row per model: its counts, its speed on `batch` ((T, B) token ids, timed interleaved with the others,
    median of `repeats`) and its validation metrics; ratios against the first model."""
    for m in models.values():
        m.eval()

    def infer(m):
        def run():
            with torch.no_grad():
                m(batch)
        return run

    timing = time_interleaved({name: infer(m) for name, m in models.items()}, repeats, warmup)
    rows = []
    for name, m in models.items():
        metrics = task.evaluate(m, max_batches=max_batches)
        rows.append({"model": name, "parameters": stored_numbers(m), "bytes": stored_bytes(m),
                     "seconds": timing[name].median, "tokens_per_s": batch.numel() / timing[name].median,
                     "lstm_sparsity": sparsity(m), **metrics})
    base = rows[0]
    for row in rows:
        row["size_ratio"] = base["bytes"] / row["bytes"]
        row["speed_ratio"] = base["seconds"] / row["seconds"]
        row["loss_change"] = row["valid_loss"] / base["valid_loss"] - 1
        row["ppl_change"] = math.exp(row["valid_loss"] - base["valid_loss"]) - 1
    return rows


def markdown(rows: list[dict]) -> str:
    cells = [[r["model"], f"{r['parameters']:,}", f"{r['bytes'] / 2**20:.2f}", f"{r['size_ratio']:.2f}x",
              f"{r['tokens_per_s']:,.0f}", f"{r['speed_ratio']:.2f}x", f"{r['lstm_sparsity']:.1%}",
              f"{r['valid_loss']:.4f}", f"{r['loss_change']:+.2%}"] for r in rows]
    return table(list(COLUMNS), cells) + "\n"
