"""The package layers in pyproject.toml catch what they forbid: `lint-imports` fails on a
copy of the package given an import that climbs a layer or crosses between siblings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under ``root``/src, with ``root``'s pyproject.toml."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root / "src"), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(
        ROOT / "src" / "visiontune",
        tmp_path / "src" / "visiontune",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def test_the_package_keeps_its_layers(package_copy: Path) -> None:
    result = lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "visiontune layers KEPT" in result.stdout


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("serving/app.py", "from visiontune.training import fit"),  # serving never trains
        ("training/fit.py", "from visiontune.tuning import study"),  # up a layer
        ("config/params.py", "from visiontune.data import download"),  # the old params -> sources
        ("monitoring/drift.py", "from visiontune.serving import app"),  # siblings stay apart
    ],
)
def test_a_forbidden_import_breaks_the_contract(package_copy: Path, module: str, line: str) -> None:
    path = package_copy / "src" / "visiontune" / module
    path.write_text(path.read_text() + f"\n\ndef _late() -> None:\n    {line}  # noqa\n")
    result = lint_imports(package_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "visiontune layers BROKEN" in result.stdout
    assert line.split()[1] in result.stdout  # names the imported package
