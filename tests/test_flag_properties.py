"""Any value of any flag of any command: the command either accepts it (and then it lies in the flag's declared range
and choices) or exits 2 with one error line that names the flag; never a traceback. Drawn by Hypothesis over every
value-taking flag of train, sample, compare, compress, bench and forecast. `make test` runs the `ci` profile;
`HYPOTHESIS_PROFILE=long python -m pytest tests/test_flag_properties.py` runs thousands."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstmkit import cli, config
from lstmkit.bench.config import BenchConfig
from lstmkit.compress.command import CompressConfig
from lstmkit.config import CONFIGS, CompareConfig, SampleConfig
from lstmkit.forecast.config import ForecastConfig
from train_helpers import TINY, small_corpus

ABSENT = "absent-input"  # the input every command is given: reading it is the first thing after the flags' checks,
# or (train, compare, bench) where the test stops the command
COMMANDS = {  # command: (its arguments before the flags, the configs its flags fill)
    "train": (lambda tmp: ["--data", tmp / f"{ABSENT}.txt", "--out", tmp / "run"], tuple(CONFIGS.values())),
    "sample": (lambda tmp: [tmp / ABSENT], (SampleConfig,)),
    "compare": (lambda tmp: ["--data", tmp / f"{ABSENT}.txt", "--out", tmp / "cmp"],
                (CompareConfig, *CONFIGS.values())),
    "compress": (lambda tmp: [tmp / ABSENT, "--out", tmp / "out", "--prune", "0.5"], (CompressConfig,)),
    "bench": (lambda tmp: [], (BenchConfig,)),
    "forecast": (lambda tmp: ["--data", tmp / f"{ABSENT}.csv", "--out", tmp / "fc"], (ForecastConfig,)),
}
FIXED = {"data", "out", "resume", "checkpoint", "run"}  # the flags that name the input and output, set above
EDGES = ["0", "-1", "1", "nan", "-nan", "inf", "-inf", "1e309", "", " ", "abc", "0x10", "1_000", "2.5", "-0.0",
         str(2 ** 31), str(2 ** 63), str(10 ** 30), "1e-320", "true", "ａ", "\x00"]


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def _value_flags(name: str) -> list[tuple[str, argparse.Action]]:
    """(flag, action) for each flag of the command that takes one value (booleans and help take none)."""
    return [(action.option_strings[0], action) for action in _subparser(name)._actions
            if action.option_strings and action.nargs is None and action.dest not in FIXED]


FLAGS = {name: _value_flags(name) for name in COMMANDS}
FIELDS = {name: {f.name: f for cls in classes for f in dataclasses.fields(cls)}
          for name, (_, classes) in COMMANDS.items()}


def _value(action: argparse.Action) -> st.SearchStrategy[str]:
    numbers = st.one_of(st.integers(-2 ** 70, 2 ** 70).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.integers(-3, 100).map(str))
    choices = [st.sampled_from([str(c) for c in action.choices])] if action.choices else []
    return st.one_of(st.sampled_from(EDGES), numbers, *choices, st.text(max_size=6))


@st.composite
def _invocation(draw) -> tuple[str, list[tuple[str, str]]]:
    name = draw(st.sampled_from(sorted(COMMANDS)))
    chosen = draw(st.lists(st.sampled_from(FLAGS[name]), min_size=1, max_size=3, unique_by=lambda fa: fa[0]))
    return name, [(flag, draw(_value(action))) for flag, action in chosen]


def _run(argv: list) -> tuple[int, str]:
    """`lstmkit ARGV...` in this process: its exit code (argparse's SystemExit included) and its stderr. Any other
    exception escapes: a traceback a user would see."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def _in_declared_range(f: dataclasses.Field, text: str) -> bool:
    value = type(f.default)(text)
    choices, bounds = config.choices_of(f), f.metadata["range"]
    return (choices is None or value in choices) and (bounds is None or bounds.holds(value))


def _check_outcome(name: str, pairs: list[tuple[str, str]], folder: Path) -> None:
    """Run `lstmkit NAME ... FLAG=VALUE...`; assert it is refused naming a flag, or accepted with every value in its
    declared range."""
    before, _ = COMMANDS[name]
    argv = [name, *before(folder), *[f"{flag}={value}" for flag, value in pairs]]
    code, err = _run(argv)
    errors = [line for line in err.splitlines() if "error: " in line]
    assert code == 2 and len(errors) == 1, (argv, code, err[-2000:])
    message = errors[0].split("error: ", 1)[1]
    if ABSENT in message:  # every flag passed its checks: the command went on to read its input
        for flag, value in pairs:
            dest = dict(FLAGS[name])[flag].dest
            if dest in FIELDS[name]:
                assert _in_declared_range(FIELDS[name][dest], value), (argv, "accepted out of range")
    else:  # refused: by argparse ("argument --x: ...") or by a check, which names the flag first
        named = [flag for flag, _ in pairs if re.match(rf"(argument )?{re.escape(flag)}\b", message)]
        cross = re.match(r"--[a-z-]+\b", message)  # a check of several flags (e.g. the weight count) names them all
        assert named or cross, (argv, message)


@pytest.fixture
def stop_before_work(monkeypatch):
    def accepted(*args):  # where the work would start (a synthetic task or a study has no input file to read)
        raise ValueError(f"{ABSENT}: the work would start now")
    monkeypatch.setattr("lstmkit.bench.run_study", accepted)
    monkeypatch.setattr("lstmkit.train.build_task", accepted)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_with_every_edge_value(name, tmp_path, stop_before_work):
    for flag, action in FLAGS[name]:
        for value in [*EDGES, *map(str, action.choices or ())]:
            _check_outcome(name, [(flag, value)], Path(tempfile.mkdtemp(dir=tmp_path)))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(invocation=_invocation())
def test_drawn_flag_values_are_accepted_in_their_range_or_refused_naming_the_flag(tmp_path, stop_before_work,
                                                                                  invocation):
    name, pairs = invocation
    _check_outcome(name, pairs, Path(tempfile.mkdtemp(dir=tmp_path)))


# --- whole commands with drawn values: exit 0, 1 (a diverged run) or 2, never a traceback -------------------------

CHEAP = ["--lr", "--clip", "--dropout", "--weight-decay", "--min-lr-ratio", "--warmup", "--seed", "--optimizer",
         "--structure", "--num-layers", "--proj-size", "--sample-length", "--time-budget", "--eval-interval"]


@st.composite
def _train_flags(draw) -> list[str]:
    actions = dict(FLAGS["train"])
    chosen = draw(st.lists(st.sampled_from([f for f in CHEAP if f in actions]), min_size=1, max_size=3, unique=True))
    small = st.integers(-2, 4).map(str)
    values = {f: draw(small if f in ("--num-layers", "--proj-size") else _value(actions[f])) for f in chosen}
    return [f"{flag}={value}" for flag, value in values.items()]


@settings(max_examples=max(8, settings.default.max_examples // 60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(flags=_train_flags())
def test_a_dry_run_with_drawn_flag_values_ends_with_an_exit_code_not_a_traceback(tmp_path_factory, flags):
    tmp = tmp_path_factory.mktemp("run")
    argv = ["train", "--data", small_corpus(tmp), *TINY, "--dry-run", "--out", tmp / "run", *flags]
    code, err = _run(argv)
    assert code in (0, 1, 2), (argv, code, err[-2000:])
    if code == 2:
        assert len([line for line in err.splitlines() if "error: " in line]) == 1, (argv, err[-2000:])
    else:
        assert (Path(tmp) / "run" / "config.json").is_file()


def test_the_flags_drawn_cover_every_command():
    assert all(FLAGS.values()) and sum(map(len, FLAGS.values())) >= 60
    assert {f for f, _ in FLAGS["train"]} >= set(CHEAP)
