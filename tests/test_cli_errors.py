"""Bad command lines for `lstmkit train`, `lstmkit sample` and `lstmkit bench`: one error line saying what was
expected, exit code 2.

(`compare` and `compress` have their tables in test_sample_compare.py and test_compress_cli.py.)
"""
import pytest

from error_table import CommandFailed, call_row, command, trained_run

# (what is wrong, the call, the exception, a regex the message must match)
CASES = [
    ("train: no budget", lambda tmp: command("train", "--steps", "0", "--time-budget", "0", "--out", tmp / "run"),
     CommandFailed, r"lstmkit train: error: --steps and --time-budget are both 0; expected a budget: --steps N or "
     r"--time-budget SECONDS"),
    ("train: negative learning rate", lambda tmp: command("train", "--dry-run", "--lr", "-1", "--out", tmp / "run"),
     CommandFailed, r"--lr must be a finite number > 0; given -1.0"),
    ("train: --tie-weights with an embedding size other than the LSTM's output",
     lambda tmp: command("train", "--dry-run", "--tie-weights", "--embedding-dim", "64", "--out", tmp / "run"),
     CommandFailed, "weight tying needs embedding_dim == LSTM output size"),
    ("train: --out folder that already holds a run", lambda tmp: command("train", "--out", trained_run(tmp)),
     CommandFailed, r"run already holds a run \(latest.safetensors\); expected a new folder for --out, or --resume"),
    ("train: --resume of a folder without a checkpoint", lambda tmp: command("train", "--resume", tmp),
     CommandFailed, "latest.safetensors does not exist; expected a run folder containing latest.safetensors"),
    ("train: --resume with a different model setting",
     lambda tmp: command("train", "--resume", trained_run(tmp), "--hidden-size", "32"), CommandFailed,
     r"was trained with --hidden-size 24; given --hidden-size 32. Expected the same setting"),
    ("sample: a path that does not exist", lambda tmp: command("sample", tmp / "absent"), CommandFailed,
     "absent does not exist; expected a run folder containing latest.safetensors"),
    ("sample: prompt characters outside the vocabulary",
     lambda tmp: command("sample", trained_run(tmp), "--prompt", "\u2603"), CommandFailed,
     r"characters '\u2603' are not in the vocabulary"),
    ("sample: negative temperature", lambda tmp: command("sample", tmp, "--temperature", "-1"), CommandFailed,
     r"--temperature must be a finite number in \[0, 100\]; given -1.0"),
    ("sample: a run of the adding task",
     lambda tmp: (command("train", "--task", "adding", "--dry-run", "--hidden-size", "8", "--out", tmp / "adding"),
                  command("sample", tmp / "adding")), CommandFailed,
     r"is a checkpoint of the 'adding' task; expected a language model \(task 'lm'\)"),
    ("bench: no rounds", lambda: command("bench", "--rounds", "0"), CommandFailed,
     r"lstmkit bench: error: --rounds must be an integer in \[1, 100\]; given 0"),
    ("bench: a negative number of timed runs", lambda: command("bench", "--repeats", "-1"), CommandFailed,
     r"--repeats must be an integer in \[1, 1000\]; given -1"),
]


@pytest.mark.parametrize("what,call,exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line(what, call, exc, match, tmp_path):
    with pytest.raises(exc, match=match) as error:
        call_row(call, tmp_path)
    assert error.value.code == 2
