"""The CPU a build was verified on, or a repository is served on, as far as int8 accuracy cares.

ONNX Runtime chooses its integer GEMM kernels from these features; which kernel runs decides whether
int8 weights quantized at full range can saturate (see `export/quantize.py`). trb records them in
`trb.yaml` at build time and compares them at launch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Flags ONNX Runtime's x86 integer kernels dispatch on, in /proc/cpuinfo spelling.
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True, kw_only=True)
class CpuInfo:
    """A CPU's model name and the int8-relevant flags it has."""

    model: str
    int8_flags: tuple[str, ...]

    @property
    def has_vnni(self) -> bool:
        """Whether u8×s8 products accumulate in 32 bits (no int16 saturation)."""
        return any(flag in self.int8_flags for flag in VNNI_FLAGS)

    @property
    def int8_kernels(self) -> str:
        """Which family of ONNX Runtime integer kernels this CPU gets, in words."""
        if self.has_vnni:
            return "vnni (32-bit accumulation)"
        if "avx2" in self.int8_flags:
            return "avx2 (u8s8 pairs accumulate in a saturating int16)"
        return "generic"

    def as_dict(self) -> dict[str, object]:
        """Plain data for trb.yaml."""
        return {"model": self.model, "int8_flags": list(self.int8_flags), "int8_kernels": self.int8_kernels}


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """Read the first processor's model name and flags (an unknown CPU on other systems)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInfo(model="unknown", int8_flags=())
    model, flags = "unknown", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return CpuInfo(model=model, int8_flags=tuple(flag for flag in INT8_FLAGS if flag in flags))


def int8_cpu_warning(
    name: str, options: dict[str, Any], verification: dict[str, Any], serving: CpuInfo
) -> str | None:
    """Why `name`'s int8 answers may differ on `serving` from the figures its build verified, if they may.

    Repositories built before trb recorded its int8 scheme used full-range int8 weights (`s8`).
    """
    if options.get("precision") != "int8":
        return None
    scheme = verification.get("int8_scheme") or {"name": "s8", "saturation_free": False}
    if scheme.get("saturation_free") or serving.has_vnni:
        return None
    built = verification.get("cpu") or {}
    built_flags = set(built.get("int8_flags", VNNI_FLAGS))
    if not built_flags & set(VNNI_FLAGS):
        return None  # verified on the same kind of kernels it will run on
    return (
        f"{name}: its int8 weights ({scheme.get('name')}, full range) were verified on "
        f"{built.get('model', 'a CPU trb did not record')} with VNNI; this CPU ({serving.model}) has no "
        "VNNI, so ONNX Runtime's AVX2 integer kernels can saturate and the answers drift from the "
        "verified ones (bench/results/int8_portability.md: a small T5's top-1 agreement 0.90 → 0.54). "
        "Rebuild it with this trb (`--int8-scheme auto`): its int8 weights compute the same on every x86 CPU."
    )


def repository_cpu_warnings(repository: Path, serving: CpuInfo | None = None) -> list[str]:
    """`int8_cpu_warning` for the repository's manifest (none for a repository without one)."""
    from model_repo_builder.repository.manifest import MANIFEST_NAME, read_manifest

    if not (repository / MANIFEST_NAME).is_file():
        return []
    manifest = read_manifest(repository)
    warning = int8_cpu_warning(manifest.name, manifest.options, manifest.verification, serving or cpu_info())
    return [warning] if warning else []
