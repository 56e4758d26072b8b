"""Generate text with a trained language model: lstmkit sample RUN_DIR_OR_CHECKPOINT --prompt ... --length N."""
from __future__ import annotations

import argparse

import torch

from lstmkit import config, schema
from lstmkit.checkpoint import checkpoint_path, load_checkpoint
from lstmkit.compress import saved
from lstmkit.config import SampleConfig
from lstmkit.data import Vocab
from lstmkit.errors import report_errors
from lstmkit.models import LanguageModel

DRY_RUN_LENGTH = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder (its latest checkpoint) or checkpoint file")
    config.add_arguments(parser, SampleConfig)


def load_language_model(path: str, allow_unverified: bool = False) -> tuple[LanguageModel, Vocab]:
    """The language model and vocabulary saved in a run folder or checkpoint file, checked before it is built."""
    source = str(checkpoint_path(path))
    state = load_checkpoint(path, allow_unverified)
    configs = schema.configs(state, source, ("data",))
    if configs["data"].task != "lm" or "vocab" not in schema.section(state, "metadata", dict, source):
        raise ValueError(f"{source} is a checkpoint of the {configs['data'].task!r} task; expected a language model "
                         "(task 'lm')")
    vocab = Vocab.from_dict(state["metadata"]["vocab"])
    recipe = saved.recipe_of(state, source)
    build = None if recipe else (lambda cfg: LanguageModel(len(vocab), cfg))  # a compressed one: shapes after
    model = LanguageModel(len(vocab), schema.check_run(state, source, build)["model"])
    saved.load_into(model, state, recipe, source)  # a compressed run: its structure first
    return model.eval(), vocab


@report_errors
def main(args: argparse.Namespace) -> int:
    cfg = config.from_args(SampleConfig, args)
    model, vocab = load_language_model(args.checkpoint, cfg.allow_unverified)
    prompt = vocab.encode_prompt(cfg.prompt)
    ids = model.generate(prompt, DRY_RUN_LENGTH if cfg.dry_run else cfg.length, cfg.temperature, cfg.top_k,
                         torch.Generator().manual_seed(cfg.seed))
    print(cfg.prompt + (vocab.separator if cfg.prompt else "") + vocab.decode(ids.tolist()))
    return 0
