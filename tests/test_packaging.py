"""The package as pip builds it: the wheel carries the C++ sources, py.typed and LICENSE, the version has one source,
and (slow) a non-editable install into a fresh venv builds and runs the native engine from another folder."""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import lstmkit

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "runs", ".pytest_cache",
                              ".hypothesis")


def checkout_copy(folder: Path) -> Path:
    """The working tree without its build outputs: a build then leaves nothing behind in the checkout."""
    return Path(shutil.copytree(REPO, folder / "src", ignore=SKIP))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", folder / "dist", "."], cwd=checkout_copy(folder), check=True, capture_output=True,
                   timeout=600)
    (path,) = (folder / "dist").glob("lstmkit-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_carries_the_cpp_sources_py_typed_and_license(wheel):
    names = set(wheel.namelist())
    sources = sorted((REPO / "lstmkit" / "csrc").glob("*.[ch]*"))
    assert sources and {f"lstmkit/csrc/{f.name}" for f in sources} <= names
    assert "lstmkit/py.typed" in names and "lstmkit/engine/build.py" in names
    (license,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(license) == (REPO / "LICENSE").read_bytes()
    assert b"MIT License" in wheel.read(license) and b"Copyright (c) 2026 the lstmkit developers" in wheel.read(license)


def test_the_wheel_metadata_has_the_one_version_and_the_onnx_test_extra(wheel):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = wheel.read(name).decode().splitlines()
    assert f"Version: {lstmkit.__version__}" in metadata
    test_extra = {line.split()[1].split(";")[0].split(">")[0] for line in metadata
                  if line.startswith("Requires-Dist:") and line.endswith('extra == "test"')}
    assert {"onnx", "onnxscript", "onnxruntime", "pytest"} <= test_extra


def test_the_version_is_written_once():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lstmkit.__version__"}
    assert importlib.metadata.version("lstmkit") == lstmkit.__version__


@pytest.mark.slow
def test_a_non_editable_install_builds_the_native_engine_from_another_folder(tmp_path):
    """pip install of the checkout (not editable) into a fresh venv; `lstmkit info --json` run from another folder,
    without activating the venv and with a PATH that lacks its bin: native true, the first build says so once."""
    system_torch = subprocess.run([sys._base_executable, "-c", "import torch"], capture_output=True).returncode == 0
    venv.create(tmp_path / "venv", with_pip=True, system_site_packages=system_torch)
    bin_dir = tmp_path / "venv" / "bin"
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "-q", checkout_copy(tmp_path)], check=True,
                   capture_output=True, timeout=1200)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LSTMKIT_NO_NATIVE", "VIRTUAL_ENV", "PYTHONPATH")}
    env |= {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "OMP_NUM_THREADS": "1",
            "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent)}
    runs = [subprocess.run([bin_dir / "lstmkit", "info", "--json"], cwd=elsewhere, env=env, capture_output=True,
                           text=True, timeout=1200) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, cached = (json.loads(run.stdout) for run in runs)
    assert first["native"] is True and cached["native"] is True, first["native_reason"]
    assert Path(first["native_build"]).parent == tmp_path / "ext" and cached["native_build"] == first["native_build"]
    assert runs[0].stderr.count("compiling the native engine once") == 1 and runs[1].stderr == ""
    installed = subprocess.run([bin_dir / "python", "-c", "import lstmkit; print(lstmkit.__file__)"], cwd=elsewhere,
                               env=env, capture_output=True, text=True, check=True).stdout
    assert "site-packages" in installed and str(REPO) not in installed  # the installed copy ran, not the checkout
