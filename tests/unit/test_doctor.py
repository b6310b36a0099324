"""`trb doctor` says when the venv's Python is not the one the python-backend stub embeds."""

from __future__ import annotations

import sys

import pytest

from model_repo_builder import doctor
from model_repo_builder.errors import TrbError


def test_a_venv_from_another_interpreter_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "base_prefix", "/root/.pyenv/versions/3.11.7")
    with pytest.raises(
        TrbError, match=r"comes from /root/.pyenv/versions/3.11.7.*rm -rf .venv && bash scripts/install.sh"
    ):
        doctor._stub_interpreter()


def test_the_system_interpreter_passes(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not (doctor.Path(f"/usr/bin/python{version}")).is_file():
        pytest.skip(f"no /usr/bin/python{version} on this machine")
    assert f"/usr/bin/python{version}" in doctor._stub_interpreter()
