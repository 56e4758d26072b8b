"""Building the native engine (lstmkit/csrc) on first use, and loading the cached build.

The extension is compiled by torch.utils.cpp_extension (a C++ compiler and ninja; the ninja that pip installed in
this environment is found without an activated venv), for the vector instruction set PyTorch itself uses on this CPU,
and cached in torch's extensions directory under a name made of a `Recipe`'s digests: one for everything the build
command depends on but the sources (torch's version and path, the flags, Python, the compiler, the checkout), one for
the sources. The first build says so in one line on stderr; a cached load is silent. If it cannot be built, one short
warning names a log file with the full output, and "auto" runs the PyTorch fused path; LSTMKIT_NO_NATIVE=1 turns the
engine off without trying.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent.parent / "csrc"
LIBRARY_SUFFIX = ".pyd" if os.name == "nt" else ".so"  # what torch.utils.cpp_extension names the built library

# compiler flags per torch.backends.cpu.get_cpu_capability(); any other capability builds the portable code
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}


@dataclass(frozen=True)
class Recipe:
    """What the build command depends on; `name` is its cache entry."""

    isa: str                 # "avx512", "avx2" or "default": the code path compiled in
    cflags: tuple[str, ...]  # compiler flags (optimization, instruction set, OpenMP)
    ldflags: tuple[str, ...]
    torch: str               # torch's version and install path: the headers and libraries built against
    python: str              # Python's version and include folder
    compiler: str            # $CXX, or torch's default c++
    csrc: str                # the sources' folder: torch rebuilds a cached extension whose sources moved
    sources: tuple[str, ...]  # the .cpp and .h files of csrc

    def identity(self) -> str:
        """Digest of everything but the sources' contents: one install of lstmkit in one environment."""
        fields = dataclasses.asdict(self) | {"sources": [Path(f).name for f in self.sources]}
        return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:10]

    def sources_digest(self) -> str:
        return hashlib.sha256(b"".join(Path(f).read_bytes() for f in self.sources)).hexdigest()[:10]

    def prefix(self) -> str:
        """The name shared by every build of this identity, whatever its sources."""
        return f"lstmkit_native_{self.isa}_{self.identity()}_"

    def name(self) -> str:
        return self.prefix() + self.sources_digest()


def recipe() -> Recipe:
    """The recipe of this process: this CPU's capability, this torch and Python, this checkout's sources."""
    isa = torch.backends.cpu.get_cpu_capability()
    isa = isa if isa in ISA_FLAGS else "DEFAULT"
    cflags = ["-O3", f"-DCPU_CAPABILITY={isa}", *ISA_FLAGS.get(isa, [])]
    if isa in ISA_FLAGS:
        cflags.append(f"-DCPU_CAPABILITY_{isa}")
    # at::parallel_for is a header template: compiled without OpenMP it runs on one thread
    openmp = ["-fopenmp"] if "parallel backend: OpenMP" in torch.__config__.parallel_info() else []
    files = sorted(CSRC.glob("*.cpp")) + sorted(CSRC.glob("*.h"))
    return Recipe(isa=isa.lower(), cflags=(*cflags, *openmp), ldflags=tuple(openmp),
                  torch=f"{torch.__version__} {Path(torch.__file__).resolve().parent}",
                  python=f"{sys.version_info[:3]} {sysconfig.get_paths()['include']}",
                  compiler=os.environ.get("CXX", "c++"), csrc=str(CSRC), sources=tuple(str(f) for f in files))


def tool_path(path: str) -> str:
    """`path` (a PATH value) with this environment's ninja in front where `path` lacks it: the `ninja` package's
    BIN_DIR and the interpreter's scripts folders, where pip puts it even when the venv is not activated."""
    folders = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    with contextlib.suppress(ImportError, AttributeError):
        import ninja
        folders.insert(0, ninja.BIN_DIR)
    present = path.split(os.pathsep) if path else []
    missing = [f for f in dict.fromkeys(folders) if f not in present and shutil.which("ninja", path=f)]
    return os.pathsep.join(missing + present)


@contextlib.contextmanager
def tools_on_path():
    """PATH with this environment's ninja (see `tool_path`) for the build only."""
    saved = os.environ.get("PATH")
    os.environ["PATH"] = tool_path(saved or "")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved


