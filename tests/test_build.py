"""The native engine's build (lstmkit/engine/build.py): the cache key, finding this environment's ninja, the one-line
first-build message, the short warning and log file of a failed build, and the removal of stale builds."""
import dataclasses
import fcntl
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

from lstmkit.engine import auto_layer, build, fused_layer, native

PADDED = [3] * 4


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty extensions folder and no cached build in this process; the real one is back afterwards."""
    monkeypatch.delenv("LSTMKIT_NO_NATIVE", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    build._build.cache_clear()
    yield tmp_path / "ext"
    build._build.cache_clear()  # the next use loads the real build again (cached on disk)


def fake_load(calls):
    """A cpp_extension.load that "builds" by writing the library file where torch would, and records its calls."""
    def load(name, sources, extra_cflags, extra_ldflags, build_directory):
        calls.append(name)
        (Path(build_directory) / (name + build.LIBRARY_SUFFIX)).write_bytes(b"")
        return f"module {name}"
    return load


def test_the_cache_key_changes_with_what_the_build_command_depends_on():
    r = build.recipe()
    assert r.torch.endswith(str(Path(torch.__file__).resolve().parent)) and r.csrc == str(build.CSRC)
    changes = {"torch": r.torch.replace("site-packages", "other-venv"), "cflags": (*r.cflags, "-O2"),
               "ldflags": (), "python": r.python + "x", "compiler": "clang++", "csrc": "/elsewhere/csrc"}
    names = {r.name()}
    for field, value in changes.items():
        other = dataclasses.replace(r, **{field: value})
        assert other.identity() != r.identity(), field
        names.add(other.name())
    assert len(names) == 1 + len(changes)
    assert build.recipe() == r and build.recipe().name() == r.name()  # the same process, the same entry


def test_edited_sources_keep_the_identity_but_change_the_name(tmp_path):
    r = build.recipe()
    copies = []
    for f in r.sources:
        copies.append(tmp_path / Path(f).name)
        shutil.copy(f, copies[-1])
    r = dataclasses.replace(r, sources=tuple(map(str, copies)))
    before = r.name()
    copies[0].write_text(copies[0].read_text() + "\n// edited\n")
    assert r.identity() in before and r.name() != before and r.name().startswith(r.prefix())


def test_ninja_is_found_without_the_venv_on_path(monkeypatch, tmp_path):
    """A PATH without any ninja (an unactivated venv on a machine without a system ninja): torch's own check passes
    inside the build's PATH, and the ninja found is this environment's."""
    empty = str(tmp_path)
    assert shutil.which("ninja", path=empty) is None
    monkeypatch.setenv("PATH", empty)
    with pytest.raises(RuntimeError, match="Ninja is required"):
        cpp_extension.verify_ninja_availability()
    with build.tools_on_path():
        cpp_extension.verify_ninja_availability()
        found = Path(shutil.which("ninja")).resolve()
    assert os.environ["PATH"] == empty  # for the build only
    assert found.is_relative_to(Path(sys.prefix).resolve()) or found.is_relative_to(Path(sys.executable).parent)
    assert subprocess.run([found, "--version"], capture_output=True).returncode == 0


def test_the_path_keeps_its_folders_and_adds_ninja_once(tmp_path):
    path = build.tool_path(str(tmp_path))
    assert path.split(os.pathsep)[-1] == str(tmp_path) and build.tool_path(path) == path


def test_failed_build_warns_once_briefly_and_falls_back(fresh, monkeypatch):
    output = "".join(f"[{i}/3] c++ -c lstm.cpp -O3 -mavx512f ... line {i} of a long build log\n" for i in range(60))
    output += "lstm.cpp:12:3: error: 'foo' was not declared in this scope\n"

    def failing(*args, **kwargs):
        raise RuntimeError(f"Error building extension '{kwargs['name']}': {output}")

    monkeypatch.setattr(cpp_extension, "load", failing)
    with pytest.warns(RuntimeWarning) as caught:
        assert native.extension() is None
    assert len(caught) == 1
    message = str(caught[0].message)
    assert len(message) < 500 and "'foo' was not declared" in message and "line 3 of" not in message
    log = Path(message.rsplit("Full build output: ", 1)[1])
    assert log.is_file() and output in log.read_text()
    status = build.status()
    assert status.log == log and status.module is None and "error" in status.error
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert native.extension() is None
        x, h0, c0 = torch.randn(12, 2), torch.zeros(3, 4), torch.zeros(3, 4)
        w_ih, w_hh, bias = torch.randn(16, 2), torch.randn(16, 4), torch.randn(16)
        out = auto_layer(x, PADDED, h0, c0, w_ih, w_hh, bias)
        expected = fused_layer(x, PADDED, h0, c0, w_ih, w_hh, bias)
    for a, e in zip(out, expected):
        assert torch.equal(a, e)


def test_a_missing_ninja_warns_in_a_few_words(fresh, monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("CXX", shutil.which(os.environ.get("CXX", "c++")) or "c++")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(build, "tool_path", lambda path: path)  # as if pip had installed no ninja
    with pytest.warns(RuntimeWarning, match="Ninja is required") as caught:
        assert native.extension() is None
    assert len(str(caught[0].message)) < 500 and capfd.readouterr().err == ""


def test_a_missing_compiler_warns_in_a_few_words_without_calling_torch(fresh, monkeypatch, capfd):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(cpp_extension, "load", lambda *a, **k: pytest.fail("torch asked to build without a compiler"))
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler: '/nonexistent/c\\+\\+' is not on PATH") as caught:
        assert native.extension() is None
    assert len(str(caught[0].message)) < 500 and capfd.readouterr().err == ""  # no first-build line either


def test_an_install_without_sources_says_so(fresh, monkeypatch, tmp_path):
    monkeypatch.setattr(build, "CSRC", tmp_path / "csrc")  # as `pip install .` installed it before package-data
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ sources in .*csrc \\(this install lacks lstmkit/csrc\\)"):
        assert native.extension() is None


def test_the_first_build_says_so_once_and_a_cached_load_is_silent(fresh, monkeypatch, capfd):
    calls = []
    monkeypatch.setattr(cpp_extension, "load", fake_load(calls))
    assert native.extension() == f"module {build.recipe().name()}"
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "compiling the native engine once" in err and str(build.status().directory) in err
    build._build.cache_clear()  # a new process: the library is on disk
    assert native.extension() is not None and len(calls) == 2
    assert capfd.readouterr().err == ""


def test_stale_builds_of_this_identity_are_removed_unless_in_use(fresh, monkeypatch):
    r = build.recipe()
    stale, busy = fresh / (r.prefix() + "0000000000"), fresh / (r.prefix() + "1111111111")
    other = fresh / "lstmkit_native_avx2_0123456789_0000000000"  # another install (identity): kept
    for folder in (stale, busy, other):
        folder.mkdir(parents=True)
        (folder / "lib.so").write_bytes(b"old")
    monkeypatch.setattr(cpp_extension, "load", fake_load([]))
    with open(busy / "lstmkit.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process building or loading it right now
        assert native.extension() is not None
    assert not stale.exists() and busy.exists() and other.exists()
    assert (fresh / r.name() / (r.name() + build.LIBRARY_SUFFIX)).exists()
    assert sorted(p.name for p in fresh.iterdir()) == sorted([busy.name, other.name, r.name()])


def test_a_lock_on_a_removed_folder_is_taken_again(tmp_path):
    folder = tmp_path / "b"
    with build.exclusive(folder) as held:
        assert held and (folder / "lstmkit.lock").exists()
    assert build.remove_stale(tmp_path, build.recipe()) == []  # not this identity's
    shutil.rmtree(folder)
    with build.exclusive(folder) as held:  # the folder comes back
        assert held and folder.is_dir()


def test_no_native_is_off_without_building(monkeypatch):
    monkeypatch.setenv("LSTMKIT_NO_NATIVE", "1")
    monkeypatch.setattr(build, "_build", lambda: pytest.fail("built although LSTMKIT_NO_NATIVE=1"))
    status = build.status()
    assert status.module is None and "LSTMKIT_NO_NATIVE" in status.error and not native.available()
