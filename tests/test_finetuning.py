"""Fine-tuning: a frozen backbone, its own learning rate, and one input view from training
to evaluation, ONNX export and the API (a 224-px timm model fine-tuned on photos)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.photos import write_photos
from test_serve import _predict, _predict_batch, _serve, _tensor_png

from visiontune.config.params import Params, parse_params
from visiontune.data.batches import read_split
from visiontune.data.download import download
from visiontune.data.preprocess import prepare
from visiontune.models.checkpoint import save_checkpoint
from visiontune.models.onnx_model import OnnxModel, export_onnx
from visiontune.models.scoring import load_trained
from visiontune.training.fit import fit
from visiontune.training.parts import Splits, build_trainer

FLOAT_TOLERANCE = 1e-4


def _digits_params(**sections: dict) -> Params:
    base = {"model": {"width": 8}, "train": {"epochs": 2, "threads": 1, "batch_size": 32}}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return parse_params(base)


def _snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_frozen_backbone_keeps_its_weights_while_the_head_learns(prepared: Path) -> None:
    params = _digits_params(train={"freeze_epochs": 1})
    split = Splits.load(params, prepared)
    trainer = build_trainer(params, split)
    head = [p for p in trainer.model.parameters() if all(p is not b for b in trainer.backbone)]
    backbone, heads = _snapshot(trainer.backbone), _snapshot(head)
    trainer.epoch(split.train, "frozen")
    assert _same(backbone, _snapshot(trainer.backbone))
    assert not _same(heads, _snapshot(head))
    trainer.epoch(split.train, "thawed")
    assert not _same(backbone, _snapshot(trainer.backbone))


def test_the_backbone_learns_at_its_ratio_of_model_lr(prepared: Path) -> None:
    params = _digits_params(
        model={"lr": 0.02, "backbone_lr_ratio": 0.1}, train={"schedule": "none"}
    )
    trainer = build_trainer(params, Splits.load(params, prepared))
    rates = [group["lr"] for group in trainer.optimizer.param_groups]
    assert rates == pytest.approx([0.002, 0.02])
    head = trainer.optimizer.param_groups[1]["params"]
    assert [p.shape for p in head] == [torch.Size([10, 16]), torch.Size([10])]  # the Linear
    onecycle = _digits_params(model={"lr": 0.02, "backbone_lr_ratio": 0.1})
    trainer = build_trainer(onecycle, Splits.load(onecycle, prepared))
    peaks = [group["max_lr"] for group in trainer.optimizer.param_groups]
    assert peaks == pytest.approx([0.002, 0.02])


def test_an_upscaled_centre_view_trains_scores_and_exports_alike(
    prepared: Path, tmp_path: Path
) -> None:
    """Digits stored at 8 px seen as their centre 6 px resized to 12: the network is built
    for 12, and torch and the ONNX export score the stored images alike."""
    params = _digits_params(model={"input_size": 12, "crop_pct": 0.75}, train={"crop": 0})
    fitted = fit(params, prepared)
    assert fitted.meta.input_size == 12 and fitted.meta.image_size == 8
    model = tmp_path / "model.pt"
    save_checkpoint(model, fitted.model, fitted.meta)
    images, _ = read_split(prepared, "test")
    trained = load_trained(model)
    assert trained.input(images[:2]).shape == (2, 1, 12, 12)
    export_onnx(model, tmp_path / "model.onnx")
    onnx = OnnxModel(tmp_path / "model.onnx").probabilities(images.numpy())
    expected = trained.probabilities(images).numpy()
    np.testing.assert_allclose(onnx, expected, atol=FLOAT_TOLERANCE)


@pytest.fixture(scope="module")
def photo_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """resnet18 fine-tuned for an epoch on photos stored at 256 px, taking 224 (timm's
    crop_pct 0.875), with random-resized crops, flips and colour jitter: (model, prepared)."""
    root = tmp_path_factory.mktemp("photos")
    params = parse_params(
        {
            "data": {"image_size": 256, "channels": 3, "val_fraction": 0.25, "test_fraction": 0.3},
            "model": {"name": "resnet18", "input_size": 224, "crop_pct": 0.875, "lr": 0.001},
            "train": {
                "epochs": 1,
                "batch_size": 8,
                "threads": 2,
                "crop": 0,
                "flip": True,
                "resized_crop": True,
                "color_jitter": 0.4,
            },
        }
    )
    download(str(write_photos(root / "photos", per_class=8, sizes=(200, 320))), root / "raw")
    prepare(root / "raw", root / "prepared", params.data)
    fitted = fit(params, root / "prepared")
    assert fitted.meta.input_size == 224
    model = root / "model.pt"
    save_checkpoint(model, fitted.model, fitted.meta)
    return model, root / "prepared"


@pytest.mark.slow
def test_a_fine_tuned_photo_model_serves_and_exports_what_evaluate_predicts(
    photo_model: tuple[Path, Path], tmp_path: Path
) -> None:
    model, prepared = photo_model
    trained = load_trained(model)
    result, _ = trained.score_split(prepared, "test", batch_size=8)  # the evaluate stage's path
    expected = [trained.meta.classes[i] for i in result.predictions.tolist()]
    images, _ = read_split(prepared, "test")
    assert images.shape[1:] == (3, 256, 256)
    top = trained.probabilities(images).max(1).values.tolist()
    pngs = [_tensor_png(image) for image in images]
    onnx = tmp_path / "model.onnx"
    export_onnx(model, onnx)
    onnx_probs = OnnxModel(onnx).probabilities(images.numpy())
    np.testing.assert_allclose(onnx_probs.max(1), top, atol=FLOAT_TOLERANCE)
    for served in (model, onnx):
        with _serve(served, tmp_path / "server.log") as server:
            assert _predict_batch(server, pngs) == expected
            answers = [_predict(server, png).json() for png in pngs]
            assert [answer["label"] for answer in answers] == expected
            assert [answer["probability"] for answer in answers] == pytest.approx(top, abs=1e-4)


def test_training_and_evaluation_views_differ_only_by_chance(prepared: Path) -> None:
    """Without random crops or jitter a training batch is the evaluation view of its images."""
    params = _digits_params(model={"input_size": 12, "crop_pct": 0.75}, train={"crop": 0})
    split = Splits.load(params, prepared)
    source = split.train
    generator = torch.Generator().manual_seed(0)
    batch = next(source.batches(16, generator))
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(0))[:16]
    images = torch.from_numpy(np.asarray(read_split(prepared, "train")[0][order]))
    assert torch.equal(batch.inputs, source.input(images))
    jittered = dataclasses.replace(source.augmentation, jitter=0.4)
    source.augmentation = jittered
    other = next(source.batches(16, torch.Generator().manual_seed(0)))
    assert not torch.equal(other.inputs, batch.inputs)