@contextlib.contextmanager
def exclusive(folder: Path, wait: bool = True):
    """Holds an exclusive lock on folder/lstmkit.lock that the OS drops if this process dies (creating the folder);
    yields whether it holds it: False where the OS has no such locks, or, with wait=False, another process holds it.
    A lock whose folder was removed meanwhile (see `remove_stale`) is taken again on a new folder."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        folder.mkdir(parents=True, exist_ok=True)
        yield False
        return
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lstmkit.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            with contextlib.suppress(FileNotFoundError):
                if os.stat(folder / "lstmkit.lock").st_ino == os.fstat(f.fileno()).st_ino:
                    yield True
                    return


def remove_stale(root: Path, current: Recipe) -> list[Path]:
    """Removes the builds of `current`'s identity with other sources (an edited or updated checkout); returns them.
    Only a build whose lock it takes without waiting, so none that a process is building or loading right now; a
    process that loaded it keeps running (POSIX unlinks a mapped library's name, not its pages). Without POSIX locks
    nothing is removed."""
    removed = []
    for folder in sorted(root.glob(current.prefix() + "*")):
        if folder.name == current.name() or not folder.is_dir():
            continue
        with exclusive(folder, wait=False) as held:
            if not held:
                continue
            doomed = folder.with_name(f".{folder.name}.removed-{os.getpid()}")
            folder.rename(doomed)  # at once, under the lock: no process sees a half-removed build
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(folder)
    return removed


@dataclass(frozen=True)
class Build:
    """The outcome of building or loading the extension."""

    module: object | None  # the extension, or None when it could not be built
    directory: Path | None  # its build folder
    error: str | None = None  # what failed, in a few words
    log: Path | None = None  # the file holding the failed build's full output


def build_root() -> Path:
    from torch.utils import cpp_extension
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())


def _load(r: Recipe, build_dir: Path):
    from torch.utils import cpp_extension

    if not any(f.endswith(".cpp") for f in r.sources):
        raise RuntimeError(f"no C++ sources in {r.csrc} (this install lacks lstmkit/csrc)")
    with exclusive(build_dir) as held, tools_on_path():
        if shutil.which(r.compiler) is None:  # before torch, whose compiler check logs a long banner about it
            raise RuntimeError(f"no C++ compiler: {r.compiler!r} is not on PATH (install g++, or set CXX)")
        cpp_extension.verify_ninja_availability()  # raises, in a few words, where ninja is missing
        if held:  # torch's own lock file outlives a killed build (Ctrl-C on first use) and would make
            (build_dir / "lock").unlink(missing_ok=True)  # every later process wait for it forever
        if not (build_dir / (r.name() + LIBRARY_SUFFIX)).exists():
            print(f"lstmkit: compiling the native engine once (1 to 3 minutes); cached in {build_dir}",
                  file=sys.stderr, flush=True)
        return cpp_extension.load(name=r.name(), sources=[f for f in r.sources if f.endswith(".cpp")],
                                  extra_cflags=list(r.cflags), extra_ldflags=list(r.ldflags),
                                  build_directory=str(build_dir))


def summary(e: BaseException) -> str:
    """What failed in a few words: the error's first line, and the build output's first error line if any."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    clip = lambda text, n: text if len(text) <= n else text[:n - 3] + "..."  # noqa: E731
    first = lines[0].split(": [", 1)[0] if lines else ""  # torch's "Error building extension 'x': [1/4] c++ ..."
    detail = next((line for line in lines[1:] if "error" in line.lower() or "not found" in line.lower()), None)
    text = clip(f"{type(e).__name__}: {first}", 160)
    return text if detail is None else f"{text} ... {clip(detail, 140)}"


def _write_log(build_dir: Path | None, r: Recipe, e: BaseException) -> Path:
    """The failed build's full output in build_dir/build.log, or in the temporary folder where that can't be."""
    text = f"lstmkit native engine build\n{r}\n\n" + "".join(traceback.format_exception(e))
    for folder in (build_dir, Path(tempfile.gettempdir())):
        if folder is None:
            continue
        log = folder / ("build.log" if folder == build_dir else f"lstmkit-native-{r.name()}.log")
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            log.write_text(text)
            return log
    return Path(os.devnull)


@functools.cache
def _build() -> Build:
    """Compile (or load the cached build of) the extension, and remove stale builds; after one warning, a Build
    without a module if that fails."""
    r, build_dir = recipe(), None
    try:
        root = build_root()
        build_dir = root / r.name()
        module = _load(r, build_dir)
    except Exception as e:  # no compiler or ninja, or a failed build: the fused path still runs
        error, log = summary(e), _write_log(build_dir, r, e)
        warnings.warn(f"lstmkit: the native engine could not be built ({error}); running the PyTorch fused path "
                      f"instead. Full build output: {log}", RuntimeWarning, stacklevel=4)
        return Build(None, build_dir, error, log)
    with contextlib.suppress(OSError):
        remove_stale(root, r)
    return Build(module, build_dir)


def disabled() -> bool:
    return os.environ.get("LSTMKIT_NO_NATIVE", "0") not in ("", "0")


def status() -> Build:
    """The build this process uses (building it on first use); no module, and no folder, when LSTMKIT_NO_NATIVE=1."""
    if disabled():
        return Build(None, None, "LSTMKIT_NO_NATIVE=1 is set")
    return _build()


def extension():
    """The compiled extension, or None when LSTMKIT_NO_NATIVE=1 or it could not be built."""
    return status().module


def available() -> bool:
    """Whether the native engine runs here; under torch.compile a constant of the graph (the build is not traced)."""
    return extension() is not None


# what torch.compiler.assume_constant_result(available) sets, without the 1.2 s import of torch._dynamo that calling
# it at import time costs every `import lstmkit` (tests/test_torch_stack.py fails if dynamo stops honouring it)
available._dynamo_marked_constant = True
