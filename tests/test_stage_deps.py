"""Every dvc.yaml stage depends on every source file its script imports, and on nothing a
change to which cannot affect it.

A stage lists its script and the library packages it imports (src/visiontune/<package>);
.dvcignore leaves out of those folders the modules no stage imports. A module missing from
a stage's deps lets a change to it leave dvc.lock stale: DVC would call the stage unchanged
and never re-run it. The import closure is read from the source (lazy imports inside
functions included), not by importing it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from visiontune.experiments import source_closure

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "visiontune"
INITS = sorted(PACKAGE.rglob("__init__.py"))
# What every stage imports outside the packages it lists: the stage entry point (load
# params, call main, keep the record) and the library's docstring. Listing them would re-run
# every stage for a message or a docstring.
EXEMPT = {"src/visiontune/stage.py", "src/visiontune/__init__.py"}
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


def code_deps(stage: str) -> set[str]:
    """The source files and packages ``stage`` lists in dvc.yaml."""
    deps = {dep if isinstance(dep, str) else next(iter(dep)) for dep in STAGES[stage]["deps"]}
    return {dep for dep in deps if dep.startswith(("src/", "stages/"))}


def ignored_modules() -> set[str]:
    """The modules .dvcignore leaves out of the packages' hashes."""
    lines = (ROOT / ".dvcignore").read_text().splitlines()
    return {line for line in lines if line.startswith("src/") and line.endswith(".py")}


def covered(path: str, deps: set[str]) -> bool:
    return path in deps or any(path.startswith(f"{dep}/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_depends_on_every_source_file_it_imports(stage: str) -> None:
    script = STAGES[stage]["cmd"].split()[1]
    deps = code_deps(stage)
    assert script in deps
    closure = import_closure(ROOT / script) - EXEMPT
    missing = sorted(p for p in closure if not covered(p, deps) or p in ignored_modules())
    assert missing == [], f"dvc.yaml stage {stage} imports but does not depend on"
    packages = {dep for dep in deps if dep.startswith("src/")}
    unused = sorted(dep for dep in packages if not any(covered(p, {dep}) for p in closure))
    assert unused == [], f"dvc.yaml stage {stage} lists but imports nothing of"
    assert all((ROOT / dep).is_dir() and dep.count("/") == 2 for dep in packages), packages
    assert deps - packages == {script}, "a stage lists its own script and packages only"


def test_dvcignore_leaves_out_exactly_the_modules_no_stage_imports() -> None:
    imported = set().union(*(import_closure(ROOT / STAGES[s]["cmd"].split()[1]) for s in STAGES))
    packages = set().union(*(code_deps(stage) for stage in STAGES)) - {
        STAGES[s]["cmd"].split()[1] for s in STAGES
    }
    modules = {
        path.relative_to(ROOT).as_posix()
        for package in packages
        for path in (ROOT / package).rglob("*.py")
    }
    assert sorted(ignored_modules() - modules) == [], "ignored, but in no stage's package"
    assert sorted(ignored_modules() & imported) == [], "ignored, but a stage imports it"
    unlisted = sorted(modules - imported - ignored_modules())
    assert unlisted == [], "in a stage's package but imported by no stage: add to .dvcignore"


def test_every_stage_that_builds_from_model_params_depends_on_the_weights_file() -> None:
    """model.weights names data: a stage reading model.* starts a model from that file (DVC
    resolves the template from params.yaml; with none, the marker weights/none)."""
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


@pytest.mark.slow
def test_dvc_reruns_the_stages_that_import_a_changed_module_and_only_them(baseline_clone):
    """Real dvc status, in a copy: a module's change marks the stages that import it, and a
    change to a module no stage imports (.dvcignore) marks none."""
    repo = baseline_clone

    def changed_code(module: str | None = None) -> set[tuple[str, str]]:
        """(stage, package) pairs dvc status reports, with ``module`` edited."""
        path = repo.path / (module or "dvc.yaml")
        original = path.read_text()
        if module:
            path.write_text(original + "# changed\n")
        try:
            status = json.loads(repo.dvc("status", "--json").stdout)
        finally:
            path.write_text(original)
        return {
            (stage, dep)
            for stage, changes in status.items()
            for change in changes
            if isinstance(change, dict)
            for dep in change.get("changed deps", {})
            if dep.startswith("src/")
        }

    # dvc.lock records the code as committed: no code dependency has changed before an edit.
    assert changed_code() == set(), "dvc.lock is stale: run dvc repro and commit it"

    def marked_by(module: str) -> set[str]:
        return {stage for stage, dep in changed_code(module) if module.startswith(dep)}

    assert marked_by("src/visiontune/training/trainer.py") == {"train", "sweep"}
    assert marked_by("src/visiontune/tuning/trial_link.py") == {"train"}
    assert marked_by("src/visiontune/evaluation/robustness.py") == {"evaluate", "robustness"}
    for module in ("src/visiontune/experiments/report.py", "src/visiontune/tuning/runners.py"):
        assert marked_by(module) == set(), module
