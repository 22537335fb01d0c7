"""Photo augmentation on whole batches (random-resized crops, colour jitter) and the
deterministic evaluation view that serving, export and evaluation share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visiontune.data.augmentation import Augmentation, color_jitter, resized_crops
from visiontune.data.model_input import ModelInput

CPU = torch.device("cpu")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _photos(n: int = 8, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=_gen(9))


def test_a_full_resized_crop_is_the_whole_image_resized():
    images = _photos()
    out = resized_crops(images, 16, (1.0, 1.0), (1.0, 1.0), False, _gen())
    whole = F.interpolate(images.float(), size=(16, 16), mode="bilinear", align_corners=False)
    assert out.shape == (8, 3, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(out, whole, atol=1e-3)


def test_a_full_resized_crop_with_flips_mirrors_some_images():
    images = _photos(64, 8)
    out = resized_crops(images, 8, (1.0, 1.0), (1.0, 1.0), True, _gen())
    mirrored = torch.isclose(out, images.flip(3).float(), atol=1e-3).flatten(1).all(1)
    kept = torch.isclose(out, images.float(), atol=1e-3).flatten(1).all(1)
    assert (mirrored | kept).all() and 10 < mirrored.sum() < 54


def test_a_small_resized_crop_magnifies_one_place():
    """A crop of a quarter of the area, upscaled: neighbouring output pixels change less
    than in the whole image, and the crops differ from image to image."""
    images = _photos(16, 64)
    out = resized_crops(images, 64, (0.25, 0.25), (1.0, 1.0), False, _gen())
    step_in = (images.float().diff(dim=3)).abs().mean()
    step_out = out.diff(dim=3).abs().mean()
    assert step_out < 0.75 * step_in
    same = _photos(16, 64)[:1].expand(16, -1, -1, -1)
    crops = resized_crops(same, 64, (0.25, 0.25), (1.0, 1.0), False, _gen())
    assert len({round(c.sum().item()) for c in crops}) == 16


def test_resized_crops_stay_inside_the_image():
    """A bright image in a dark frame that no crop may reach: no dark output pixel."""
    images = torch.full((32, 1, 40, 40), 200, dtype=torch.uint8)
    out = resized_crops(images, 20, (0.08, 1.0), (0.5, 2.0), True, _gen(1))
    assert out.min() > 199.9


def test_color_jitter_keeps_range_and_varies_images():
    images = _photos(32).float()
    out = color_jitter(images, 0.4, _gen())
    assert out.min() >= 0 and out.max() <= 255 and out.shape == images.shape
    ratio = out.mean(dim=(1, 2, 3)) / images.mean(dim=(1, 2, 3))
    assert ratio.min() > 0.55 and ratio.max() < 1.45 and ratio.std() > 0.05
    gray = color_jitter(images[:, :1], 0.4, _gen())
    assert gray.shape == (32, 1, 32, 32)


def test_augmentation_is_seeded_and_draws_per_image():
    augment = Augmentation(flip=True, resized_crop=True, jitter=0.4)
    images = _photos()
    a = augment(images, lambda x: x, 16, _gen(3))
    b = augment(images, lambda x: x, 16, _gen(3))
    c = augment(images, lambda x: x, 16, _gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_evaluation_view_is_a_centre_crop_resized():
    images = _photos(2, 256)
    view = ModelInput.from_stats([0.5] * 3, [0.5] * 3, CPU, stored=256, crop_pct=0.875, size=224)
    assert (view.crop, view.size) == (224, 224)
    assert torch.equal(view.view(images), images[..., 16:240, 16:240])  # no resize needed
    smaller = ModelInput.from_stats([0.5] * 3, [0.5] * 3, CPU, stored=256, crop_pct=0.5, size=64)
    out = smaller.view(images)
    centre = images[..., 64:192, 64:192].float()
    expected = F.interpolate(centre, size=(64, 64), mode="bilinear", antialias=True)
    assert out.shape == (2, 3, 64, 64) and torch.allclose(out, expected)


def test_no_view_leaves_stored_images_as_they_are():
    images = _photos(2, 8)
    same = ModelInput.from_stats([0.5] * 3, [0.5] * 3, CPU, stored=8)
    assert same.view(images) is images
