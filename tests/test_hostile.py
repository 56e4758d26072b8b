"""Hostile input, every piece refused before it is used: crafted checkpoints with valid checksums (wrong types,
missing sections, absurd sizes, deep JSON, wrong RNG state, wrong weight dtypes, unverified files), flag values
(NaN, inf, zero, negative, absurd) and PackedSequence index fields. Each gets exit code 2 (or the exception) and a
message naming the field or flag; docs/errors.md lists them all (tests/errors_doc.py)."""
import json
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstmkit
from lstmkit.checkpoint import CHECKSUM, FORMAT, LATEST, PLACEHOLDER, _digest, load_checkpoint, save_checkpoint
from lstmkit.errors import InputError
from error_table import CommandFailed, call_row, command, trained_run


# --- crafted checkpoints: a real run's state, changed, saved with a valid checksum --------------------------------

def _target(tmp: Path) -> Path:
    """Where a crafted checkpoint goes: its own folder, so that compress --out tmp/out is outside it."""
    (tmp / "in").mkdir(exist_ok=True)
    return tmp / "in" / "hostile.safetensors"


def _set(path: str, value):
    """A change setting state[a][b]... (path 'a/b') to `value`."""
    def change(state):
        *parents, key = path.split("/")
        for p in parents:
            state = state[p]
        state[key] = value
    return change


def _delete(path: str):
    def change(state):
        *parents, key = path.split("/")
        for p in parents:
            state = state[p]
        del state[key]
    return change


def _weights(change):
    """A change applied to every stored model weight (the tensors under trainer/model)."""
    def apply(state):
        weights = state["trainer"]["model"]
        for key in weights:
            weights[key] = change(weights[key])
    return apply


def _write_raw(path: Path, tensors: dict, state_text: str) -> None:
    """A checkpoint file whose state header is `state_text`, with a valid checksum (as save_checkpoint writes)."""
    data = safetensors_bytes(tensors, {"format": FORMAT, "version": "2", "state": state_text,
                                       CHECKSUM: PLACEHOLDER})
    digest = _digest(data, PLACEHOLDER)
    path.write_bytes(data.replace(f'"{CHECKSUM}":"{PLACEHOLDER}"'.encode(), f'"{CHECKSUM}":"{digest}"'.encode(), 1))


def _hostile(tmp: Path, change) -> Path:
    """tmp/hostile.safetensors: the tiny run's latest checkpoint after `change(state)`, checksum valid."""
    state = load_checkpoint(trained_run(tmp) / LATEST)
    change(state)
    save_checkpoint(_target(tmp), state)
    return _target(tmp)


def _deep(tmp: Path) -> Path:
    """A state header nested 100,000 levels deep (json.dumps could not even write it)."""
    _write_raw(_target(tmp), {"w": torch.zeros(2)}, "[" * 100_000 + "]" * 100_000)
    return _target(tmp)


def _unverified(tmp: Path) -> Path:
    """The run's checkpoint as a version-1 file: its sha256 field removed, version set to "1"."""
    data = (trained_run(tmp) / LATEST).read_bytes()
    metadata = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    metadata = {k: v for k, v in metadata.items() if k != CHECKSUM} | {"version": "1"}
    (_target(tmp)).write_bytes(safetensors_bytes(safetensors_load(data), metadata))
    return _target(tmp)


COMMANDS = {  # how each command reads a checkpoint file
    "sample": lambda ckpt, tmp: command("sample", ckpt, "--length", "3"),
    "train --resume": lambda ckpt, tmp: command("train", "--resume", ckpt, "--steps", "3"),
    "compress": lambda ckpt, tmp: command("compress", ckpt, "--out", tmp / "out", "--prune", "0.5",
                                          "--repeats", "1", "--eval-batches", "1"),
}
ALL, RESUME = tuple(COMMANDS), ("train --resume",)
STR = r"must be an integer; given str '32'"

