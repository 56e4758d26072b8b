"""Checkpoints: one safetensors file with every tensor, and the rest of the run's state as JSON in its header.

A checkpoint holds a nested state (config, vocabulary, weights, optimizer and scheduler state, RNG
state, step, metrics). Tensors anywhere in it are stored as safetensors entries; everything else is
JSON in the file's metadata. Nothing is pickled, so loading never executes code. The header also holds a
SHA-256 of the whole file, so a truncated or flipped byte anywhere is refused. Files are written atomically
(temporary file in the same folder, fsync, os.replace): a crash leaves the previous file. A run folder keeps the
checkpoint before its latest one; loading the folder falls back to it, with a warning, when the latest is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as safetensors_tensors
from safetensors.torch import save as safetensors_bytes
from torch import nn

from lstmkit.runlock import temp_prefix

FORMAT, VERSION = "lstmkit-checkpoint", 2  # version 1 files (no checksum) are still read
LATEST = "latest.safetensors"  # a run folder's most recent checkpoint
PREVIOUS = "previous.safetensors"  # ... and the one before it
CHECKSUM, PLACEHOLDER = "sha256", "0" * 64  # the checksum is of the file with its own value read as PLACEHOLDER
MAX_DEPTH = 64  # nesting of the state's JSON (a run's is under 10): deeper is refused before it is parsed
UNVERIFIED = "--allow-unverified"  # the flag that lets a version-1 checkpoint (no checksum) load


def atomic_write(path: str | Path, data: bytes | str, keep: str | Path | None = None) -> None:
    """Replace `path` by `data` all at once: readers see the old file or the new one, never a part. With `keep`,
    the old file is first kept under that name. An OSError (e.g. a full disk) names the path and leaves the file
    there as it was, with no temporary file behind."""
    path, data = Path(path), data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")  # pid in its name
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a run folder is meant to be shared
        if keep is not None and path.is_file():
            _keep(path, Path(keep))
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        message = (f"could not write {path} ({len(data):,} bytes): {e.strerror or e}; expected room for the file "
                   f"(is the disk full?). The file there is unchanged")
        raise (OSError(e.errno, message) if e.errno else OSError(message)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _keep(path: Path, keep: Path) -> None:
    """`keep` becomes the file now at `path`: a hard link, so `path` never disappears (a rename where links fail)."""
    link = keep.with_name(f"{temp_prefix(keep.name)}link.tmp")
    try:
        os.link(path, link)
    except OSError:
        os.replace(path, keep)  # until the new file lands, loading the folder falls back to `keep`
        return
    try:
        os.replace(link, keep)
    except BaseException:
        link.unlink(missing_ok=True)
        raise


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so its renames survive a power loss (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def _digest(data: bytes | memoryview, value: str) -> str:
    """SHA-256 of a checkpoint file whose header stores the checksum `value`, that value read as PLACEHOLDER."""
    data, field = memoryview(data), f'"{CHECKSUM}":"{value}"'.encode()
    start = bytes(data[:8 + int.from_bytes(data[:8], "little")]).find(field)  # in the JSON header only
    if start < 0:
        return hashlib.sha256(data).hexdigest()
    start += len(field) - len(value) - 1
    digest = hashlib.sha256(data[:start])
    digest.update(PLACEHOLDER.encode())
    digest.update(data[start + len(value):])
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: dict, keep: str | Path | None = None) -> None:
    """Write `state` to `path` atomically; with `keep`, the checkpoint it replaces is kept under that name."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, "", tensors)  # tensor names are paths in the state: 'trainer/model/decoder.weight'
    metadata = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(tree), CHECKSUM: PLACEHOLDER}
    data = safetensors_bytes(tensors, metadata)
    digest = _digest(data, PLACEHOLDER)  # then stored in the placeholder's place, which leaves it unchanged
    data = data.replace(f'"{CHECKSUM}":"{PLACEHOLDER}"'.encode(), f'"{CHECKSUM}":"{digest}"'.encode(), 1)
    atomic_write(path, data, keep)


