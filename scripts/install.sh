#!/usr/bin/env bash
# Install trb into ./.venv with everything its binaries need, on Debian or Ubuntu.
#
# System part (apt): libb64-0d for perf_analyzer, the shared libpython the Triton python-backend
# stub links against, venv support, and qemu-user for the tests that emulate a CPU without VNNI.
# Python part (pip): the pinned set in pyproject.toml, including tritonserver (nvidia-pytriton), perf_analyzer (tritonclient[all]) and the CUDA runtime
# library perf_analyzer loads. trb finds the binaries and sets LD_LIBRARY_PATH itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# The python-backend stub embeds the system's shared libpython; PyTriton (and anything that uses
# multiprocessing inside a stub) only works when the venv's interpreter is that same build. So the
# default is the distribution's own Python, not whatever `python3` is first on PATH (pyenv, conda).
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  for candidate in /usr/bin/python3 /usr/bin/python3.12 /usr/bin/python3.11 /usr/bin/python3.10; do
    if [ -x "$candidate" ]; then PYTHON="$candidate"; break; fi
  done
fi
py_version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
case "$py_version" in
  3.10|3.11|3.12) ;;
  *) echo "trb needs Python 3.10-3.12 (the Triton python-backend stubs), found $py_version" >&2; exit 1 ;;
esac

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
dpkg -s libb64-0d >/dev/null 2>&1 || missing+=(libb64-0d)
ldconfig -p | grep -q "libpython${py_version}\.so" || missing+=("libpython${py_version}")
"$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=("python${py_version}-venv")
# qemu-user runs the int8 portability tests on an emulated AVX2-only CPU (tests/emulated_cpu.py).
command -v qemu-x86_64 >/dev/null 2>&1 || missing+=(qemu-user)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A venv made from another interpreter (an older install, a pyenv python) is rebuilt.
wanted="$("$PYTHON" -c 'import sys; print(sys.base_prefix)')"
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')" != "$wanted" ]; then
  echo "rebuilding .venv from $PYTHON (the interpreter the python-backend stub's libpython matches)"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
.venv/bin/trb doctor
