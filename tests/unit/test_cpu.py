"""The CPU record of a build and the launch warning for int8 repositories served elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_repo_builder.runtime.cpu import CpuInfo, cpu_info, int8_cpu_warning

VNNI = CpuInfo(model="Intel Xeon", int8_flags=("avx2", "avx512f", "avx512_vnni"))
AVX2 = CpuInfo(model="AMD EPYC 7B12", int8_flags=("avx2",))
INT8 = {"precision": "int8"}
FULL_RANGE = {"name": "s8", "saturation_free": False}


def test_cpuinfo_is_read_for_the_flags_integer_kernels_dispatch_on(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: avx512_vnni\n"
    )
    info = cpu_info(cpuinfo)
    assert info == AVX2
    assert not info.has_vnni and info.int8_kernels.startswith("avx2")
    assert cpu_info(tmp_path / "missing") == CpuInfo(model="unknown", int8_flags=())


def test_a_full_range_int8_build_verified_with_vnni_warns_on_a_cpu_without_it() -> None:
    verification = {"int8_scheme": FULL_RANGE, "cpu": VNNI.as_dict()}
    warning = int8_cpu_warning("m", INT8, verification, AVX2)
    assert warning is not None and "Intel Xeon" in warning and "AMD EPYC 7B12" in warning
    assert "Rebuild" in warning
    assert int8_cpu_warning("m", INT8, verification, VNNI) is None


def test_a_repository_from_before_the_record_is_taken_as_full_range() -> None:
    assert int8_cpu_warning("m", INT8, {}, AVX2) is not None
    assert int8_cpu_warning("m", INT8, {}, VNNI) is None


@pytest.mark.parametrize(
    ("options", "verification"),
    [
        ({"precision": "fp32"}, {}),
        (INT8, {"int8_scheme": {"name": "u8", "saturation_free": True}, "cpu": VNNI.as_dict()}),
        (INT8, {"int8_scheme": FULL_RANGE, "cpu": AVX2.as_dict()}),  # verified on the same kernels
    ],
)
def test_no_warning_where_the_answers_cannot_drift(options: dict, verification: dict) -> None:
    assert int8_cpu_warning("m", options, verification, AVX2) is None
