"""One-line errors, and the full traceback behind them when VISIONTUNE_DEBUG asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _params_command(tmp_path: Path, debug: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text("model:\n  lr: -1\n")
    env = {k: v for k, v in os.environ.items() if k != "VISIONTUNE_DEBUG"}
    if debug is not None:
        env["VISIONTUNE_DEBUG"] = debug
    command = [sys.executable, "-m", "visiontune", "params"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("debug", [None, "0", ""])
def test_a_user_error_is_one_line(tmp_path: Path, debug: str | None) -> None:
    result = _params_command(tmp_path, debug)
    assert result.returncode == 1
    assert result.stderr == "error: model.lr must be > 0, got -1\n"


def test_visiontune_debug_prints_the_traceback_too(tmp_path: Path) -> None:
    result = _params_command(tmp_path, "1")
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "ParamsError: model.lr must be > 0, got -1" in result.stderr
    assert result.stderr.endswith("\nerror: model.lr must be > 0, got -1\n")


def test_debug_shows_the_exception_a_one_line_error_replaced(tmp_path: Path) -> None:
    """A message raised ``from None`` hides its cause from users, not from VISIONTUNE_DEBUG."""
    code = (
        "from visiontune.config.errors import VisiontuneError, one_line_errors\n"
        "with one_line_errors():\n"
        "    try:\n"
        "        {}['key']\n"
        "    except KeyError:\n"
        "        raise VisiontuneError('no key') from None\n"
    )
    env = {**os.environ, "VISIONTUNE_DEBUG": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 1
    assert "KeyError: 'key'" in result.stderr
    assert "which visiontune reported as:" in result.stderr
    assert result.stderr.endswith("VisiontuneError: no key\nerror: no key\n")
