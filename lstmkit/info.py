"""Describe this install: versions, CPU, the native engine's build, and the engine each layer kind trains on."""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch

import lstmkit
from lstmkit.config import ModelConfig
from lstmkit.engine import build, native
from lstmkit.errors import report_errors
from lstmkit.models.structure import STRUCTURES, dense
from lstmkit.packing import pack_padded_sequence


@dataclass
class Info:
    """What `lstmkit info` reports (its --json object)."""

    lstmkit: str
    torch: str
    torch_path: str  # the torch the native engine is built against
    python: str
    numpy: str
    cpu_capability: str  # torch.backends.cpu.get_cpu_capability(): the vector code PyTorch (and lstmkit) runs
    threads: int  # torch.get_num_threads()
    native: bool  # whether the native engine is built and used
    native_reason: str | None  # why not, when native is false
    native_build: str | None  # the native engine's build folder
    native_log: str | None  # a failed build's full output
    engines: dict[str, str]  # layer kind -> the engine impl="auto" trains it on ("native" or "fused")


def layer_kinds(cfg: ModelConfig, input_size: int) -> dict[str, tuple[torch.nn.Module, bool]]:
    """Each kind of layer: name -> (a one-layer LSTM, whether its input is packed). The dense variants, then every
    registered structure (lstmkit/models/structure.py)."""
    kinds = {"dense": (dense(cfg, input_size), False),
             "projection": (dense(dataclasses.replace(cfg, proj_size=cfg.hidden_size // 4), input_size), False),
             "packed": (dense(cfg, input_size), True),
             "peephole": (dense(cfg, input_size, peephole=True), False)}
    return kinds | {name: (make(cfg, input_size), False) for name, make in STRUCTURES.items() if name != "dense"}


def engine(lstm: torch.nn.Module, packed: bool, T: int = 4, B: int = 3) -> str:
    """The engine impl="auto" runs layer 0 of `lstm` on in CPU float32 training, asked of the dispatch itself."""
    H, P = lstm.hidden_size, lstm.proj_size or lstm.hidden_size
    x = torch.randn(T, B, lstm.input_size)  # (T, B, I)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([T, T - 1, 1][:B])).data  # (N, I) packed rows
    else:
        x = x.reshape(T * B, -1)  # (T*B, I)
    h0, c0 = torch.zeros(B, P), torch.zeros(B, H)
    direction = lstm._direction(0, "")
    direction.pop("reverse")
    return "native" if native.available() and native.supports(x, h0, c0, **direction) else "fused"


def input_size(cfg: ModelConfig) -> int:
    return cfg.embedding_dim or cfg.proj_size or cfg.hidden_size  # embedding 0: the LSTM output size


def collect(cfg: ModelConfig | None = None) -> Info:
    cfg = cfg or ModelConfig()
    status = build.status()  # builds the native engine on first use
    with torch.no_grad():
        engines = {name: engine(lstm, packed) for name, (lstm, packed) in layer_kinds(cfg, input_size(cfg)).items()}
    return Info(lstmkit=lstmkit.__version__, torch=torch.__version__, torch_path=str(Path(torch.__file__).parent),
                python=platform.python_version(), numpy=numpy.__version__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
                native=status.module is not None, native_reason=status.error,
                native_build=None if status.directory is None else str(status.directory),
                native_log=None if status.log is None else str(status.log), engines=engines)


def table(info: Info, cfg: ModelConfig) -> str:
    """The human form: one aligned `name  value` line per fact, then one per layer kind."""
    native_line = "built, used" if info.native else f"not used: {info.native_reason}"
    rows = [("lstmkit", info.lstmkit), ("torch", f"{info.torch} ({info.torch_path})"), ("python", info.python),
            ("numpy", info.numpy), ("cpu capability", info.cpu_capability), ("threads", str(info.threads)),
            ("native engine", native_line)]
    rows += [(label, getattr(info, key)) for label, key in (("native build", "native_build"),
                                                           ("native build log", "native_log")) if getattr(info, key)]
    rows.append((f"engine, CPU float32 training (H={cfg.hidden_size}, I={input_size(cfg)}):", ""))
    rows += [(f"  {name}", eng) for name, eng in info.engines.items()]
    width = max(len(name) for name, value in rows if value)
    return "\n".join(f"{name:<{width}}  {value}".rstrip() for name, value in rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--dry-run", action="store_true", help="accepted as by every command; info is quick anyway")


@report_errors
def main(args: argparse.Namespace) -> int:
    cfg = ModelConfig()  # the sizes `lstmkit train` runs by default
    info = collect(cfg)
    print(json.dumps(dataclasses.asdict(info)) if args.json else table(info, cfg))
    return 0
