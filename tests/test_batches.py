"""Whole-batch augmentation, normalisation and evaluation."""

from __future__ import annotations

import torch

from visiontune.data.augmentation import Augmentation
from visiontune.data.batches import BatchSource, Shard, index_batches
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


def test_shards_of_a_pass_are_the_single_process_pass_split_by_rank():
    """Three processes read disjoint shares (4, 3, 3 images of a last batch of 10) of each
    global batch, every image augmented (resized crops, flips, jitter) as one process would:
    their batches joined are one process's, bit for bit; in evaluation, contiguous shares."""
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40)
    view = ModelInput.from_stats([0.5] * 3, [0.25] * 3, CPU, stored=8, size=6)
    augmentation = Augmentation(flip=True, resized_crop=True, jitter=0.4)

    def passes(shard: Shard, generator: torch.Generator | None) -> list:
        source = BatchSource(images, labels, view, augmentation, shard)
        return list(source.batches(15, generator))

    single = passes(Shard(), torch.Generator().manual_seed(3))
    shards = [passes(Shard(rank, 3), torch.Generator().manual_seed(3)) for rank in range(3)]
    assert [[len(b) for b in shard] for shard in shards] == [[5, 5, 4], [5, 5, 3], [5, 5, 3]]
    for step, whole in enumerate(single):
        parts = [shard[step] for shard in shards]
        assert torch.equal(torch.cat([p.labels for p in parts]), whole.labels)
        assert torch.equal(torch.cat([p.inputs for p in parts]), whole.inputs)
        assert {p.total for p in parts} == {len(whole)}
    evaluated = [passes(Shard(rank, 3), None) for rank in range(3)]
    order = [b.labels for shard in evaluated for b in shard]
    assert torch.cat(order).tolist() == list(range(40))
