"""A run folder: config.json, <metadata>.json (e.g. vocab.json), latest.safetensors (and previous.safetensors, the
checkpoint before it), metrics.csv, curve.png, sample.txt.

Every file is rewritten atomically from the trainer's state, so the folder always describes one
consistent moment of the run; the checkpoint is the source of truth that `--resume` reads. A RunFolder is the
folder's one writer: it holds the folder's lock (lstmkit.runlock) until `close`.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from lstmkit.checkpoint import LATEST, PREVIOUS, atomic_write, load_checkpoint, save_checkpoint
from lstmkit.runlock import RunLock

LOSS_COLUMNS = ("train_loss", "valid_loss", "baseline_loss")


def new_run_path(out: str, prefix: str = "runs") -> Path:
    """`out`, or a fresh runs/<timestamp> folder."""
    return Path(out) if out else Path(prefix) / time.strftime("%Y%m%d-%H%M%S")


class RunFolder:
    def __init__(self, path: str | Path, tensorboard: bool = False, lock: RunLock | None = None):
        """Takes the folder's lock (FolderBusy if another process holds it), or `lock`, already held on it; the
        folder keeps it until `close`."""
        self.path = Path(path)
        self.lock = lock if lock is not None else RunLock(self.path).acquire()
        self.lock.remove_stale_temp_files()  # left by writers that were killed: the lock was free
        self.latest_ok = False  # whether latest.safetensors is known good (written by this process, or checked)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                self.lock.release()
                raise ValueError(f"--tensorboard needs the tensorboard package ({e}); expected "
                                 "`pip install tensorboard`, or run without --tensorboard") from None
            self.writer = SummaryWriter(str(self.path / "tensorboard"))

    @property
    def checkpoint(self) -> Path:
        return self.path / LATEST

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.path / name, text)

    def write_json(self, name: str, obj) -> None:
        self.write_text(name, json.dumps(obj, indent=2) + "\n")

    def save(self, state: dict, history: list[dict]) -> None:
        """Checkpoint first (the one it replaces kept as previous.safetensors), then the files derived from it."""
        save_checkpoint(self.checkpoint, state, self.path / PREVIOUS if self.keep_latest() else None)
        self.latest_ok = True
        self.write_metrics(history)
        if history:
            self.plot(history)
            if self.writer:
                for key, value in history[-1].items():
                    self.writer.add_scalar(key, value, history[-1]["step"])
                self.writer.flush()

    def keep_latest(self) -> bool:
        """Whether the checkpoint about to be replaced is good, so worth keeping: after resuming from the previous
        checkpoint because the latest was damaged, the damaged one must not take the good one's place."""
        if not self.latest_ok and self.checkpoint.is_file():
            try:
                load_checkpoint(self.checkpoint)
                self.latest_ok = True
            except ValueError:
                pass
        return self.latest_ok

    def write_metrics(self, history: list[dict]) -> None:
        """metrics.csv: one row per evaluation."""
        text = io.StringIO()
        if history:
            writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(history)
        atomic_write(self.path / "metrics.csv", text.getvalue())

    def plot(self, history: list[dict]) -> None:
        """curve.png: training and validation loss against steps."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        steps = [row["step"] for row in history]
        for key in LOSS_COLUMNS:
            if key in history[0]:
                ax.plot(steps, [row[key] for row in history], "--" if key.startswith("baseline") else ".-",
                        label=key.replace("_", " "))
        ax.set(xlabel="step", ylabel="loss", title=self.path.name)
        ax.grid(alpha=0.3)
        ax.legend()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        atomic_write(self.path / "curve.png", buffer.getvalue())

    def close(self) -> None:
        try:
            if self.writer:
                self.writer.close()
        finally:
            self.lock.release()
