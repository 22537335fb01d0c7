"""The tuner's settings in pyproject.toml: shipped defaults, overrides, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from visiontune.config.params import ParamsError
from visiontune.config.tune_settings import (
    TuneSettings,
    load_settings,
    parse_settings,
    read_table,
    to_raw,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_defaults_are_the_shipped_settings_and_pyproject_lists_every_key():
    shipped = read_table(ROOT / "pyproject.toml")
    assert to_raw(parse_settings(shipped)) == to_raw(TuneSettings())
    assert set(shipped) == set(to_raw(TuneSettings()))
    assert set(shipped["pruning"]) == set(to_raw(TuneSettings())["pruning"])


def test_params_yaml_has_no_tune_section():
    """`dvc exp show` lists every key of params.yaml: no stage reads the tuner's."""
    assert "tune" not in yaml.safe_load((ROOT / "params.yaml").read_text())


def test_overrides_as_set_gives_them(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.visiontune.tune]\npruner = "hyperband"\n'
        '[tool.visiontune.tune.space]\n"model.lr" = { type = "float", low = 0.01, high = 0.1 }\n'
        '"model.width" = { type = "categorical", choices = [8, 16] }\n'
    )
    settings = load_settings(
        tmp_path,
        {
            "tune.pruner": "none",
            "tune.pruning.n_warmup_steps": 1,
            "tune.space.model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
            "tune.space.model.width": None,  # out of the space
        },
    )
    assert settings.pruner == "none" and settings.pruning.n_warmup_steps == 1
    assert [param.key for param in settings.space] == ["model.lr", "model.dropout"]


def test_a_folder_without_settings_takes_the_shipped_ones(tmp_path):
    assert load_settings(tmp_path) == TuneSettings()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load_settings(tmp_path) == TuneSettings()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tune.pruner": "asha"}, "tune.pruner must be one of none, median"),
        ({"tune.trials": 0}, "tune.trials must be >= 1, got 0"),
        ({"tune.study": "my study"}, "tune.study must use letters, digits, - and _ only"),
        ({"tune.sampler": "cmaes"}, "tune.sampler is not a known key"),
        ({"tune.metric.x": 1}, "tune.metric.x is not a tune setting"),
        ({"tune.space.model.lr": {"type": "float", "low": 0.1, "high": 0.01}}, "low must be <"),
        ({"tune.space.model.width": {"type": "categorical", "choices": [0]}}, "model.width must"),
        ({"tune.space.data.colour": {"type": "int", "low": 1, "high": 2}}, "must name a data"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, overrides, message):
    with pytest.raises(ParamsError, match=message.replace(".", r"\.")) as error:
        load_settings(tmp_path, overrides)
    assert "\n" not in str(error.value)


def test_invalid_toml_is_one_line(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.visiontune.tune\n")
    with pytest.raises(ParamsError, match=r"pyproject\.toml is not valid TOML"):
        load_settings(tmp_path)


def test_the_tune_command_reports_a_bad_setting_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    command = [sys.executable, "-m", "visiontune", "tune", "--set", "tune.pruner=asha"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: tune.pruner must be one of none, median")
    assert result.stderr.count("\n") == 1