# (what is wrong, how the checkpoint is made, the commands that read it, a regex the message must match)
CHECKPOINTS = [
    ("hidden_size the string \"32\"", _set("config/model/hidden_size", "32"), ALL,
     r"model config: --hidden-size must be an integer; given str '32'"),
    ("hidden_size null", _set("config/model/hidden_size", None), ALL,
     r"model config: --hidden-size must be an integer; given NoneType None"),
    ("hidden_size 32.5", _set("config/model/hidden_size", 32.5), ALL,
     r"model config: --hidden-size must be an integer; given float 32.5"),
    ("hidden_size true", _set("config/model/hidden_size", True), ALL,
     r"model config: --hidden-size must be an integer; given bool True"),
    ("hidden_size 10^9", _set("config/model/hidden_size", 10 ** 9), ALL,
     r"model config: --hidden-size must be an integer in \[1, 65536\]; given 1000000000"),
    ("num_layers 10^6", _set("config/model/num_layers", 10 ** 6), ALL,
     r"model config: --num-layers must be an integer in \[1, 64\]; given 1000000"),
    ("hidden_size 16384 with 64 layers (10^11 weights)",
     lambda s: (_set("config/model/hidden_size", 16384)(s), _set("config/model/num_layers", 64)(s)), ALL,
     r"make about [\d,]+ LSTM weights; expected at most 2,147,483,648"),
    ("bptt 0", _set("config/data/bptt", 0), ALL, r"data config: --bptt must be an integer in \[1, 1000000\]; given 0"),
    ("batch_size -4", _set("config/data/batch_size", -4), ALL, r"data config: --batch-size must be an integer in"),
    ("dropout NaN", _set("config/model/dropout", float("nan")), ALL,
     r"model config: --dropout must be a finite number in \[0, 1\); given nan"),
    ("lr Infinity", _set("config/train/lr", float("inf")), ALL,
     r"train config: --lr must be a finite number > 0; given inf"),
    ("structure not in the registry", _set("config/model/structure", "squiggly"), ALL,
     r"model config: --structure must be one of dense, .*; given 'squiggly'"),
    ("task not known", _set("config/data/task", "poetry"), ALL, r"data config: --task must be one of lm, adding, copy"),
    ("unknown config field", _set("config/model/hiden_size", 24), ALL, r"unknown ModelConfig field\(s\) \['hiden_size'\]"),
    ("config section missing", _delete("config"), ALL, r"has no 'config' section"),
    ("model config missing", _delete("config/model"), ALL, r"has no 'config/model' section"),
    ("train config missing", _delete("config/train"), RESUME, r"has no 'config/train' section"),
    ("model config a list", _set("config/model", [24]), ALL, r"config/model is list '\[24\]'; expected dict"),
    ("trainer section missing", _delete("trainer"), ALL, r"has no 'trainer/model' section"),
    ("metadata section missing", _delete("metadata"), ALL, r"has no 'metadata' section"),
    ("a weight that is not a tensor", _set("trainer/model/decoder.bias", [0.0]), ALL,
     r"trainer/model/decoder.bias is list; expected a tensor"),
    ("hidden_size 32 but weights of a 24-unit model", _set("config/model/hidden_size", 32), ALL,
     r"does not fit the model its config describes: .*lstm.weight_ih_l0 has shape \(96, 8\), the model expects "
     r"\(128, 8\)"),
    ("weights stored as int64", _weights(lambda t: t.to(torch.int64)), ALL,
     r"embedding.weight has dtype torch.int64, the model expects torch.float32"),
    ("weights stored as float16", _weights(lambda t: t.half()), ALL,
     r"embedding.weight has dtype torch.float16, the model expects torch.float32"),
    ("rng state of the wrong size", _set("trainer/rng", torch.zeros(100, dtype=torch.uint8)), RESUME,
     r"trainer/rng is a torch.uint8 tensor of shape \(100,\); expected the CPU generator's state, a torch.uint8 "
     r"tensor of shape \(5056,\)"),
    ("rng state of the wrong dtype", _set("trainer/rng", torch.zeros(5056, dtype=torch.int64)), RESUME,
     r"trainer/rng is a torch.int64 tensor of shape \(5056,\); expected"),
    ("rng state missing", _delete("trainer/rng"), RESUME, r"has no 'trainer/rng' section"),
    ("optimizer state missing", _delete("trainer/optimizer"), RESUME, r"has no 'trainer/optimizer/param_groups'"),
    ("step the string \"4\"", _set("trainer/step", "4"), RESUME, r"trainer/step is str '4'; expected int"),
    ("step negative", _set("trainer/step", -1), RESUME, r"trainer/step is -1; expected a finite number >= 0"),
    ("elapsed NaN", _set("trainer/elapsed", float("nan")), RESUME, r"trainer/elapsed is nan; expected a finite"),
]


