"""Multi-process data parallelism through torch.distributed: `torchrun --nproc_per_node N -m lstmkit train`.

Every process trains on its share of the global batch; DistributedDataParallel averages the
gradients (gloo on CPU, nccl on CUDA). Rank 0 alone prints and writes the run folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lstmkit.models.task import map_state


@dataclass
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This process's part of a global batch of `batch_size` sequences."""
        if batch_size % self.world_size:
            raise ValueError(f"the global --batch-size must split evenly across {self.world_size} processes; "
                             f"given {batch_size}")
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over all processes."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather_rows(self, state):
        """The global batch of a carried state: tensors (or tuples of them) concatenated along dim 1 (B)."""
        if self.world_size == 1:
            return state

        def gather(t: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(t) for _ in range(self.world_size)]
            dist.all_gather(parts, t.contiguous())
            return torch.cat(parts, dim=1)  # (L, B, H)

        return map_state(gather, state)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was given, but no CUDA device is available; expected cpu or auto")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"--device must be cpu, cuda or auto; given {name!r}")
    return torch.device("cpu")


def setup(device: str) -> Context:
    """The process's rank, world size and device; joins the process group when started by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return Context(int(os.environ.get("RANK", "0")), world_size, resolved)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
