"""The test command itself: `pytest <file>` runs that file (addopts must not eat the path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_test_file_named_first_is_the_only_one_collected():
    command = [sys.executable, "-m", "pytest", "tests/test_tune_settings.py", "--collect-only"]
    result = subprocess.run(
        [*command, "-q", "--no-cov", "-n", "0"], cwd=ROOT, capture_output=True, text=True
    )
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("tests/test_tune_settings.py::") for line in collected)
