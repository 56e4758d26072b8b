"""Model, data and training configuration as dataclasses; the CLI flags are built from them.

Each field is declared with `option(default, help)`: the help string is the field's comment, so
every default lives here once and every flag documents itself. Field `hidden_size` becomes the flag
`--hidden-size` (plus any short aliases, e.g. `--hidden`).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields
from typing import Callable


def option(default, help: str, choices: tuple | Callable[[], tuple] | None = None, aliases: tuple = ()):
    """A dataclass field carrying its CLI help, allowed values and short flag aliases."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "aliases": aliases})


def choices_of(f: dataclasses.Field) -> tuple | None:
    choices = f.metadata["choices"]
    return choices() if callable(choices) else choices


def structures() -> tuple[str, ...]:
    """The registered LSTM structures (imported late: the registry builds models, which use these configs)."""
    from lstmkit.models.structure import STRUCTURES
    return tuple(STRUCTURES)


class Checked:
    """Base of the configs: allowed values and non-negative numbers are checked on construction."""

    def __post_init__(self):
        _check(self)


@dataclass
class ModelConfig(Checked):
    """The network: embedding, LSTM and output sizes."""

    hidden_size: int = option(512, "LSTM hidden units per layer (H)", aliases=("hidden",))
    num_layers: int = option(1, "stacked LSTM layers", aliases=("layers",))
    proj_size: int = option(0, "LSTM projection size P (LSTMP); 0: no projection", aliases=("proj",))
    embedding_dim: int = option(64, "token embedding size; 0: the LSTM output size (P or H), as weight tying needs",
                                aliases=("emb",))
    dropout: float = option(0.0, "dropout on the embedding, between LSTM layers and before the decoder")
    tie_weights: bool = option(False, "share one matrix between embedding and decoder (embedding size == P or H)",
                               aliases=("tie",))
    structure: str = option("dense", "how the LSTM's weight matrices are stored", choices=structures)


@dataclass
class DataConfig(Checked):
    """What is learned, from which text, in which batches."""

    task: str = option("lm", "what to learn: a language model, or a long-memory task (adding problem, copy memory)",
                       choices=("lm", "adding", "copy"))
    data: str = option("", "text file (split 90/10 train/valid) or folder with train.txt, valid.txt [, test.txt]; "
                           "empty: the English text of Python's pydoc topics")
    level: str = option("char", "language-model tokens: characters, or whitespace-separated words (with <unk>)",
                        choices=("char", "word"))
    seq_len: int = option(100, "adding: sequence length T; copy: blank steps between the symbols and their recall")
    bptt: int = option(32, "language model: time steps T per chunk of truncated backpropagation through time")
    batch_size: int = option(32, "global batch B (sequences per step), split evenly across processes")


@dataclass
class TrainConfig(Checked):
    """Optimization, budget, evaluation and the run folder."""

    optimizer: str = option("adamw", "optimizer", choices=("adamw", "adam", "sgd"))
    lr: float = option(5e-3, "peak learning rate (for sgd try 1.0 to 20)")
    weight_decay: float = option(0.01, "decoupled weight decay (adamw), L2 penalty (adam, sgd)")
    schedule: str = option("cosine", "learning-rate schedule after warmup", choices=("cosine", "constant"))
    warmup: int = option(50, "steps of linear learning-rate warmup")
    min_lr_ratio: float = option(0.05, "cosine: final learning rate as a fraction of --lr")
    clip: float = option(1.0, "clip the gradient norm to this value; 0: no clipping")
    time_budget: float = option(90.0, "seconds of training (evaluation not counted); used when --steps is 0")
    steps: int = option(0, "optimizer steps to train; 0: train for --time-budget seconds")
    eval_interval: int = option(0, "steps between evaluations, each followed by a checkpoint; 0: ten over the budget")
    seed: int = option(1337, "random seed for initialization, dropout, task data and sampling")
    device: str = option("auto", "where to train; auto: cuda when available", choices=("auto", "cpu", "cuda"))
    out: str = option("", "run folder; empty: runs/<timestamp>")
    resume: str = option("", "continue the run in this folder from its latest checkpoint, with its settings; "
                             "training flags given here (e.g. a larger --steps or --time-budget) override")
    sample_length: int = option(300, "tokens generated at the end of a language-model run")
    dry_run: bool = option(False, "one tiny batch end to end, run folder included, in seconds")
    tensorboard: bool = option(False, "also log to TensorBoard in the run folder (needs the tensorboard package)")