def _checkpoint_rows() -> list[tuple]:
    rows = []
    for what, change, commands, match in CHECKPOINTS:
        for name in commands:
            def call(tmp, change=change, name=name):
                COMMANDS[name](_hostile(tmp, change), tmp)
            rows.append((f"{name}: checkpoint with {what}", call, CommandFailed, match))
    for name in ALL:
        rows.append((f"{name}: checkpoint whose state JSON is nested 100,000 deep",
                     lambda tmp, name=name: COMMANDS[name](_deep(tmp), tmp), CommandFailed,
                     r"has a state header nested 100000 levels deep; expected at most 64"))
        rows.append((f"{name}: unverified checkpoint (sha256 removed, version \"1\")",
                     lambda tmp, name=name: COMMANDS[name](_unverified(tmp), tmp), CommandFailed,
                     r"is an unverified checkpoint \(version 1: no sha256 checksum, so damage or tampering cannot be "
                     r"detected\); expected a version 2 checkpoint, or --allow-unverified"))
    return rows


HOSTILE_CHECKPOINTS = _checkpoint_rows()


# --- flag values: refused before any work, naming the flag ---------------------------------------------------------

def _train(*flags):
    return lambda tmp: command("train", *flags, "--out", tmp / "run")


def _sample(*flags):
    return lambda tmp: command("sample", tmp / "absent", *flags)  # the flags are checked before the file is read


def _compress(*flags):
    return lambda tmp: command("compress", tmp / "absent", "--out", tmp / "out", "--prune", "0.5", *flags)


def _bench(*flags):
    return lambda: command("bench", *flags)


