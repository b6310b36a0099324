"""Locate tritonserver and perf_analyzer from the pip wheels and give them a working environment.

tritonserver ships inside `nvidia-pytriton` (python backend only) and needs the wheel's bundled
libraries on LD_LIBRARY_PATH plus a python-backend stub built for this Python version next to the
backend. perf_analyzer ships inside `tritonclient[all]` and links against libb64 (Debian package
libb64-0d) and libcudart.so.12 (pip package nvidia-cuda-runtime-cu12). trb sets these up itself so
users never export LD_LIBRARY_PATH by hand.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from model_repo_builder.errors import ToolNotFoundError

LOGGER = logging.getLogger(__name__)

TRITON_VERSION = "2.51.0"
NGC_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
INSTALL_HINT = "run `scripts/install.sh` (or `make install`) from the trb checkout"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def cache_dir() -> Path:
    """Where trb keeps prepared binaries (override with TRB_CACHE_DIR)."""
    root = os.environ.get("TRB_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "trb")
    return Path(root)


def python_path_for_stub() -> str:
    """This interpreter's import path, handed to python-backend models through TRB_PYTHONPATH."""
    entries = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    entries += [p for p in sys.path if p and "site-packages" in p]
    return os.pathsep.join(dict.fromkeys(entries))


@dataclass(frozen=True)
class TritonInstallation:
    """A runnable tritonserver: binary, backend directory and the environment it needs."""

    binary: Path
    backend_dir: Path
    library_dir: Path
    cache_dir: Path

    def environment(self) -> dict[str, str]:
        """Environment for the tritonserver process and its python-backend stubs."""
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [str(self.library_dir), env.get("LD_LIBRARY_PATH")])
        )
        env["TRB_PYTHONPATH"] = python_path_for_stub()
        return env


def find_tritonserver() -> TritonInstallation:
    """Return the pip-bundled tritonserver, preparing its python backend for this Python once."""
    package = _package_dir("pytriton")
    if package is None:
        raise ToolNotFoundError(
            f"tritonserver not found: the nvidia-pytriton package is not installed; {INSTALL_HINT}"
        )
    dist = package / "tritonserver"
    binary = dist / "bin" / "tritonserver"
    library_dir = package.parent / "nvidia_pytriton.libs"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not binary.is_file() or not stub.is_file():
        raise ToolNotFoundError(
            f"the nvidia-pytriton installation at {package} lacks tritonserver or a python-backend stub for "
            f"Python {version}; {INSTALL_HINT}"
        )
    backend_root = cache_dir() / f"triton-{TRITON_VERSION}-py{version}" / "backends"
    python_backend = backend_root / "python"
    if not (python_backend / "triton_python_backend_stub").is_file():
        LOGGER.info("preparing python backend for Python %s in %s", version, python_backend)
        staging = backend_root.with_name(f"backends.{os.getpid()}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(dist / "backends", staging)
        shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
        shutil.rmtree(backend_root, ignore_errors=True)
        os.replace(staging, backend_root)
    caches = dist / "caches"
    return TritonInstallation(
        binary=binary, backend_dir=backend_root, library_dir=library_dir, cache_dir=caches
    )


@dataclass(frozen=True)
class PerfAnalyzerInstallation:
    """A runnable perf_analyzer and the environment it needs."""

    binary: Path
    library_dirs: tuple[Path, ...]

    def environment(self) -> dict[str, str]:
        """Environment with the CUDA runtime library perf_analyzer links against."""
        env = dict(os.environ)
        dirs = [str(d) for d in self.library_dirs]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*dirs, env.get("LD_LIBRARY_PATH")]))
        return env


def find_perf_analyzer() -> PerfAnalyzerInstallation:
    """Return perf_analyzer from tritonclient[all], checking that its shared libraries resolve."""
    candidates = [Path(sys.executable).parent / "perf_analyzer"]
    on_path = shutil.which("perf_analyzer")
    if on_path:
        candidates.append(Path(on_path))
    binary = next((c for c in candidates if c.is_file()), None)
    if binary is None:
        raise ToolNotFoundError(
            f"perf_analyzer not found (it ships in tritonclient[all]==2.50.0); {INSTALL_HINT}"
        )
    library_dirs = []
    cuda = _package_dir("nvidia")
    if cuda is not None and (cuda / "cuda_runtime" / "lib").is_dir():
        library_dirs.append(cuda / "cuda_runtime" / "lib")
    installation = PerfAnalyzerInstallation(binary=binary, library_dirs=tuple(library_dirs))
    missing = missing_libraries(binary, installation.environment())
    if missing:
        raise ToolNotFoundError(
            f"perf_analyzer cannot start: missing shared libraries {', '.join(missing)} "
            f"(libb64.so.0d comes from the Debian package libb64-0d, libcudart.so.12 from the pip package "
            f"nvidia-cuda-runtime-cu12); {INSTALL_HINT}"
        )
    return installation


def missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """Shared libraries `ldd` cannot resolve for `binary` in `env` (empty when ldd is unavailable)."""
    if shutil.which("ldd") is None:
        return []
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env, check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if "not found" in line]


def libpython_available(version: str) -> bool:
    """Whether the shared libpython the python-backend stub links against can be found."""
    return ctypes.util.find_library(f"python{version}") is not None
