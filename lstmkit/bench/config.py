"""The benchmark's settings as one dataclass; `lstmkit bench` builds its flags from it (see lstmkit.config)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from lstmkit import config
from lstmkit.config import MAX_SIZE, SEED, Range, option


def studies() -> tuple[str, ...]:
    """The registered studies, lstmkit.bench.STUDIES (imported late: that package imports this module)."""
    from lstmkit.bench import STUDIES
    return tuple(STUDIES)


@dataclass
class BenchConfig(config.Checked):
    """What `lstmkit bench` measures, how often, and where it writes the results."""

    study: str = option("engine", "what to run: the main table of lstmkit.LSTM against torch.nn.LSTM (engine), "
                                  "the study of separate, fused and hoisted gate products (fusion), "
                                  "structured weights against a dense nn.LSTM (structures), pruning, quantization "
                                  "and distillation (compress), the validation loss `lstmkit train` reaches "
                                  "within a time budget (quality), that of --precision bf16 against fp32 "
                                  "(precision), `lstmkit forecast` against the classical baselines on three "
                                  "shipped series (forecast), or a layer-normalized layer's training cost against "
                                  "a plain one's (layer-norm)",
                        choices=studies)
    precision: str = option("fp32", "engine study: fp32, or bf16 (lstmkit against torch.nn.LSTM under CPU autocast "
                                     "training and with bf16 weights, each row's % of the bf16 dot-product ceiling), "
                                     "or int8 (lstmkit's int8 inference against torch.nn.LSTM in bf16 and fp32, each "
                                     "row's % of the int8 dot-product ceiling)",
                            choices=("fp32", "bf16", "int8"))
    shapes: str = option("S,M,L,XL", "engine study: comma-separated subset of the shapes S, M, L, XL")
    hidden: str = option("128,256,512,1024", "fusion study: comma-separated hidden sizes H (with I = H)")
    batch: int = option(32, "fusion study: batch size B", range=Range(1, MAX_SIZE))
    steps: int = option(64, "fusion study: sequence length T", range=Range(1, 10 ** 6))
    data: str = option("", "quality study: the text corpus, e.g. ../shared/data/tinyshakespeare.txt")
    budgets: str = option("", "quality study: comma-separated training budgets in seconds among its recipes' "
                              "(180, 1800); empty: all")
    repeats: int = option(5, "timed runs per measurement; the median is reported", range=Range(1, 1000))
    rounds: int = option(3, "engine study: times the whole table is measured, one round after the other; each "
                            "row reports the round with the median ratio and the range over the rounds (a shared "
                            "machine's slow spells last minutes, longer than one row)", range=Range(1, 100))
    warmup: int = option(1, "untimed runs before the timed ones", range=Range(0, 1000))
    threads: int = option(0, "torch threads; 0: every core this process may use", range=Range(0, 4096))
    tol: float = option(1e-4, "relative tolerance of the agreement gate on fp32 outputs and gradients",
                        range=Range(0, 1, low_open=True))
    seed: int = option(0, "seed for weights, inputs and packed lengths", range=SEED)
    device: str = option("cpu", "device to run on", choices=("cpu", "cuda"))
    quick: bool = option(False, "tiny shapes, 1 repeat, 1 thread: a smoke test for the test suite, not a measurement")
    json: str = option("", "also write the results as JSON to this path")
    plot: str = option("", "also write the PNG plot to this path")
    out: str = option("", "folder DIR: write DIR/<study>.json and DIR/<study>.png and rewrite this study's "
                          "section of BENCHMARKS.md (by default DIR/../BENCHMARKS.md)")
    markdown: str = option("", "the BENCHMARKS.md that --out updates; empty: the one in DIR's parent")

    def command(self) -> str:
        """The `lstmkit bench` command line that reproduces this configuration (non-default flags only)."""
        parts = ["lstmkit", "bench"]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                flag = "--" + f.name.replace("_", "-")
                parts += [flag] if value is True else [flag, str(value)]
        return " ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, BenchConfig)


def from_args(args: argparse.Namespace) -> BenchConfig:
    return config.from_args(BenchConfig, args)
