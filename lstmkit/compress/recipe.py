"""A compression as data: the steps (convert, prune, quantize) applied to a model, saved as JSON with the result
and replayed on a freshly built model to give it the compressed structure before its weights are loaded."""
from __future__ import annotations

import dataclasses

from torch import nn

from lstmkit import maps
from lstmkit.compress.convert import convert
from lstmkit.compress.prune import prune
from lstmkit.compress.quantize import quantize
from lstmkit.compress.targets import lstms

# `--to NAME[:ARG]`: NAME -> (spec class, the matrices it structures); ARG fills the spec's first field
STRUCTURES = {
    "lowrank": (maps.LowRank, ("input", "recurrent")),
    "grouped": (maps.Grouped, ("input", "recurrent")),
    "circulant": (maps.Circulant, ("input", "recurrent")),
    "diagonal": (maps.Diagonal, ("recurrent",)),
}


def _usage() -> str:
    forms = []
    for name, (cls, _) in STRUCTURES.items():
        first = dataclasses.fields(cls)[0]
        forms.append(name if first.default is not dataclasses.MISSING else f"{name}:{first.name.upper()}")
    return ", ".join(forms)


def parse_structure(text: str) -> dict[str, maps.MapSpec]:
    """'lowrank:64' -> {'input': LowRank(rank=64), 'recurrent': LowRank(rank=64)}: `convert` keywords."""
    name, sep, arg = text.partition(":")
    if name not in STRUCTURES:
        raise ValueError(f"unknown structure {name!r} in {text!r}; expected one of {_usage()}")
    cls, targets = STRUCTURES[name]
    first = dataclasses.fields(cls)[0]
    if not sep and first.default is dataclasses.MISSING:
        raise ValueError(f"structure {name!r} needs an argument, {name}:{first.name.upper()}; given {text!r}")
    try:
        spec = cls(**({first.name: int(arg) if arg.isdigit() else float(arg)} if sep else {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad structure {text!r}: {e}; expected one of {_usage()}") from None
    return {target: spec for target in targets}


def apply_step(model: nn.Module, step: dict) -> nn.Module:
    """Apply one recipe step to `model` in place: {"op": "convert", "to": "lowrank:64"},
    {"op": "prune", "sparsity": 0.8, "mode": "balanced", "block": 1}, {"op": "quantize", "mode": "int8"}."""
    op = step.get("op")
    if op == "convert":
        specs = parse_structure(step["to"])
        for parent, name, lstm in lstms(model):
            setattr(parent, name, convert(lstm, **specs)[0])
    elif op == "prune":
        prune(model, step["sparsity"], step.get("mode", "unstructured"), step.get("block", 1))
    elif op == "quantize":
        quantize(model, step["mode"])
    else:
        raise ValueError(f"unknown compression step {step!r}; expected op convert, prune or quantize")
    return model


def apply_recipe(model: nn.Module, recipe: list[dict]) -> nn.Module:
    for step in recipe:
        apply_step(model, step)
    return model


def describe(recipe: list[dict]) -> str:
    """'convert lowrank:64, prune 0.8 balanced, quantize int8'"""
    words = {"convert": lambda s: s["to"], "prune": lambda s: f"{s['sparsity']:g} {s.get('mode', 'unstructured')}",
             "quantize": lambda s: s["mode"]}
    return ", ".join(f"{s['op']} {words[s['op']](s)}" for s in recipe) or "none"
