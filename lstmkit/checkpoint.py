"""Checkpoints: one safetensors file with every tensor, and the rest of the run's state as JSON in its header.

A checkpoint holds a nested state (config, vocabulary, weights, optimizer and scheduler state, RNG
state, step, metrics). Tensors anywhere in it are stored as safetensors entries; everything else is
JSON in the file's metadata. Nothing is pickled, so loading never executes code. Files are written
atomically (temporary file in the same folder, fsync, os.replace): a crash leaves the previous file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

FORMAT, VERSION = "lstmkit-checkpoint", 1
LATEST = "latest.safetensors"  # a run folder's most recent checkpoint


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Replace `path` by `data` all at once: readers see the old file or the new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a run folder is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_path(run_or_file: str | Path) -> Path:
    """A run folder's latest checkpoint, or the checkpoint file given."""
    path = Path(run_or_file)
    return path / LATEST if path.is_dir() else path


def _child(name: str, key) -> str:
    return f"{name}/{key}" if name else str(key)


def _split(tree, name: str, tensors: dict[str, torch.Tensor]):
    """JSON-able copy of `tree` with each tensor moved into `tensors` and replaced by a reference."""
    if isinstance(tree, torch.Tensor):
        tensors[name] = tree.detach().cpu().contiguous().clone()  # clone: tied weights share storage
        return {"__tensor__": name}
    if isinstance(tree, dict):
        if all(isinstance(k, str) for k in tree):
            return {k: _split(v, _child(name, k), tensors) for k, v in tree.items()}
        return {"__items__": [[k, _split(v, _child(name, k), tensors)] for k, v in tree.items()]}  # e.g. int keys
    if isinstance(tree, (list, tuple)):
        return [_split(v, _child(name, i), tensors) for i, v in enumerate(tree)]
    return tree


def _join(tree, tensors: dict[str, torch.Tensor]):
    """Inverse of `_split`."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__items__" in tree:
            return {k: _join(v, tensors) for k, v in tree["__items__"]}
        return {k: _join(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    return tree


def save_checkpoint(path: str | Path, state: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, "", tensors)  # tensor names are paths in the state: 'trainer/model/decoder.weight'
    metadata = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(tree)}
    atomic_write(path, safetensors_bytes(tensors, metadata))


def load_checkpoint(path: str | Path) -> dict:
    """The state saved by `save_checkpoint`; ValueError naming the problem for any other file."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; expected a run folder containing {LATEST} "
                                "or a checkpoint file written by `lstmkit train`")
    expected = "expected an lstmkit checkpoint (a safetensors file written by `lstmkit train`)"
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors reports truncation and foreign bytes as SafetensorError
        raise ValueError(f"{path} is not readable: {e}; {expected}") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file without lstmkit metadata (format={metadata.get('format')!r}); "
                         f"{expected}")
    if metadata.get("version") != str(VERSION):
        raise ValueError(f"{path} has checkpoint version {metadata.get('version')}; expected version {VERSION}")
    try:
        return _join(json.loads(metadata["state"]), tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} has a damaged state header ({e!r}); {expected}") from None


def load_weights(module: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """`module.load_state_dict(weights)`, with an error naming every missing, extra or misshapen tensor."""
    own = module.state_dict()
    problems = [f"missing {k}" for k in own if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in own]
    problems += [f"{k} has shape {tuple(weights[k].shape)}, the model expects {tuple(v.shape)}"
                 for k, v in own.items() if k in weights and weights[k].shape != v.shape]
    if problems:
        raise ValueError(f"{source} does not fit the model: {'; '.join(problems[:5])}"
                         + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    module.load_state_dict(weights)
