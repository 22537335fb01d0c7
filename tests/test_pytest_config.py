"""The test command itself: `pytest <file>` runs that file (addopts must not eat the path),
and no test leaves its environment to the next."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from visiontune.config import cpu_kernels

ROOT = Path(__file__).resolve().parents[1]


def test_a_test_file_named_first_is_the_only_one_collected():
    command = [sys.executable, "-m", "pytest", "tests/test_tune_settings.py", "--collect-only"]
    result = subprocess.run(
        [*command, "-q", "--no-cov", "-n", "0"], cwd=ROOT, capture_output=True, text=True
    )
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("tests/test_tune_settings.py::") for line in collected)


_found: dict[str, str | None] = {}


def test_code_run_in_process_may_set_variables_for_its_subprocesses():
    """What fit does for its default kernels (``train.cpu_kernels: avx2``) on x86-64."""
    _found["ATEN_CPU_CAPABILITY"] = os.environ.get("ATEN_CPU_CAPABILITY")
    os.environ["VISIONTUNE_LEFT_BY_A_TEST"] = "1"
    cpu_kernels.request("avx2")


def test_the_next_test_starts_in_the_environment_the_first_found():
    """Its subprocesses (dvc, the stages) must not inherit the previous test's kernels."""
    if not _found:
        pytest.skip("checks what the test before it left: run the file, not this test alone")
    assert os.environ.get("ATEN_CPU_CAPABILITY") == _found["ATEN_CPU_CAPABILITY"]
    assert "VISIONTUNE_LEFT_BY_A_TEST" not in os.environ
