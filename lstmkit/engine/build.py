"""Building the native engine (lstmkit/csrc) on first use, and loading the cached build.

The extension is compiled by torch.utils.cpp_extension (needs a C++ compiler and ninja), for the vector
instruction set PyTorch itself uses on this CPU, and cached in torch's extensions directory under a name that
changes with the sources and the torch and Python versions. If it cannot be built, one warning says why and
"auto" runs the PyTorch fused path; LSTMKIT_NO_NATIVE=1 turns it off without trying.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent.parent / "csrc"

# compiler flags per torch.backends.cpu.get_cpu_capability(); any other capability builds the portable code
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}


@contextlib.contextmanager
def _exclusive(path: Path):
    """Holds an exclusive lock on `path` that the OS drops if this process dies; yields whether it could."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield False
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield True


@functools.cache
def _build():
    """Compile (or load the cached build of) the extension; None, after one warning, if that fails."""
    from torch.utils import cpp_extension

    isa = torch.backends.cpu.get_cpu_capability()
    isa = isa if isa in ISA_FLAGS else "DEFAULT"
    flags = ["-O3", f"-DCPU_CAPABILITY={isa}", *ISA_FLAGS.get(isa, [])]
    if isa in ISA_FLAGS:
        flags.append(f"-DCPU_CAPABILITY_{isa}")
    # at::parallel_for is a header template: compiled without OpenMP it runs on one thread
    openmp = ["-fopenmp"] if "parallel backend: OpenMP" in torch.__config__.parallel_info() else []
    files = sorted(CSRC.glob("*.cpp")) + sorted(CSRC.glob("*.h"))
    # the checkout's path too: torch rebuilds a cached extension whose sources moved, so two checkouts sharing one
    # name would rebuild each other's build on every first use
    build = f"{torch.__version__} {sys.version_info[:2]} {flags} {openmp} {CSRC}".encode()
    digest = hashlib.sha256(b"".join([build, *(f.read_bytes() for f in files)])).hexdigest()[:12]
    name = f"lstmkit_native_{isa.lower()}_{digest}"
    try:
        build_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()) / name
        build_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(build_dir / "lstmkit.lock") as exclusive:
            if exclusive:  # torch's own lock file outlives a killed build (Ctrl-C on first use) and would make
                (build_dir / "lock").unlink(missing_ok=True)  # every later process wait for it forever
            return cpp_extension.load(name=name, sources=[str(f) for f in files if f.suffix == ".cpp"],
                                      extra_cflags=flags + openmp, extra_ldflags=openmp,
                                      build_directory=str(build_dir))
    except Exception as e:  # no compiler or ninja, or a failed build: the fused path still runs
        warnings.warn(f"lstmkit: the native engine could not be built ({type(e).__name__}: {e}); "
                      "running the PyTorch fused path instead", RuntimeWarning, stacklevel=3)
        return None


def extension():
    """The compiled extension, or None when LSTMKIT_NO_NATIVE=1 or it could not be built."""
    if os.environ.get("LSTMKIT_NO_NATIVE", "0") not in ("", "0"):
        return None
    return _build()


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the native engine runs here; under torch.compile a constant of the graph (the build is not traced)."""
    return extension() is not None
