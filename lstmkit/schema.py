"""The schema of a run checkpoint's state, checked before any model is built: sections, types, ranges, shapes.

`check_run(state, source)` refuses, with a message naming the field, a state whose sections are missing or of the
wrong type, whose configs fail their fields' types and ranges (lstmkit.config: structure names come from the one
registry, lstmkit.models.structure), whose RNG state has the wrong size or dtype, or whose stored weights do not
have the shapes and dtypes of the model its config describes (built on the meta device, so nothing is allocated).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lstmkit import config
from lstmkit.config import CONFIGS, ModelConfig

TRAINER_NUMBERS = {"step": int, "tokens": int, "loss_steps": int, "next_eval_at": float, "elapsed": float,
                   "loss_sum": float}  # the trainer's counters a resumed run continues from
RNG_BYTES = torch.get_rng_state().numel()  # the CPU generator's state: a fixed-size uint8 vector


def section(state, path: str, kind: type, source: str):
    """state[a][b]... for path 'a/b', which must exist and be a `kind`; ValueError naming the path otherwise."""
    value = state
    for key in path.split("/"):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"{source} has no {path!r} section; expected an lstmkit training checkpoint "
                             f"(config, metadata and trainer sections)")
        value = value[key]
    if not isinstance(value, (int, float) if kind is float else kind) or (kind in (int, float)
                                                                        and isinstance(value, bool)):
        raise ValueError(f"{source}: {path} is {type(value).__name__} {str(value)[:40]!r}; expected "
                         f"{'a number' if kind is float else kind.__name__}")
    return value


def configs(state, source: str, names=tuple(CONFIGS), optional=("train",)) -> dict:
    """The state's configs, each built (so checked: types, ranges, choices) from its saved dict; an `optional` one
    that is absent (a compressed checkpoint may omit the training settings) gets its defaults."""
    section(state, "config", dict, source)
    return {name: config.from_dict(CONFIGS[name], {} if name in optional and name not in state["config"] else
                                   section(state, f"config/{name}", dict, source), f"{source} {name} config")
            for name in names}


def weights(state, source: str) -> dict[str, torch.Tensor]:
    """trainer/model: a dict of tensors, named by string."""
    stored = section(state, "trainer/model", dict, source)
    for key, value in stored.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{source}: trainer/model/{key} is {type(value).__name__}; expected a tensor")
    return stored


def trainer(state, source: str) -> None:
    """The trainer's counters, optimizer section and RNG state (what `train --resume` continues from)."""
    for key, kind in TRAINER_NUMBERS.items():
        value = section(state, f"trainer/{key}", kind, source)
        if not value >= 0 or value != value or abs(value) == float("inf"):
            raise ValueError(f"{source}: trainer/{key} is {value!r}; expected a finite number >= 0")
    section(state, "trainer/history", list, source)
    section(state, "trainer/optimizer/param_groups", list, source)
    section(state, "trainer/optimizer/state", dict, source)
    rng = section(state, "trainer/rng", torch.Tensor, source)
    if rng.dtype != torch.uint8 or tuple(rng.shape) != (RNG_BYTES,):
        raise ValueError(f"{source}: trainer/rng is a {rng.dtype} tensor of shape {tuple(rng.shape)}; expected the "
                         f"CPU generator's state, a torch.uint8 tensor of shape ({RNG_BYTES},)")
    cuda = state["trainer"].get("cuda_rng")
    if cuda is not None and (not isinstance(cuda, torch.Tensor) or cuda.dtype != torch.uint8 or cuda.dim() != 1):
        raise ValueError(f"{source}: trainer/cuda_rng is {getattr(cuda, 'dtype', type(cuda).__name__)}; expected a "
                         "1-D torch.uint8 tensor (a CUDA generator's state)")


def fits(build: Callable[[], nn.Module], stored: dict[str, torch.Tensor], source: str) -> None:
    """The model `build` makes (on the meta device: no memory) has exactly the stored tensors' names, shapes and
    dtypes; ValueError naming every one that differs."""
    with torch.device("meta"):
        own = build().state_dict()
    problems = [f"missing {k}" for k in own if k not in stored]
    problems += [f"unexpected {k}" for k in stored if k not in own]
    for key, value in own.items():
        if key in stored and stored[key].shape != value.shape:
            problems.append(f"{key} has shape {tuple(stored[key].shape)}, the model expects {tuple(value.shape)}")
        elif key in stored and stored[key].dtype != value.dtype:
            problems.append(f"{key} has dtype {stored[key].dtype}, the model expects {value.dtype}")
    if problems:
        raise ValueError(f"{source} does not fit the model its config describes: {'; '.join(problems[:5])}"
                         + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))


def check_run(state, source: str, build: Callable[[ModelConfig], nn.Module] | None = None,
              resume: bool = False) -> dict:
    """The checked configs of a run checkpoint's state. `build(model_config)` makes its (uncompressed) model, whose
    shapes the stored weights must have; `resume`: the trainer's state must be complete too."""
    if not isinstance(state, dict):
        raise ValueError(f"{source} holds a {type(state).__name__}; expected an lstmkit training checkpoint")
    section(state, "metadata", dict, source)
    checked = configs(state, source, optional=() if resume else ("train",))
    stored = weights(state, source)
    if resume:
        trainer(state, source)
    if build is not None:
        fits(lambda: build(checked["model"]), stored, source)
    return checked
