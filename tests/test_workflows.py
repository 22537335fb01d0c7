"""Offline checks of the GitHub Actions workflows: schema, zizmor audit, README commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = [WORKFLOWS / name for name in ("ci.yaml", "experiments.yaml", "deploy.yaml")]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed here: python -m pip install -e '.[dev]'")
    return str(path)


def _offline_env() -> dict[str, str]:
    # No token, so nothing could be fetched even if an online audit slipped through.
    drop = {"GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN", "ZIZMOR_CONFIG"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["NO_COLOR"] = "1"
    return env


def _steps(path: Path) -> list[dict]:
    workflow = yaml.safe_load(path.read_text())
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def _readme_block_after(marker: str) -> list[str]:
    """The lines of the first indented code block after the line containing ``marker``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("    "):
            block.append(line.strip())
        elif block and line.strip():
            break
    assert block, f"no code block after {marker!r} in README.md"
    return block


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_matches_github_schema(path: Path) -> None:
    # The schema ships inside check-jsonschema: no network.
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_offline_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing() -> None:
    result = subprocess.run(
        [
            _tool("zizmor"),
            "--offline",
            "--no-config",
            "--no-progress",
            "--format",
            "json",
            *map(str, WORKFLOW_FILES),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_offline_env(),
    )
    findings = json.loads(result.stdout or "[]")
    summary = [
        f"{f['ident']} ({f['determinations']['severity']}): {f['desc']}"
        f" at {loc['symbolic']['route']['route']}"
        for f in findings
        for loc in f["locations"][:1]
    ]
    assert findings == [], "\n".join(summary)
    assert result.returncode == 0, result.stderr


def test_ci_runs_readme_setup_and_test_commands() -> None:
    (setup,) = _readme_block_after("## Set-up")
    (test,) = _readme_block_after("Run the tests with")
    assert setup == 'python -m pip install -e ".[dev]"'
    assert test == "pytest"
    runs = [step["run"].strip() for step in _steps(WORKFLOWS / "ci.yaml") if "run" in step]
    assert setup in runs
    assert test in runs
    assert runs.index(setup) < runs.index(test)
    assert setup in [
        step["run"].strip() for step in _steps(WORKFLOWS / "experiments.yaml") if "run" in step
    ]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_actions_pinned_to_commit_with_version_comment(path: Path) -> None:
    uses = [line.strip() for line in path.read_text().splitlines() if "uses:" in line]
    assert uses
    pinned = re.compile(r"(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+")
    for line in uses:
        assert pinned.fullmatch(line), line


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_expressions_in_run_scripts(path: Path) -> None:
    # Values from events and inputs reach scripts through env:, never as script text.
    for step in _steps(path):
        assert "${{" not in step.get("run", ""), step
