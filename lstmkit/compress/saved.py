"""Compressed checkpoints: a training checkpoint's config, metadata and weights plus the compression recipe.

The file is an ordinary lstmkit checkpoint (safetensors + JSON header, written atomically, never pickled) with a
"compress" section {"recipe": [...], "source": ...}. Loading builds the model from the config, replays the recipe
on it (so it has the compressed maps, with the right shapes) and loads the weights. Pruned matrices are stored
compactly: the kept values in order and the mask as bits (`mask_bits`, 8 entries a byte), not dense + bool mask.
"""
from __future__ import annotations

import torch
from torch import nn

from lstmkit import schema
from lstmkit.checkpoint import checkpoint_path, load_checkpoint, load_weights, save_checkpoint
from lstmkit.compress.recipe import apply_recipe

SECTION = "compress"
BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """bool (...) -> uint8 (ceil(n / 8),), most significant bit first."""
    flat = mask.flatten()
    flat = torch.cat((flat, flat.new_zeros(-len(flat) % 8)))
    return (flat.view(-1, 8).to(torch.uint8) * BITS).sum(1, dtype=torch.uint8)


def unpack_bits(bits: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    flat = (bits[:, None] & BITS).ne(0).flatten()  # (8 · len(bits),)
    return flat[:shape.numel()].view(shape)


def pack_sparse(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict -> stored form: each 'X.weight' with a bool 'X.mask' becomes 'X.values' and 'X.mask_bits'."""
    out = dict(weights)
    for key, mask in weights.items():
        prefix = key[:-len("mask")]
        if key.endswith(".mask") and mask.dtype == torch.bool and prefix + "weight" in weights:
            out[prefix + "values"] = out.pop(prefix + "weight")[mask]  # (nonzeros,), row-major order
            out[prefix + "mask_bits"] = pack_bits(out.pop(key))
    return out


def unpack_sparse(stored: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Inverse of `pack_sparse`, with the shapes of `model`'s state dict."""
    own, out = model.state_dict(), dict(stored)
    for key in stored:
        if key.endswith(".mask_bits"):
            prefix = key[:-len("mask_bits")]
            shape = own[prefix + "mask"].shape if prefix + "mask" in own else None
            if shape is None or prefix + "values" not in stored:
                continue  # load_weights names what does not fit
            mask = unpack_bits(out.pop(key), shape)
            values = out.pop(prefix + "values")
            if values.numel() != int(mask.sum()):
                raise ValueError(f"{prefix}values has {values.numel()} entries but its mask keeps {int(mask.sum())}")
            weight = torch.zeros(shape, dtype=values.dtype)
            weight[mask] = values
            out[prefix + "weight"], out[prefix + "mask"] = weight, mask
    return out


def save_compressed(path, model: nn.Module, configs: dict, metadata: dict, recipe: list[dict], source: str,
                    **extra) -> None:
    """Write a checkpoint of `model` that `load_compressed` (and `lstmkit compress` again) can read."""
    state = {"config": configs, "metadata": metadata, "trainer": {"model": pack_sparse(model.state_dict())},
             SECTION: {"recipe": recipe, "source": source, **extra}}
    save_checkpoint(path, state)


def read(path, allow_unverified: bool = False) -> tuple[dict, list[dict]]:
    """The checkpoint's state and its recipe ([] for an uncompressed training checkpoint); clear errors."""
    state = load_checkpoint(path, allow_unverified)
    source = str(checkpoint_path(path))
    schema.check_run(state, source)  # sections, configs and tensors (their shapes against the model: after the recipe)
    return state, recipe_of(state, source)


def recipe_of(state: dict, source: str) -> list[dict]:
    """The compression steps a checkpoint's state records: [] for an uncompressed training checkpoint."""
    recipe = state.get(SECTION, {}).get("recipe", [])
    if not isinstance(recipe, list):
        raise ValueError(f"{source} has a damaged compress section (recipe is {type(recipe).__name__})")
    return recipe


def load_into(model: nn.Module, state: dict, recipe: list[dict], source: str) -> nn.Module:
    """`model` (freshly built from the checkpoint's config) given the recipe's structure and the saved weights."""
    apply_recipe(model, recipe)
    load_weights(model, unpack_sparse(state["trainer"]["model"], model), source)
    return model
