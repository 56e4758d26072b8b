"""Write docs/errors.md: every bad input in the tests' tables, run, with the error it really gets.

    python tests/errors_doc.py          # rewrite docs/errors.md
    python tests/errors_doc.py --check  # exit 1 if it is out of date (tests/test_errors_doc.py does the same)

The tables are the rows (what is wrong, call, exception, regex) of error_table.py's format, collected from the test
files; compare's and compress's command-line tables are read from their parametrized tests.
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the test helpers, also under `python -m tests.errors_doc`

import test_checkpoint  # noqa: E402
import test_cli_errors  # noqa: E402
import test_compress_cli  # noqa: E402
import test_data  # noqa: E402
import test_errors  # noqa: E402
import test_forecast_csv  # noqa: E402
import test_hostile  # noqa: E402
import test_sample_compare  # noqa: E402
import test_structures  # noqa: E402
from error_table import CommandFailed, call_row, command, parametrized, trained_run  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
COMMAND = "python tests/errors_doc.py"
HEADER = f"""# Errors

Regenerate this file with `{COMMAND}` (`tests/test_errors_doc.py` fails when it is out of date).

Every bad input in the tests' tables, and what it gets: the exception (for a command, its exit code) and the
message. `<tmp>` stands for a scratch folder, `<sha256>` for a checksum.
"""


def compare_rows() -> list[tuple]:
    """test_sample_compare's table of bad `lstmkit compare --config` values, as rows."""
    def row(spec, message):
        call = lambda tmp: command("compare", "--dry-run", "--config", spec, "--out", tmp / "cmp")  # noqa: E731
        return f"compare: --config {spec!r}", call, CommandFailed, message
    return [row(*r) for r in parametrized(test_sample_compare.test_compare_bad_config_is_refused_before_training)]


COMPRESS_INPUTS = {"foreign": "a safetensors file not written by lstmkit", "garbage": "a file of garbage bytes",
                   "inside": "--out inside the run folder", "run": "a run"}


def compress_rows() -> list[tuple]:
    """test_compress_cli's table of bad `lstmkit compress` inputs, as rows (the same set-up as its test)."""
    def row(case, args, message):
        def call(tmp):
            run = trained_run(tmp)
            (tmp / "in").mkdir()
            make = {"foreign": test_compress_cli._not_lstmkit, "garbage": test_compress_cli._garbage}
            source = make.get(case, lambda _: run)(tmp / "in")
            out = run / "sub" if case == "inside" else tmp / "out"
            command("compress", source, "--out", out, *args, *test_compress_cli.FAST)
        return f"{COMPRESS_INPUTS.get(case, case)}, {' '.join(args) or 'no flags'}", call, CommandFailed, message
    return [row(*r) for r in parametrized(test_compress_cli.test_bad_input)]


def areas() -> dict[str, list[tuple]]:
    return {
        "Core layer: `lstmkit.LSTM`, `LSTMCell`, `pack_padded_sequence`": test_errors.CASES,
        "Structures": test_structures.BAD_OPTIONS,
        "Data and command line": test_data.BAD_DATA + test_cli_errors.CASES + compare_rows(),
        "Checkpoints": test_checkpoint.BAD_CHECKPOINTS,
        "Compress": compress_rows(),
        "Forecast: `lstmkit forecast` CSV input and flags": test_forecast_csv.BAD_CSV,
        "Hostile input: crafted checkpoints (valid checksums), flag values, PackedSequence fields":
            test_hostile.HOSTILE,
    }


def outcome(what: str, call, exc: type, match: str) -> tuple[str, str]:
    """(error, message) of a row, run in a scratch folder, the folder written <tmp>; checked against the row."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            call_row(call, Path(tmp))
        except Exception as e:  # noqa: BLE001: any exception is the row's outcome
            error = e
        else:
            raise AssertionError(f"{what}: expected {exc.__name__}, but nothing was raised")
        message = str(error)
        for folder in {str(Path(tmp).resolve()), tmp}:
            message = message.replace(folder, "<tmp>")
    if not isinstance(error, exc) or not re.search(match, str(error)):
        raise AssertionError(f"{what}: expected {exc.__name__} matching {match!r}; got "
                             f"{type(error).__name__}: {error}")
    kind = f"exit {error.code}" if isinstance(error, CommandFailed) else type(error).__name__
    return kind, re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", " ".join(message.split()))


def _code(text: str) -> str:
    """A Markdown table cell showing `text` as code."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render() -> str:
    parts = [HEADER]
    for area, rows in areas().items():
        parts.append(f"\n## {area}\n\n| bad input | error | message |\n|---|---|---|\n")
        for what, call, exc, match in rows:
            kind, message = outcome(what, call, exc, match)
            parts.append(f"| {what.replace('|', '/')} | {kind} | {_code(message)} |\n")
    return "".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        print(f"{DOC} is {'up to date' if current == text else f'out of date; run `{COMMAND}`'}")
        return int(current != text)
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