def load_checkpoint(path: str | Path, allow_unverified: bool = False) -> dict:
    """The state saved by `save_checkpoint`; ValueError naming the problem for any other file. For a run folder,
    its latest checkpoint, or, after a warning naming what is wrong with that one, the previous one. A version-1
    file (no checksum, so damage goes unseen) is refused unless `allow_unverified`."""
    path = Path(path)
    if not path.is_dir():
        return _load(path, allow_unverified)
    try:
        return _load(path / LATEST, allow_unverified)
    except (ValueError, FileNotFoundError) as e:
        if not (path / PREVIOUS).is_file():
            raise
        problem = e
    try:
        state = _load(path / PREVIOUS, allow_unverified)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"{path} holds no usable checkpoint: {problem}; and {e}") from None
    if os.environ.get("RANK", "0") == "0":  # once per run, not once per torchrun process
        print(f"lstmkit: warning: {problem}. Using {path / PREVIOUS}, the checkpoint before it", file=sys.stderr)
    return state


def _depth(text: str) -> int:
    """How deeply the JSON `text` nests its arrays and objects (brackets inside strings not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = char == "\\" and not escaped, in_string and (char != '"' or escaped)
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _load(path: Path, allow_unverified: bool = False) -> dict:
    """One checkpoint file's state, checked."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; expected a run folder containing {LATEST} "
                                "or a checkpoint file written by `lstmkit train`")
    expected = "expected an lstmkit checkpoint (a safetensors file written by `lstmkit train`)"
    data = path.read_bytes()
    try:
        tensors = safetensors_tensors(data)
        metadata = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
    except Exception as e:  # safetensors reports truncation and foreign bytes as SafetensorError
        raise ValueError(f"{path} is not readable: {e}; {expected}") from None
    stored = metadata.get(CHECKSUM)
    if stored is not None and (found := _digest(data, stored)) != stored:
        raise ValueError(f"{path} is damaged: its SHA-256 checksum does not match (expected {stored}, as stored in "
                         f"its header; found {found}); expected the file exactly as lstmkit wrote it")
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file without lstmkit metadata (format={metadata.get('format')!r}); "
                         f"{expected}")
    if metadata.get("version") not in ("1", str(VERSION)):
        raise ValueError(f"{path} has checkpoint version {metadata.get('version')}; expected version 1 to {VERSION}")
    if stored is None and metadata["version"] != "1":
        raise ValueError(f"{path} has no {CHECKSUM} checksum in its header, as checkpoint version {VERSION} has; "
                         f"{expected}")
    if stored is None and not allow_unverified:
        raise ValueError(f"{path} is an unverified checkpoint (version 1: no {CHECKSUM} checksum, so damage or "
                         f"tampering cannot be detected); expected a version {VERSION} checkpoint, or {UNVERIFIED} to "
                         "load it anyway")
    if not isinstance(metadata.get("state"), str) or (depth := _depth(metadata["state"])) > MAX_DEPTH:
        raise ValueError(f"{path} has a state header nested {depth if isinstance(metadata.get('state'), str) else '?'}"
                         f" levels deep; expected at most {MAX_DEPTH} (a run's is under 10); {expected}")
    try:
        return _join(json.loads(metadata["state"]), tensors)
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"{path} has a damaged state header ({e!r}); {expected}") from None


def load_weights(module: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """`module.load_state_dict(weights)`, with an error naming every missing, extra, misshapen or mistyped tensor
    (load_state_dict would cast an int64 or float16 tensor silently)."""
    own = module.state_dict()
    problems = [f"missing {k}" for k in own if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in own]
    problems += [f"{k} is not a tensor ({type(weights[k]).__name__})" for k in own
                 if k in weights and not isinstance(weights[k], torch.Tensor)]
    problems += [f"{k} has shape {tuple(weights[k].shape)}, the model expects {tuple(v.shape)}"
                 for k, v in own.items() if isinstance(weights.get(k), torch.Tensor) and weights[k].shape != v.shape]
    problems += [f"{k} has dtype {weights[k].dtype}, the model expects {v.dtype}"
                 for k, v in own.items() if isinstance(weights.get(k), torch.Tensor)
                 and weights[k].shape == v.shape and weights[k].dtype != v.dtype]
    if problems:
        raise ValueError(f"{source} does not fit the model: {'; '.join(problems[:5])}"
                         + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    module.load_state_dict(weights)
