"""ModelMeta (and an ONNX export's ExportMeta): round trips and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import parse_params
from visiontune.data.input_stats import InputStats
from visiontune.models.checkpoint import load_checkpoint, save_checkpoint
from visiontune.models.meta import ModelMeta
from visiontune.models.onnx_model import ExportMeta

PATH = Path("models/model.pt")


@pytest.fixture
def meta() -> ModelMeta:
    """A meta whose params hold every kind of value: numbers, strings, tuples, ranges."""
    params = parse_params(
        {
            "model": {"width": 4, "blocks": 1},
            "train": {"crop": 0, "resized_crop": True, "crop_scale": [0.5, 1.0]},
            "sweep": {"x_values": [0.01, 0.1], "y_values": [4, 8]},
        }
    )
    return ModelMeta(
        params=params,
        classes=("cat", "dog", "fish"),
        channels=1,
        image_size=8,
        mean=(0.25,),
        std=(0.5,),
        reference=InputStats(3, (0.25,), (0.5,), {"5-8px": 3}, {"L": 2, "P": 1}),
    )


def test_dict_and_json_round_trips(meta: ModelMeta) -> None:
    data = meta.to_dict()
    keys = ["params", "classes", "channels", "image_size", "mean", "std", "reference"]
    assert list(data) == keys
    assert data["classes"] == ["cat", "dog", "fish"] and data["mean"] == [0.25]
    assert data["reference"]["modes"] == {"L": 2, "P": 1}
    assert ModelMeta.from_dict(data, PATH) == meta
    assert ModelMeta.from_dict(json.loads(json.dumps(data)), PATH) == meta


def test_a_model_trained_while_params_had_a_tune_section_loads(meta: ModelMeta) -> None:
    """The tuner's settings left params.yaml: an older checkpoint's ``tune`` is dropped."""
    data = meta.to_dict()
    data["params"]["tune"] = {"space": [{"key": "model.lr", "type": "float", "low": 0.001}]}
    assert ModelMeta.from_dict(data, PATH) == meta


def test_a_model_trained_before_references_loads_without_one(meta: ModelMeta) -> None:
    data = meta.to_dict()
    del data["reference"]
    assert ModelMeta.from_dict(data, PATH).reference is None
    data["reference"] = {"count": 3, "mean": [0.2]}
    with pytest.raises(VisiontuneError) as error:
        ModelMeta.from_dict(data, PATH)
    assert str(error.value) == (
        f"{PATH} is not a visiontune model file (unusable meta: reference: no std, sizes, modes)"
    )


def test_checkpoint_round_trip(meta: ModelMeta, tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "model.pt", meta.build_model(), meta)
    stored = torch.load(tmp_path / "model.pt", weights_only=True)
    assert list(stored) == ["state_dict", *meta.to_dict()]
    model, loaded = load_checkpoint(tmp_path / "model.pt", torch.device("cpu"))
    assert loaded == meta and not model.training
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        ({}, "params, classes, channels, image_size, mean, std"),
        ([1, 2], "params, classes, channels, image_size, mean, std"),
        ({"params": {}, "classes": [], "channels": 1, "image_size": 8}, "mean, std"),
    ],
)
def test_missing_keys_are_one_line(data: object, missing: str) -> None:
    with pytest.raises(VisiontuneError) as error:
        ModelMeta.from_dict(data, PATH)
    assert str(error.value) == f"{PATH} is not a visiontune model file (no {missing})"


def test_extra_keys_are_named_first(meta: ModelMeta) -> None:
    data = meta.to_dict()
    del data["std"]
    with pytest.raises(VisiontuneError, match=r"\(no state_dict, std\)$"):
        ModelMeta.from_dict(data, PATH, extra_keys=("state_dict",))


def test_unusable_params_are_one_line(meta: ModelMeta) -> None:
    data = meta.to_dict()
    data["params"]["model"]["depth"] = 3
    with pytest.raises(VisiontuneError) as error:
        ModelMeta.from_dict(data, PATH)
    assert str(error.value) == (
        f"{PATH} is not a visiontune model file (unusable meta: unknown key 'depth')"
    )


def test_export_meta_round_trip_and_missing_keys(meta: ModelMeta) -> None:
    exported = ExportMeta(meta, quantized=True, source_md5="0" * 32)
    assert ExportMeta.from_json(exported.to_json(), PATH) == exported
    with pytest.raises(VisiontuneError) as error:
        ExportMeta.from_json(json.dumps({"classes": ["a"]}), PATH)
    assert str(error.value) == (
        f"{PATH} is not a visiontune model file (no quantized, params, channels, image_size, "
        "mean, std); export it with `visiontune export --format onnx`"
    )
