"""Every dvc.yaml stage lists as deps exactly the source files its script imports.

A module missing from a stage's deps lets a change to it leave dvc.lock stale: DVC would
call the stage unchanged and never re-run it. A module listed that the stage does not
import re-runs it for changes that cannot affect it. The import closure is read from the
source (lazy imports inside functions included), not by importing it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from visiontune.experiments import source_closure

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "visiontune"
INITS = sorted(PACKAGE.rglob("__init__.py"))
# Plumbing that cannot change a result: one-line error reporting, the stage entry point
# (load params, call main) and the packages' docstrings (an __init__ holds nothing else, as
# test_package_inits_hold_only_their_docstring checks). Listing them would re-run every
# stage for a message or a docstring.
EXEMPT = {
    "src/visiontune/config/errors.py",
    "src/visiontune/stage.py",
    *(init.relative_to(ROOT).as_posix() for init in INITS),
}
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def import_closure(script: Path) -> set[str]:
    """Repository paths of every visiontune source file ``script`` imports, transitively."""
    return {path.relative_to(ROOT).as_posix() for path in source_closure.import_closure(script)}


def test_the_closure_follows_lazy_imports() -> None:
    closure = import_closure(ROOT / "stages" / "sweep.py")
    assert "src/visiontune/training/fit.py" in closure  # imported inside a function of sweep.py
    assert "src/visiontune/models/meta.py" in closure  # below that lazy import, two modules down
    assert "src/visiontune/training/__init__.py" in closure  # runs before training.fit


@pytest.mark.parametrize("init", INITS, ids=lambda p: p.parent.name)
def test_package_inits_hold_only_their_docstring(init: Path) -> None:
    """Importing a package runs nothing but its modules: no eager imports, no code."""
    body = ast.parse(init.read_text()).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{init}: only a docstring"
    assert isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_lists_exactly_the_source_files_it_imports(stage: str) -> None:
    spec = STAGES[stage]
    script = spec["cmd"].split()[1]
    deps = {dep if isinstance(dep, str) else next(iter(dep)) for dep in spec["deps"]}
    assert script in deps
    sources = {dep for dep in deps if dep.startswith(("src/", "stages/"))} - {script}
    closure = import_closure(ROOT / script) - EXEMPT
    assert sorted(closure - sources) == [], f"dvc.yaml stage {stage} imports but does not list"
    assert sorted(sources - closure) == [], f"dvc.yaml stage {stage} lists but does not import"


def test_every_stage_that_builds_from_model_params_depends_on_the_weights_file() -> None:
    """model.weights names data: a stage reading model.* starts a model from that file (DVC
    resolves the template from params.yaml; with "" it is the weights/ folder)."""
    for stage, spec in STAGES.items():
        builds = "model" in spec.get("params", [])
        assert ("weights/${model.weights}" in spec["deps"]) == builds, stage


def test_dvc_yaml_and_the_code_name_the_same_outputs() -> None:
    from visiontune.config import paths

    declared = {
        entry if isinstance(entry, str) else next(iter(entry))
        for spec in STAGES.values()
        for kind in ("outs", "metrics", "plots")
        for entry in spec.get(kind, [])
    }
    known = {value.as_posix() for value in vars(paths).values() if isinstance(value, Path)}
    assert [p for p in declared if not any(p == k or p.startswith(f"{k}/") for k in known)] == []
    outputs = [paths.RAW, paths.PREPARED, paths.DATA_METRICS, paths.MODEL, paths.TRAIN_METRICS]
    outputs += [paths.EVALUATE_METRICS, paths.SWEEP_GRID]
    outputs += [Path(paths.TRAIN_SERIES.format(s)) for s in ("val/acc", "val/loss", "train/acc")]
    assert [p.as_posix() for p in outputs if p.as_posix() not in declared] == []
    assert {paths.TRAIN_SERIES.format("val/acc")} <= {
        next(iter(entry)) for entry in STAGES["train"]["plots"]
    }


# What a stage process must not load before it starts work: a stage imports what it uses,
# and pandas is for reading results (visiontune.experiments.frame), never for making them.
NOT_AT_START = {
    "download": ("torch", "PIL", "pandas"),  # the datasets import numpy or sklearn when used
    "train": ("optuna", "PIL", "timm", "pandas"),  # optuna only when a tuner's trial runs it
    "evaluate": ("PIL", "dvclive", "pandas"),
    "sweep": ("torch", "PIL", "pandas"),  # a sweep whose cells are all stored never loads torch
}


@pytest.mark.parametrize("stage", sorted(NOT_AT_START))
def test_a_stage_starts_without_what_it_does_not_use(stage: str) -> None:
    script = ROOT / STAGES[stage]["cmd"].split()[1]
    probe = (
        f"import runpy, sys; runpy.run_path({str(script)!r}, run_name='imported'); "
        f"print(' '.join(m for m in {NOT_AT_START[stage]!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"stages/{stage}.py imports at start: {result.stdout}"
