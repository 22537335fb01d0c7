"""ONNX export, int8 quantization, OnnxModel and `visiontune export`, on the small digits set."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import parse_params
from visiontune.data.batches import read_split
from visiontune.models import export as export_module
from visiontune.models.checkpoint import load_checkpoint, save_checkpoint
from visiontune.models.export import FLOAT_TOLERANCE, export_model, format_table
from visiontune.models.factory import build_model
from visiontune.models.meta import ModelMeta
from visiontune.models.onnx_model import OnnxModel, export_onnx, quantize_onnx, with_normalisation
from visiontune.models.scoring import load_trained

CPU = torch.device("cpu")
INT8_MAX_ACC_DROP = 0.05  # 3 of the 60 test images


def torch_probabilities(model_path: Path, images: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return with_normalisation(load_trained(model_path))(images).softmax(1).numpy()


@pytest.fixture(scope="module")
def onnx_path(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(trained_model, path)
    return path


@pytest.fixture(scope="module")
def int8_path(onnx_path: Path, prepared: Path) -> Path:
    path = onnx_path.with_name("model.int8.onnx")
    train, _ = read_split(prepared, "train")
    quantize_onnx(onnx_path, path, train.numpy())
    return path


def test_float_export_matches_torch_on_the_test_split(onnx_path, trained_model, prepared):
    images, _ = read_split(prepared, "test")
    expected = torch_probabilities(trained_model, images)
    got = OnnxModel(onnx_path, threads=1).probabilities(images.numpy())
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= FLOAT_TOLERANCE
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.parametrize("count", [1, 7])
def test_any_batch_size(onnx_path, int8_path, trained_model, prepared, count):
    images = read_split(prepared, "test")[0][:count]
    probs = OnnxModel(onnx_path).probabilities(images.numpy())
    assert probs.shape == (count, 10)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(probs, torch_probabilities(trained_model, images), atol=1e-5)
    assert OnnxModel(int8_path).probabilities(images.numpy()).shape == (count, 10)


def test_metadata_round_trip(onnx_path, trained_model):
    ckpt = torch.load(trained_model, weights_only=True)
    exported = OnnxModel(onnx_path)
    meta = exported.meta.to_dict()
    for key in ("classes", "channels", "image_size", "mean", "std"):
        assert meta[key] == ckpt[key]
    assert json.loads(json.dumps(meta["params"])) == json.loads(json.dumps(ckpt["params"]))
    assert exported.meta == load_checkpoint(trained_model, CPU)[1]
    assert exported.format == "onnx" and exported.quantized is False
    assert exported.source_md5 == hashlib.md5(trained_model.read_bytes()).hexdigest()
    # Per-node debug metadata (stack traces with local paths) is not shipped.
    assert not any(node.metadata_props for node in onnx.load(str(onnx_path)).graph.node)


def test_int8_is_smaller_keeps_accuracy_and_metadata(onnx_path, int8_path, prepared):
    images, labels = read_split(prepared, "test")
    float_model, int8_model = OnnxModel(onnx_path), OnnxModel(int8_path)
    assert int8_path.stat().st_size < 0.6 * onnx_path.stat().st_size
    float_acc = (float_model.probabilities(images.numpy()).argmax(1) == labels.numpy()).mean()
    int8_acc = (int8_model.probabilities(images.numpy()).argmax(1) == labels.numpy()).mean()
    assert int8_acc >= float_acc - INT8_MAX_ACC_DROP
    assert int8_model.meta == float_model.meta and int8_model.source_md5 == float_model.source_md5
    assert (float_model.quantized, int8_model.quantized) == (False, True)
    assert {node.op_type for node in onnx.load(str(int8_path)).graph.node} >= {
        "QuantizeLinear",
        "DequantizeLinear",
    }


@pytest.mark.parametrize(
    ("name", "size"),
    [("resnet18", 16), pytest.param("convnext_atto", 32, marks=pytest.mark.slow)],
)
def test_a_timm_model_exports(tmp_path, name, size):
    params = parse_params({"model": {"name": name}, "data": {"image_size": size, "channels": 3}})
    torch.manual_seed(0)
    model = build_model(params.model, num_classes=4, channels=3, image_size=size).eval()
    meta = ModelMeta(
        params=params,
        classes=tuple("abcd"),
        channels=3,
        image_size=size,
        mean=(0.5,) * 3,
        std=(0.2,) * 3,
    )
    save_checkpoint(tmp_path / "model.pt", model, meta)
    export_onnx(tmp_path / "model.pt", tmp_path / "model.onnx")
    images = torch.randint(0, 256, (5, 3, size, size), dtype=torch.uint8)
    expected = torch_probabilities(tmp_path / "model.pt", images)
    got = OnnxModel(tmp_path / "model.onnx").probabilities(images.numpy())
    np.testing.assert_allclose(got, expected, atol=FLOAT_TOLERANCE)
    assert OnnxModel(tmp_path / "model.onnx").meta.params.model.name == name


def test_onnx_model_rejects_bad_files(tmp_path):
    with pytest.raises(VisiontuneError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")
    (tmp_path / "text.onnx").write_text("not a model\n")
    with pytest.raises(VisiontuneError, match="is not an ONNX model"):
        OnnxModel(tmp_path / "text.onnx")
    identity = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "plain",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(identity, tmp_path / "plain.onnx")
    with pytest.raises(VisiontuneError, match="has no visiontune metadata"):
        OnnxModel(tmp_path / "plain.onnx")


def test_probabilities_reject_wrong_images(onnx_path):
    with pytest.raises(VisiontuneError, match=r"expected uint8 images of shape \(N, 1, 8, 8\)"):
        OnnxModel(onnx_path).probabilities(np.zeros((2, 3, 8, 8), dtype=np.uint8))


def test_a_failed_export_is_one_line_and_leaves_no_file(trained_model, tmp_path, monkeypatch):
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator\nlong details")

    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(VisiontuneError, match=r"to ONNX: unsupported operator$"):
        export_onnx(trained_model, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_leaves_no_file(trained_model, tmp_path, monkeypatch):
    def half_write(proto: onnx.ModelProto, path: str) -> None:
        Path(path).write_bytes(proto.SerializeToString()[:100])
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", half_write)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(trained_model, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_model_fails_when_onnx_disagrees_with_torch(
    trained_model, prepared, tmp_path, monkeypatch
):
    ckpt = torch.load(trained_model, weights_only=True)
    head_bias = [key for key in ckpt["state_dict"] if key.endswith(".bias")][-1]
    ckpt["state_dict"][head_bias] += torch.linspace(0, 1, len(ckpt["classes"]))
    torch.save(ckpt, tmp_path / "other.pt")  # the weights a faulty exporter would write
    monkeypatch.setattr(
        export_module, "export_onnx", lambda _model, out: export_onnx(tmp_path / "other.pt", out)
    )
    out = tmp_path / "out" / "model.onnx"
    with pytest.raises(VisiontuneError, match=r"disagrees with torch.*nothing written"):
        export_model(trained_model, out, prepared, tmp_path / "export.json", quantize=False)
    assert list(out.parent.iterdir()) == [] and not (tmp_path / "export.json").exists()


def test_export_model_rejects_data_of_another_shape(trained_model, prepared, tmp_path):
    shutil.copytree(prepared, tmp_path / "prepared")
    np.save(tmp_path / "prepared" / "test-images.npy", np.zeros((3, 1, 16, 16), np.uint8))
    np.save(tmp_path / "prepared" / "test-labels.npy", np.zeros(3, np.int64))
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    meta["image_size"], meta["counts"]["test"] = 16, 3
    (tmp_path / "prepared" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        VisiontuneError, match=r"shape \(1, 16, 16\) but the model takes \(1, 8, 8\)"
    ):
        export_model(
            trained_model,
            tmp_path / "m.onnx",
            tmp_path / "prepared",
            tmp_path / "e.json",
            quantize=False,
        )


def test_export_model_reports_every_variant(trained_model, prepared, tmp_path):
    metrics = export_model(
        trained_model,
        tmp_path / "model.int8.onnx",
        prepared,
        tmp_path / "metrics" / "export.json",
        quantize=True,
        threads=1,
    )
    assert json.loads((tmp_path / "metrics" / "export.json").read_text()) == metrics
    assert metrics["test_images"] == 60 and metrics["threads"] == 1
    assert metrics["onnx"]["agreement"] == 1 and metrics["onnx"]["max_prob_diff"] <= 1e-4
    assert metrics["int8"]["size_bytes"] == (tmp_path / "model.int8.onnx").stat().st_size
    assert metrics["int8"]["size_bytes"] < metrics["onnx"]["size_bytes"]
    assert metrics["int8"]["acc"] >= metrics["onnx"]["acc"] - INT8_MAX_ACC_DROP
    for variant in ("torch", "onnx", "int8"):
        assert metrics[variant]["latency_1_ms"] > 0 and metrics[variant]["latency_batch_ms"] > 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics", "model.int8.onnx"]
    table = format_table(metrics)
    assert "latency 60 images" in table and "int8" in table


def visiontune(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visiontune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def workspace(tmp_path, trained_model, prepared) -> Path:
    """A directory laid out like the repository: models/model.pt and data/prepared."""
    (tmp_path / "models").mkdir()
    shutil.copy(trained_model, tmp_path / "models" / "model.pt")
    shutil.copytree(prepared, tmp_path / "data" / "prepared")
    (tmp_path / "truncated.pt").write_bytes(trained_model.read_bytes()[:1000])
    (tmp_path / "notes.txt").write_text("not a model\n")
    return tmp_path


@pytest.mark.slow
def test_cli_exports_quantizes_and_prints_the_table(workspace):
    result = visiontune(workspace, "export", "--format", "onnx", "--quantize", "--threads", "1")
    assert result.returncode == 0, result.stderr
    rows = {line[:20].strip(): line[20:].split() for line in result.stdout.splitlines()}
    assert rows[""] == ["torch", "onnx", "int8"]
    assert re.fullmatch(
        r"[\d.]+ KB [\d.]+ KB \([\d.]+x\) [\d.]+ KB \([\d.]+x\)", " ".join(rows["size"])
    )
    assert re.fullmatch(
        r"[\d.]+ [\d.]+ \([+-][\d.]+\) [\d.]+ \([+-][\d.]+\)", " ".join(rows["test acc"])
    )
    assert re.fullmatch(r"- 60/60 \d+/60", " ".join(rows["labels as torch"]))
    for label in ("latency 1 image", "latency 60 images"):
        assert re.fullmatch(r"[\d.]+ ms( [\d.]+ ms \([\d.]+x\)){2}", " ".join(rows[label]))
    assert "wrote models/model.int8.onnx and metrics/export.json" in result.stdout
    metrics = json.loads((workspace / "metrics" / "export.json").read_text())
    assert set(metrics) >= {"torch", "onnx", "int8"}
    assert OnnxModel(workspace / "models" / "model.int8.onnx").quantized is True
    assert not (workspace / "models" / "model.onnx").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "models/missing.pt"], "error: models/missing.pt not found"),
        (["--model", "truncated.pt"], "error: truncated.pt is not a visiontune model file"),
        (["--prepared", "nowhere"], "error: nowhere/meta.json not found"),
        (["--out", "models/model.pt"], "error: the ONNX file's name must end in .onnx"),
        pytest.param(
            ["--model", "notes.txt"],
            "error: notes.txt is not a visiontune model file",
        ),
        pytest.param(
            ["--model", "data/prepared/test-images.npy"],
            "is not a visiontune model file",
        ),
    ],
    ids=["missing", "truncated", "no-data", "out-pt", "text-file", "data-file"],
)
def test_cli_bad_inputs_fail_with_one_line(workspace, trained_model, args, message):
    result = visiontune(workspace, "export", "--format", "onnx", *args)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert not (workspace / "models" / "model.onnx").exists()
    assert (workspace / "models" / "model.pt").read_bytes() == trained_model.read_bytes()


def test_cli_accepts_only_the_onnx_format(workspace):
    result = visiontune(workspace, "export", "--format", "tflite")
    assert result.returncode == 2
    assert "argument --format: invalid choice: 'tflite'" in result.stderr.splitlines()[-1]