CONFIGS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}  # saved with every run


@dataclass
class SampleConfig(Checked):
    """Text generation from a trained language model."""

    prompt: str = option("", "text to continue; empty: start at a line break")
    temperature: float = option(0.8, "softmax temperature; 0: always the most likely token")
    top_k: int = option(0, "sample only among the k most likely tokens; 0: among all")
    length: int = option(500, "tokens to generate")
    seed: int = option(0, "random seed for sampling")
    dry_run: bool = option(False, "generate a few tokens only")


@dataclass
class CompareConfig:
    """Configurations to compare, and where to put the results."""

    config: tuple = option(("hidden=256", "hidden=512", "hidden=256,layers=2", "hidden=512,proj=128"),
                           "a configuration to train, as comma-separated settings such as 'hidden=256,layers=2' "
                           "(any model, data or training flag); repeat the flag for several")
    out: str = option("", "output folder; empty: compare/<timestamp>")


def _check(config) -> None:
    for f in fields(config):
        value, choices = getattr(config, f.name), choices_of(f)
        if choices is not None and value not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(map(str, choices))}; given {value!r}")
        if isinstance(f.default, (int, float)) and not isinstance(f.default, bool) and value < 0:
            raise ValueError(f"{f.name} must be >= 0; given {value!r}")


def flag_names(f: dataclasses.Field) -> list[str]:
    return ["--" + name.replace("_", "-") for name in (f.name, *f.metadata["aliases"])]


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of the dataclass `cls` (except `skip`), in a group named after it."""
    group = parser.add_argument_group(cls.__name__, cls.__doc__)
    for f in fields(cls):
        if f.name in skip:
            continue
        kwargs = dict(dest=f.name, default=f.default, help=f.metadata["help"])
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(f.default, tuple):  # a repeatable flag, absent until given: argparse would append to a default
            kwargs.update(action="append", default=argparse.SUPPRESS,
                          help=f"{f.metadata['help']} (default: {' '.join(f.default)})")
        else:
            kwargs.update(type=type(f.default), choices=choices_of(f))
        group.add_argument(*flag_names(f), **kwargs)


def from_args(cls, args: argparse.Namespace, **overrides):
    """Build `cls` from parsed flags; fields without a flag (or a repeatable flag never given) keep their default."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
    return cls(**{**values, **overrides})


def from_dict(cls, values: dict, where: str = "config"):
    """Build `cls` from a dict (e.g. a saved config.json), naming any unknown field."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(known)}")
    return cls(**values)


def field_by_name(name: str, classes=tuple(CONFIGS.values())) -> tuple[type, str]:
    """Resolve a field name, flag name or alias ('hidden', 'num-layers', 'lr') to (class, field name)."""
    key = name.strip().lstrip("-").replace("-", "_")
    for cls in classes:
        for f in fields(cls):
            if key == f.name or key in f.metadata["aliases"]:
                return cls, f.name
    valid = sorted(n.lstrip("-") for cls in classes for f in fields(cls) for n in flag_names(f))
    raise ValueError(f"unknown setting {name!r}; expected one of {', '.join(valid)}")


def parse_value(cls, name: str, text: str):
    """Parse `text` into the type of field `name` of `cls` ('true'/'false' for booleans)."""
    default = next(f.default for f in fields(cls) if f.name == name)
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{name} expects true or false; given {text!r}")
        return text.lower() in ("true", "1", "yes")
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"{name} expects a{'n' if type(default) is int else ''} {type(default).__name__}; "
                         f"given {text!r}") from None