NUMBER, INTEGER = r"must be a finite number in", r"must be an integer in"
HOSTILE_FLAGS = [
    ("train --batch-size 0", _train("--batch-size", "0"), rf"--batch-size {INTEGER} \[1, 1000000\]; given 0"),
    ("train --bptt 0", _train("--bptt", "0"), rf"--bptt {INTEGER} \[1, 1000000\]; given 0"),
    ("train --seq-len 0", _train("--seq-len", "0"), rf"--seq-len {INTEGER} \[1, 1000000\]; given 0"),
    ("train --dropout nan", _train("--dropout", "nan"), rf"--dropout {NUMBER} \[0, 1\); given nan"),
    ("train --dropout 1", _train("--dropout", "1"), rf"--dropout {NUMBER} \[0, 1\); given 1.0"),
    ("train --clip nan", _train("--clip", "nan"), rf"--clip {NUMBER} \[0, 1000000000\]; given nan"),
    ("train --clip inf", _train("--clip", "inf"), rf"--clip {NUMBER} .*; given inf"),
    ("train --lr inf", _train("--lr", "inf"), r"--lr must be a finite number > 0; given inf"),
    ("train --lr 0", _train("--lr", "0"), r"--lr must be a finite number > 0; given 0.0"),
    ("train --lr -inf", _train("--lr=-inf"), r"--lr must be a finite number > 0; given -inf"),
    ("train --weight-decay nan", _train("--weight-decay", "nan"), rf"--weight-decay {NUMBER} \[0, 100\]; given nan"),
    ("train --min-lr-ratio 2", _train("--min-lr-ratio", "2"), rf"--min-lr-ratio {NUMBER} \[0, 1\]; given 2.0"),
    ("train --steps 10**30", _train("--steps", str(10 ** 30)), rf"--steps {INTEGER} \[0, 1000000000\]; given 1{'0' * 30}"),
    ("train --warmup -1", _train("--warmup", "-1"), rf"--warmup {INTEGER} \[0, 1000000000\]; given -1"),
    ("train --eval-interval 10**12", _train("--eval-interval", str(10 ** 12)), rf"--eval-interval {INTEGER}"),
    ("train --time-budget nan", _train("--time-budget", "nan"), rf"--time-budget {NUMBER} \[0, 10000000\]; given nan"),
    ("train --time-budget inf", _train("--time-budget", "inf"), rf"--time-budget {NUMBER} .*; given inf"),
    ("train --seed 2**64", _train("--seed", str(2 ** 64)),
     rf"--seed {INTEGER} \[0, 2147483647\]; given 18446744073709551616"),
    ("train --seed -1", _train("--seed", "-1"), rf"--seed {INTEGER} \[0, 2147483647\]; given -1"),
    ("train --hidden-size 10**9", _train("--hidden-size", str(10 ** 9)), rf"--hidden-size {INTEGER} \[1, 65536\]"),
    ("train --hidden-size 0", _train("--hidden-size", "0"), rf"--hidden-size {INTEGER} \[1, 65536\]; given 0"),
    ("train --num-layers 10**6", _train("--num-layers", str(10 ** 6)), rf"--num-layers {INTEGER} \[1, 64\]"),
    ("train --num-layers 0", _train("--num-layers", "0"), rf"--num-layers {INTEGER} \[1, 64\]; given 0"),
    ("train --hidden-size 16384 --num-layers 4", _train("--hidden-size", "16384", "--num-layers", "4"),
     r"--hidden-size 16384, --num-layers 4, --proj-size 0 and --embedding-dim 64 make about [\d,]+ LSTM weights; "
     r"expected at most 2,147,483,648"),
    ("train --proj-size -1", _train("--proj-size", "-1"), rf"--proj-size {INTEGER} \[0, 65536\]; given -1"),
    ("train --sample-length 10**12", _train("--sample-length", str(10 ** 12)), rf"--sample-length {INTEGER}"),
    ("sample --temperature nan", _sample("--temperature", "nan"), rf"--temperature {NUMBER} \[0, 100\]; given nan"),
    ("sample --temperature inf", _sample("--temperature", "inf"), rf"--temperature {NUMBER} .*; given inf"),
    ("sample --length 10**12", _sample("--length", str(10 ** 12)),
     rf"--length {INTEGER} \[1, 1000000\]; given 1000000000000"),
    ("sample --length 0", _sample("--length", "0"), rf"--length {INTEGER} \[1, 1000000\]; given 0"),
    ("sample --top-k -1", _sample("--top-k", "-1"), rf"--top-k {INTEGER} \[0, 1000000\]; given -1"),
    ("sample --seed 2**64", _sample("--seed", str(2 ** 64)), rf"--seed {INTEGER} \[0, 2147483647\]"),
    ("compress --repeats 0", _compress("--repeats", "0"), rf"--repeats {INTEGER} \[1, 1000\]; given 0"),
    ("compress --lr nan", _compress("--lr", "nan"), r"--lr must be a finite number > 0; given nan"),
    ("compress --temperature 0", _compress("--temperature", "0"), rf"--temperature {NUMBER} \(0, 100\]; given 0.0"),
    ("compress --alpha 2", _compress("--alpha", "2"), rf"--alpha {NUMBER} \[0, 1\]; given 2.0"),
    ("compress --prune nan", _compress("--prune", "nan"), rf"--prune {NUMBER} \[0, 1\); given nan"),
    ("compress --prune-block 0", _compress("--prune-block", "0"), rf"--prune-block {INTEGER} \[1, 65536\]; given 0"),
    ("compress --finetune-steps 10**30", _compress("--finetune-steps", str(10 ** 30)), rf"--finetune-steps {INTEGER}"),
    ("compress --eval-batches -1", _compress("--eval-batches", "-1"), rf"--eval-batches {INTEGER}"),
    ("bench --tol nan", _bench("--tol", "nan"), rf"--tol {NUMBER} \(0, 1\]; given nan"),
    ("bench --threads -1", _bench("--threads", "-1"), rf"--threads {INTEGER} \[0, 4096\]; given -1"),
    ("bench --batch 0", _bench("--batch", "0"), rf"--batch {INTEGER} \[1, 65536\]; given 0"),
    ("bench --steps 10**12", _bench("--steps", str(10 ** 12)), rf"--steps {INTEGER} \[1, 1000000\]"),
    ("bench --seed 2**64", _bench("--seed", str(2 ** 64)), rf"--seed {INTEGER}"),
]


def _out_parent(tmp):
    """compress --out the run's parent folder, which holds the run (and would get a config.json)."""
    run = trained_run(tmp)
    command("compress", run, "--out", run.parent, "--prune", "0.5")


def _out_file(tmp):
    trained_run(tmp)
    (tmp / "file.txt").write_text("mine")
    command("compress", tmp / "run", "--out", tmp / "file.txt", "--prune", "0.5")


def _out_used(tmp):
    trained_run(tmp)
    (tmp / "used").mkdir()
    (tmp / "used" / "config.json").write_text("{}")
    command("compress", tmp / "run", "--out", tmp / "used", "--prune", "0.5")


HOSTILE_OUT = [
    ("compress --out the input's parent folder", _out_parent, CommandFailed,
     r"--out .* is not empty; expected a new or empty folder for --out \(nothing in it is overwritten\)"),
    ("compress --out a folder holding a config.json", _out_used, CommandFailed,
     r"--out .*used is not empty; expected a new or empty folder for --out"),
    ("compress --out an existing file", _out_file, CommandFailed,
     r"--out .*file.txt is a file; expected a new or empty folder for --out"),
]


# --- PackedSequence index fields --------------------------------------------------------------------------------

