"""params.yaml validation: every bad value gives one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from visiontune.config.errors import USER_ERROR_EXIT
from visiontune.config.params import Params, ParamsError, load_params, parse_params, to_raw
from visiontune.experiments.listing import flatten

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "digits"
    assert params.model.lr > 0


def test_missing_keys_take_defaults():
    assert parse_params({}) == Params()
    assert parse_params({"model": {"lr": 1}}).model.lr == 1.0


def test_the_defaults_are_the_shipped_params_and_params_yaml_lists_every_key():
    """One source of defaults: a key missing from params.yaml takes the value it ships."""
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    code = dict(flatten(to_raw(Params())))
    listed = dict(flatten(to_raw(parse_params(shipped))))
    differ = {key: (code[key], listed[key]) for key in code if code[key] != listed[key]}
    assert differ == {}, f"code default differs from params.yaml (code, yaml): {differ}"
    written = {key for key, _ in flatten(shipped)}
    assert sorted(set(code) - written) == [], "keys params.yaml leaves to the code's defaults"


def test_a_key_deleted_from_params_yaml_takes_its_shipped_value(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    deleted = "\n".join(line for line in text.splitlines() if not line.startswith("  lr:"))
    shipped = yaml.safe_load(text)["model"]["lr"]
    assert effective_params(tmp_path, deleted)["model"]["lr"] == shipped == 0.01


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"lr": -1}}, "model.lr must be > 0, got -1"),
        ({"model": {"lr": "fast"}}, "model.lr must be a number, got 'fast'"),
        ({"model": {"lrr": 0.1}}, "model.lrr is not a known key; expected one of name, lr,"),
        ({"modle": {}}, "modle is not a known key; expected one of data, model, train"),
        ({"model": 3}, "model must be a mapping of keys to values, got 3"),
        ({"train": {"epochs": 2.5}}, "train.epochs must be an integer, got 2.5"),
        ({"train": {"epochs": True}}, "train.epochs must be an integer, got True"),
        ({"train": {"epochs": 0}}, "train.epochs must be >= 1, got 0"),
        ({"train": {"optimizer": "rmsprop"}}, "train.optimizer must be one of sgd, adam, adamw"),
        ({"train": {"device": "gpu"}}, "train.device must be auto, cpu, cuda, cuda:N or mps"),
        ({"model": {"batchnorm": "yes"}}, "model.batchnorm must be true or false, got 'yes'"),
        ({"model": {"dropout": 1}}, "model.dropout must be < 1, got 1"),
        ({"data": {"channels": 2}}, "data.channels must be one of 1, 3, got 2"),
        ({"data": {"source": "imagenet"}}, "data.source must be one of digits, mnist_subset,"),
        (
            {"data": {"val_fraction": 0.5, "test_fraction": 0.5}},
            "data.val_fraction + data.test_fraction must be < 0.9",
        ),
        ({"model": {"pretrained": True}}, "model.pretrained needs a timm model"),
        ({"model": {"weights": "w.safetensors"}}, "model.weights needs a timm model"),
        (
            {"model": {"name": "resnet18", "weights": "a.pt", "pretrained": True}},
            "set model.pretrained (weights from the hub) or model.weights (from a file), not both",
        ),
        ({"model": {"name": "resnet18", "weights": "../a.pt"}}, "model.weights must name a file"),
        ({"model": {"name": "resnet18", "weights": "/a.pt"}}, "model.weights must name a file"),
        (
            {"model": {"name": "resnet18", "weights": "weights/a.pt"}},
            "model.weights names a file inside weights/, without the folder: a.pt, got",
        ),
        ({"model": {"name": "resnet18", "mean_std": "pretrained"}}, "model.mean_std=pretrained"),
        ({"model": {"mean_std": "imagenet"}}, "model.mean_std must be one of data, pretrained"),
        ({"model": {"backbone_lr_ratio": 0}}, "model.backbone_lr_ratio must be > 0, got 0"),
        ({"model": {"crop_pct": 1.2}}, "model.crop_pct must be <= 1, got 1.2"),
        ({"train": {"crop_scale": [0.5]}}, "train.crop_scale must be a list [min, max] of two"),
        ({"train": {"crop_scale": [0.5, 1.5]}}, "train.crop_scale must be [min, max] with 0 < "),
        ({"train": {"crop_ratio": [1.5, 0.5]}}, "train.crop_ratio must be [min, max] with 0 < "),
        ({"train": {"resized_crop": True}}, "train.resized_crop replaces train.crop's padded"),
        ({"train": {"precision": "fp8"}}, "train.precision must be one of 32, bf16, 16"),
        ({"train": {"precision": 64}}, "train.precision must be one of 32, bf16, 16, got 64"),
        ({"train": {"precision": 16, "device": "cpu"}}, "train.precision=16 needs a CUDA"),
        ({"train": {"color_jitter": 1}}, "train.color_jitter must be < 1, got 1"),
    ],
)
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "source", ["./images", "/data/pets", "pets.zip", "http://127.0.0.1/x.tar.gz", "~/imgs"]
)
def test_locations_are_accepted_as_sources(source):
    assert parse_params({"data": {"source": source}}).data.source == source


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_devices(device):
    assert parse_params({"train": {"device": device}}).train.device == device


@pytest.mark.parametrize(("typed", "value"), [(32, "32"), ("bf16", "bf16"), (16, "16")])
def test_precision_takes_what_users_type(typed, value):
    """-S train.precision=16 reaches the params as a YAML number."""
    assert parse_params({"train": {"precision": typed}}).train.precision == value


def test_a_resized_crop_range_may_be_one_value():
    params = parse_params({"train": {"crop": 0, "resized_crop": True, "crop_scale": [1, 1]}})
    assert params.train.crop_scale == (1.0, 1.0)


def test_unreadable_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("model:\n  lr: [1\n")
    with pytest.raises(ParamsError, match=r"is not valid YAML at line \d"):
        load_params(bad)


def test_every_key_is_declared_by_a_stage():
    """Every key of params.yaml is read by a stage (the tuner's are in pyproject.toml)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = {f"{section}.{key}" for section, values in params.items() for key in values}
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = {p for stage in stages.values() for p in stage.get("params", [])}
    expanded = {k for k in keys if k in declared or k.split(".")[0] in declared}
    assert expanded == keys
    assert declared <= keys | set(params)


def test_stage_reports_bad_params_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("model:\n  lr: -1\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == USER_ERROR_EXIT  # a user error: the tuner does not retry it
    assert result.stderr == "error: model.lr must be > 0, got -1\n"


def test_cli_prints_effective_params(tmp_path):
    assert effective_params(tmp_path, "model:\n  lr: 0.5\n")["model"]["lr"] == 0.5


def effective_params(folder, text: str) -> dict:
    """What `visiontune params` prints for a params.yaml of ``text`` in ``folder``."""
    (folder / "params.yaml").write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "visiontune", "params"], cwd=folder, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)
