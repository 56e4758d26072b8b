"""Bad-input tables: the row format the tests and tests/errors_doc.py (which writes docs/errors.md) share.

A row is (what is wrong, call, exception, regex the message must match). `call` takes no argument, or a scratch
folder (pathlib.Path) for the files it needs. A command is a call too: `command(...)` raises CommandFailed with
the error line the command printed.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import io
import shutil
import tempfile
from pathlib import Path

from lstmkit import cli
from train_helpers import TINY, small_corpus


class CommandFailed(Exception):
    """An `lstmkit` command exited with a nonzero code; the message is the error line it printed."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def command(*argv) -> None:
    """`lstmkit ARGV...` in this process, its output captured; CommandFailed if it exits with a nonzero code."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    if code:
        lines = [line.strip() for line in err.getvalue().splitlines() if ": error: " in line]
        raise CommandFailed(code, lines[-1] if lines else f"exit code {code} without an error line")


def call_row(call, folder: Path):
    """Call a row's `call`, passing `folder` if it takes an argument."""
    return call(folder) if inspect.signature(call).parameters else call()


def parametrized(test) -> list[tuple]:
    """The rows of a test's @pytest.mark.parametrize table (read from the test, so that the test file stays as is)."""
    (mark,) = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
    return [tuple(row) for row in mark.args[1]]


@functools.cache
def _trained() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="lstmkit-errors-"))
    atexit.register(shutil.rmtree, folder, True)
    command("train", "--data", small_corpus(folder), *TINY, "--steps", "2", "--sample-length", "5",
            "--out", folder / "run")
    return folder / "run"


def trained_run(folder: Path) -> Path:
    """folder/run: a copy of a tiny language-model run (hidden size 24), trained once per process."""
    shutil.copytree(_trained(), folder / "run")
    return folder / "run"
