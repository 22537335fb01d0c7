"""Whole-batch augmentation, normalisation and evaluation."""

from __future__ import annotations

import torch

from visiontune.data.augmentation import Augmentation
from visiontune.data.batches import index_batches
from visiontune.data.model_input import ModelInput
from visiontune.models.scoring import evaluate_split

CPU = torch.device("cpu")


def augment(images: torch.Tensor, *, flip: bool, crop: int, generator: torch.Generator):
    """The flips and padded crops of small stored images (no evaluation view)."""
    return Augmentation(flip=flip, crop=crop)(images, lambda x: x, images.shape[-1], generator)


def test_index_batches_cover_every_index_once():
    batches = list(index_batches(10, 4, CPU, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert torch.cat(list(index_batches(5, 2, CPU))).tolist() == [0, 1, 2, 3, 4]


def test_flip_mirrors_some_images_and_keeps_others():
    images = torch.arange(64 * 3 * 4 * 4, dtype=torch.uint8).view(64, 3, 4, 4)
    out = augment(images, flip=True, crop=0, generator=torch.Generator().manual_seed(0))
    flipped = (out == images.flip(3)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert (flipped | kept).all()
    assert 10 < flipped.sum() < 54


def test_crop_shifts_within_padding():
    images = torch.zeros(32, 1, 8, 8, dtype=torch.uint8)
    images[:, :, 3, 3] = 255
    out = augment(images, flip=False, crop=2, generator=torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    rows, cols = (out[:, 0] == 255).nonzero()[:, 1:].T
    assert ((rows - 3).abs() <= 2).all() and ((cols - 3).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 3


def test_augmentation_is_seeded():
    images = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    a = augment(images, flip=True, crop=1, generator=torch.Generator().manual_seed(3))
    b = augment(images, flip=True, crop=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_model_input_standardises():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    out = ModelInput.from_stats([0.5], [0.5], CPU, stored=1)(images)
    assert torch.allclose(out.flatten(), torch.tensor([-1.0, 1.0]))


def test_evaluate_split_matches_a_plain_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images = torch.randint(0, 255, (10, 1, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 3, (10,))
    normalize = ModelInput.from_stats([0.5], [0.25], CPU, stored=4)
    result = evaluate_split(model, images, labels, normalize, batch_size=3)
    logits = model(normalize(images))
    assert abs(result.loss - torch.nn.functional.cross_entropy(logits, labels).item()) < 1e-5
    assert result.acc == (logits.argmax(1) == labels).sum().item() / 10
    assert model.training