def _packed(**fields):
    """A valid PackedSequence (B = 3, lengths 2, 3, 1: sorted_indices [1, 0, 2]) with `fields` replaced."""
    packed = pack_padded_sequence(torch.randn(3, 3, 4), torch.tensor([2, 3, 1]), enforce_sorted=False)
    return PackedSequence._make({**packed._asdict(), **fields}.values())  # as given: __new__ would fill in None


def _forward(impl: str, **fields):
    def call():
        torch.manual_seed(0)
        lstmkit.LSTM(4, 5, impl=impl)(_packed(**fields))
    return call


PERMUTATION = r"PackedSequence.sorted_indices must be a permutation of 0..2"
API = []
for _impl in ("auto", "aten"):
    API += [
        (f"impl={_impl}: sorted_indices out of range", _forward(_impl, sorted_indices=torch.tensor([0, 1, 7]),
                                                                unsorted_indices=torch.tensor([0, 1, 2])),
         InputError, PERMUTATION + r", got \[0, 1, 7\]"),
        (f"impl={_impl}: sorted_indices negative", _forward(_impl, sorted_indices=torch.tensor([0, -1, 2]),
                                                            unsorted_indices=torch.tensor([0, 1, 2])),
         InputError, PERMUTATION),
        (f"impl={_impl}: sorted_indices with a repeat", _forward(_impl, sorted_indices=torch.tensor([1, 1, 2]),
                                                                 unsorted_indices=torch.tensor([0, 1, 2])),
         InputError, PERMUTATION + r", got \[1, 1, 2\]"),
        (f"impl={_impl}: sorted_indices of the wrong length", _forward(_impl, sorted_indices=torch.tensor([1, 0]),
                                                                       unsorted_indices=torch.tensor([1, 0])),
         InputError, r"PackedSequence.sorted_indices must be a 1-D torch.int64 tensor of length 3 \(batch_sizes\[0\]\), "
                     r"got torch.int64 tensor of shape \(2\)"),
        (f"impl={_impl}: sorted_indices of dtype int32",
         _forward(_impl, sorted_indices=torch.tensor([1, 0, 2], dtype=torch.int32),
                  unsorted_indices=torch.tensor([1, 0, 2])),
         InputError, r"sorted_indices must be a 1-D torch.int64 tensor of length 3 .*got torch.int32"),
        (f"impl={_impl}: sorted_indices 2-D", _forward(_impl, sorted_indices=torch.tensor([[1, 0, 2]]),
                                                       unsorted_indices=torch.tensor([1, 0, 2])),
         InputError, r"sorted_indices must be a 1-D torch.int64 tensor .*shape \(1, 3\)"),
        (f"impl={_impl}: unsorted_indices not the inverse", _forward(_impl, unsorted_indices=torch.tensor([0, 1, 2])),
         InputError, r"unsorted_indices must be the inverse permutation of sorted_indices .*got sorted_indices "
                     r"\[1, 0, 2\] and unsorted_indices \[0, 1, 2\]"),
        (f"impl={_impl}: unsorted_indices out of range", _forward(_impl, unsorted_indices=torch.tensor([1, 0, 9])),
         InputError, r"unsorted_indices must be the inverse permutation"),
        (f"impl={_impl}: unsorted_indices of the wrong length", _forward(_impl, unsorted_indices=torch.tensor([1])),
         InputError, r"unsorted_indices must be a 1-D torch.int64 tensor of length 3"),
        (f"impl={_impl}: sorted_indices without unsorted_indices", _forward(_impl, unsorted_indices=None),
         InputError, r"PackedSequence has sorted_indices but not the other; expected both"),
    ]
HOSTILE_API = [(what, call, exc, match) for what, call, exc, match in API]

HOSTILE = (HOSTILE_CHECKPOINTS + [(what, call, CommandFailed, match) for what, call, match in HOSTILE_FLAGS]
           + HOSTILE_OUT + HOSTILE_API)  # every row; docs/errors.md lists them (tests/errors_doc.py)


@pytest.mark.parametrize("what,call,exc,match", HOSTILE_CHECKPOINTS, ids=[r[0] for r in HOSTILE_CHECKPOINTS])
def test_hostile_checkpoint(what, call, exc, match, tmp_path):
    with pytest.raises(exc, match=match) as error:
        call_row(call, tmp_path)
    assert error.value.code == 2
    assert not (tmp_path / "out").exists()  # compress wrote nothing


