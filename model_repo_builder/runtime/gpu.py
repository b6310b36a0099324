"""Whether this machine has a usable NVIDIA GPU, asked of `nvidia-smi` (the driver's own tool).

Used where an action needs a GPU on the machine that runs trb (building TensorRT plans); a
repository built for the GPU target is rendered anywhere and needs no GPU to build.
"""

from __future__ import annotations

import shutil
import subprocess

_QUERY = ("nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader")


def gpu_unavailable_reason() -> str | None:
    """None when `nvidia-smi` lists at least one GPU; else why not, in words."""
    if shutil.which(_QUERY[0]) is None:
        return "nvidia-smi is not installed (no NVIDIA driver on this machine)"
    try:
        result = subprocess.run(_QUERY, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"nvidia-smi failed to run ({error})"
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        return f"nvidia-smi failed (exit {result.returncode}: {reason[0] if reason else 'no output'})"
    if not result.stdout.strip():
        return "nvidia-smi lists no GPU"
    return None
