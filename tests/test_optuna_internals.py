"""The Optuna internals the tuner calls: all present in the installed Optuna (a clear failure
names any an upgrade removed), each doing on a real storage what the tuner relies on, and
called from tuning/optuna_internals.py alone."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import optuna
import pytest

from visiontune.config.errors import VisiontuneError
from visiontune.tuning import optuna_internals as internals

PACKAGE = Path(internals.__file__).resolve().parents[1]


def test_this_optuna_has_every_internal_the_tuner_calls() -> None:
    lacking = internals.missing()
    if lacking:
        pytest.fail(
            f"Optuna {optuna.__version__} no longer has {', '.join(lacking)}: adapt "
            "src/visiontune/tuning/optuna_internals.py (or pin an earlier Optuna)"
        )
    internals.check()


@pytest.mark.parametrize("name", internals.STORAGE_METHODS)
def test_an_upgrade_without_a_storage_method_is_one_clear_line(monkeypatch, name: str) -> None:
    # As an Optuna without it would be (deleting it would expose a base class's stub).
    monkeypatch.setattr(optuna.storages.RDBStorage, name, None)
    with pytest.raises(VisiontuneError) as info:
        internals.check()
    message = str(info.value)
    assert f"no longer has RDBStorage.{name}, which visiontune's tuner calls" in message
    assert "\n" not in message


def test_an_upgrade_that_changes_the_trial_constructor_is_one_clear_line(monkeypatch) -> None:
    def changed(self, study, trial_id, *, frozen):  # a signature Optuna might move to
        raise AssertionError("never called")

    monkeypatch.setattr(optuna.trial.Trial, "__init__", changed)
    assert internals.missing() == ["Trial(study, trial_id)"]


def test_each_internal_on_a_real_storage(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    first, second = study.ask(), study.ask()

    study_id = internals.study_id(storage, "s")
    with pytest.raises(KeyError):
        internals.study_id(storage, "no-such-study")
    ids = [internals.trial_id(storage, study_id, n) for n in (first.number, second.number)]
    with pytest.raises(KeyError):
        internals.trial_id(storage, study_id, 99)
    assert [internals.frozen_trial(storage, i).number for i in ids] == [0, 1]

    for trial_id in ids:
        internals.record_heartbeat(storage, trial_id)
    assert internals.stale_trial_ids(storage, study_id) == []
    time.sleep(2.5)  # past the grace period: both went stale
    internals.record_heartbeat(storage, ids[1])
    assert internals.stale_trial_ids(storage, study_id) == [ids[0]]

    handle = internals.trial_handle(optuna.load_study(study_name="s", storage=url), ids[0])
    handle.report(0.5, 1)
    assert not handle.should_prune()
    study.tell(handle, 0.75)
    frozen = internals.frozen_trial(storage, ids[0])
    assert frozen.intermediate_values == {1: 0.5} and frozen.value == 0.75


def test_no_other_module_calls_an_internal() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "optuna_internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            through_adapter = isinstance(node, ast.Attribute) and (
                isinstance(node.value, ast.Name) and node.value.id == "internals"
            )
            if isinstance(node, ast.Attribute) and not through_adapter:
                assert node.attr not in internals.STORAGE_METHODS, f"{path}: .{node.attr}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr != "Trial", f"{path}: optuna.Trial(...)"