@pytest.mark.parametrize("what,call,match", HOSTILE_FLAGS, ids=[r[0] for r in HOSTILE_FLAGS])
def test_hostile_flag_is_refused_before_any_work(what, call, match, tmp_path):
    start = time.perf_counter()
    with pytest.raises(CommandFailed, match=match) as error:
        call_row(call, tmp_path)
    assert error.value.code == 2
    assert re.match(r"lstmkit \w+: error: --", str(error.value)), str(error.value)  # one line, the flag first
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()
    assert time.perf_counter() - start < 10  # refused at once: no data read, no model built


@pytest.mark.parametrize("what,call,exc,match", HOSTILE_OUT, ids=[r[0] for r in HOSTILE_OUT])
def test_hostile_compress_out(what, call, exc, match, tmp_path):
    with pytest.raises(exc, match=match) as error:
        call_row(call, tmp_path)
    assert error.value.code == 2
    assert not (tmp_path / "config.json").exists() and not (tmp_path / LATEST).exists()
    assert not (tmp_path / "used" / LATEST).exists()


@pytest.mark.parametrize("what,call,exc,match", HOSTILE_API, ids=[r[0] for r in HOSTILE_API])
def test_hostile_packed_sequence(what, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --- what must still work --------------------------------------------------------------------------------------

def test_the_untouched_checkpoint_passes_every_check(tmp_path):
    """The crafted files are the real run's state changed in one place: unchanged, every command reads it."""
    ckpt = _hostile(tmp_path, lambda state: None)
    for name in ALL:
        COMMANDS[name](ckpt, tmp_path)
    assert (tmp_path / "out" / LATEST).is_file()


def test_unverified_checkpoint_loads_with_allow_unverified(tmp_path):
    ckpt = _unverified(tmp_path)
    with pytest.raises(ValueError, match="unverified"):
        load_checkpoint(ckpt)
    state = load_checkpoint(ckpt, allow_unverified=True)
    assert torch.equal(state["trainer"]["model"]["decoder.bias"],
                       load_checkpoint(tmp_path / "run" / LATEST)["trainer"]["model"]["decoder.bias"])
    command("sample", ckpt, "--length", "3", "--allow-unverified")
    command("compress", ckpt, "--out", tmp_path / "out", "--prune", "0.5", "--repeats", "1", "--eval-batches", "1",
            "--allow-unverified")


def test_compress_out_may_be_an_existing_empty_folder(tmp_path):
    run = trained_run(tmp_path)
    (tmp_path / "empty").mkdir()
    command("compress", run, "--out", tmp_path / "empty", "--prune", "0.5", "--repeats", "1", "--eval-batches", "1")
    assert (tmp_path / "empty" / LATEST).is_file()


def test_a_shallow_deep_json_still_loads(tmp_path):
    """Nesting up to the bound loads; brackets inside strings do not count."""
    _write_raw(tmp_path / "ok.safetensors", {"w": torch.zeros(2)},
               json.dumps({"s": "[[[[" * 1000, "deep": [[[[[[[[1]]]]]]]]}))
    assert load_checkpoint(tmp_path / "ok.safetensors")["deep"] == [[[[[[[[1]]]]]]]]


@pytest.mark.parametrize("impl", ["auto", "aten"])
def test_valid_packed_indices_match_torch(impl):
    """The checks pass a valid unsorted PackedSequence, with results equal to torch.nn.LSTM's."""
    torch.manual_seed(0)
    lstm = lstmkit.LSTM(4, 5, impl=impl)
    packed = _packed()
    out, (h, c) = lstm(packed)
    ref_out, (ref_h, ref_c) = lstm.to_torch()(packed)
    torch.testing.assert_close(out.data, ref_out.data)
    torch.testing.assert_close(h, ref_h)
    torch.testing.assert_close(c, ref_c)


def test_flag_help_shows_the_range():
    """Each flag's help comes from the same Range its check uses."""
    from lstmkit.cli import build_parser
    sub = build_parser()._subparsers._group_actions[0].choices
    helps = {a.dest: a.help for name in ("train", "sample", "compress") for a in sub[name]._actions}
    assert helps["batch_size"].endswith("(in [1, 1000000])")
    assert helps["lr"].endswith("(> 0)") and helps["dropout"].endswith("(in [0, 1))")
    assert helps["repeats"].endswith("(in [1, 1000])") and helps["length"].endswith("(in [1, 1000000])")


def test_counts():
    """At least as many hostile inputs as the issue lists (49 checkpoints over 140 runs, 89 flag values)."""
    assert len(HOSTILE) >= 100
