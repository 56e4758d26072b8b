"""One writer per run folder: an OS lock on DIR/.lstmkit.lock, held for a writing command's whole life.

The lock is flock(2) on POSIX and msvcrt's lock on one byte past the holder record on Windows (a path this
repository's CI does not run). The lock file names its holder (pid, host, command, start time) so a refused command
can say who holds the folder. The OS releases the lock when the holder exits, even by SIGKILL; a lock file left behind is then free and reused.
Temporary files in the folder carry their writer's pid (`.NAME.PID.RANDOM.tmp`): the writer removes its own, and
whoever takes the lock next removes the ones left by writers that are gone (their lock was free).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import fcntl

    def _try_lock(fd: int) -> bool:
        """Take the OS lock on the open file `fd` without waiting; False if another process holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    _REMOVE_WHILE_OPEN = True  # POSIX: unlink, then close (a waiting opener sees the file is gone and retries)
except ImportError:  # Windows
    import msvcrt

    _LOCKED_BYTE = 1 << 30  # far past the holder record: a locked byte on Windows cannot be read by others

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _LOCKED_BYTE, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    _REMOVE_WHILE_OPEN = False  # Windows cannot remove an open file: the free lock file is left for the next holder

LOCK = ".lstmkit.lock"
TEMP = re.compile(r"^\..+\.(?P<pid>\d+)\.[^.]+\.tmp$")  # a temporary file of temp_prefix(...), and its writer's pid


def _read_all(fd: int) -> bytes:
    """The holder record in the lock file `fd`, read from its start."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 1 << 16)


def temp_prefix(name: str) -> str:
    """The start of a temporary file's name for the file `name`, naming this process: `.NAME.PID.`."""
    return f".{name}.{os.getpid()}."


def temp_owner(name: str) -> int | None:
    """The pid of the process that wrote the temporary file `name`; None for a name without one."""
    match = TEMP.match(name)
    return int(match["pid"]) if match else None


class FolderBusy(ValueError):
    """A run folder another process is writing (a ValueError: commands report it as one line, exit code 2)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a run folder's lock, as its lock file says."""

    pid: int
    host: str
    command: str
    started: str

    @classmethod
    def me(cls) -> "Holder":
        return cls(os.getpid(), socket.gethostname(), _command(), time.strftime("%Y-%m-%d %H:%M:%S"))

    @classmethod
    def read(cls, text: str) -> "Holder | None":
        try:
            fields = json.loads(text)
            return cls(int(fields["pid"]), str(fields["host"]), str(fields["command"]), str(fields["started"]))
        except (ValueError, KeyError, TypeError):
            return None  # not yet written by a holder that has just taken the lock, or not a lock file of ours

    def describe(self) -> str:
        host = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"process {self.pid}{host} (`{self.command}`, since {self.started})"


def _command() -> str:
    """This process's command line, as the user typed it for `lstmkit ...` / `python -m lstmkit ...`."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("__main__.py", "lstmkit", "cli.py"):
        program = "lstmkit"
    return shlex.join([program, *sys.argv[1:]])


class RunLock:
    """The lock of one run folder; `acquire` takes it or raises FolderBusy naming the holder, `release` frees it.
    Also a context manager."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.fd: int | None = None
        self.created = False  # whether acquire made the folder: release removes it again if it stays empty

    def acquire(self) -> "RunLock":
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0),
                         0o644)
            try:
                locked = _try_lock(fd)
                if not locked:
                    text = _read_all(fd).decode(errors="replace")
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                os.close(fd)
                self.created = False
                raise FolderBusy(self._busy(Holder.read(text)))
            if self._same_file(fd):
                self.fd = fd
            else:  # the holder released and removed the file between our open and flock: lock the new one
                os.close(fd)
        try:
            data = json.dumps(asdict(Holder.me())).encode() + b"\n"
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
            os.write(self.fd, data)
        except BaseException:
            self.release()
            raise
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _busy(self, holder: Holder | None) -> str:
        who = holder.describe() if holder else "another process"
        return (f"{self.folder} is in use by {who}; expected one writer per run folder: wait for it to end or "
                f"stop it, or give another folder")

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        """Remove the lock file, then free the lock (a process that opened the old file sees it is gone and
        retries)."""
        if self.fd is None:
            return
        if _REMOVE_WHILE_OPEN and self._same_file(self.fd):
            self.path.unlink(missing_ok=True)
        os.close(self.fd)  # frees the OS lock
        self.fd = None
        if self.created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only if empty: a command that failed before writing anything

    def remove_stale_temp_files(self) -> list[str]:
        """Remove the temporary files left in the folder by other processes; only while holding the lock, which
        proves every earlier writer is gone. Returns their names."""
        if not self.held:
            raise RuntimeError(f"{self.folder}: removing temporary files needs the folder's lock; expected "
                               "RunLock.acquire() first")
        removed = []
        for stale in self.folder.glob(".*.tmp"):
            if temp_owner(stale.name) != os.getpid():
                stale.unlink(missing_ok=True)
                removed.append(stale.name)
        return removed

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        if self.fd is not None:
            os.close(self.fd)  # an unreleased lock is freed with its object; its file is left, free
