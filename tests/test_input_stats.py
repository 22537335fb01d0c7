"""Input statistics: size buckets, shifts against a reference, the server's rolling window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visiontune.data.input_stats import (
    MIN_IMAGES,
    InputStats,
    RollingInputStats,
    drift_score,
    moments,
    pixel_sums,
    shifts,
    size_bucket,
)


@pytest.mark.parametrize(
    ("width", "height", "bucket"),
    [(1, 1, "1px"), (2, 1, "2px"), (8, 8, "5-8px"), (9, 4, "9-16px"), (28, 28, "17-32px")],
)
def test_size_bucket_is_the_longer_side_rounded_up_to_a_power_of_two(width, height, bucket):
    assert size_bucket(width, height) == bucket


def test_moments_and_stats_pool_every_pixel() -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 3, 5, 4), dtype=np.uint8)
    stats = InputStats.of(moments(images), ["5-8px"] * 7, ["RGB"] * 6 + ["P"])
    pixels = images.transpose(1, 0, 2, 3).reshape(3, -1) / 255
    assert stats.count == 7
    assert stats.mean == pytest.approx(pixels.mean(axis=1), abs=1e-6)
    assert stats.std == pytest.approx(pixels.std(axis=1), abs=1e-6)
    assert (stats.sizes, stats.modes) == ({"5-8px": 7}, {"P": 1, "RGB": 6})
    assert InputStats.from_dict(stats.to_dict()) == stats


@pytest.mark.parametrize(
    "shape", [(3, 2, 224, 224), (0, 3, 8, 8), (1, 1, 257, 257), (1, 1, 258, 258)]
)
def test_pixel_sums_are_exact_and_moments_divide_them(
    shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole 255s squared overflow no uint16, nor, from 258 x 258 pixels, a uint32 sum;
    several chunks of images sum as one."""
    images = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    images[:1, :1] = 255
    monkeypatch.setattr("visiontune.data.input_stats._CHUNK_PIXELS", 1)  # an image a chunk
    wide = images.astype(np.int64).reshape(*shape[:2], math.prod(shape[2:]))
    expected = np.stack([wide.sum(axis=2), (wide * wide).sum(axis=2)], axis=-1)
    sums = pixel_sums(images)
    assert sums.shape == (*shape[:2], 2) and np.array_equal(sums, expected)
    scale = max(1, math.prod(shape[2:])) * np.array([255.0, 255.0**2])
    assert np.array_equal(moments(images), expected / scale)


def test_shifts_are_effect_sizes() -> None:
    reference = InputStats(100, (0.3,), (0.4,), {"5-8px": 100}, {"L": 100})
    batch = InputStats(50, (0.5,), (0.2,), {"5-8px": 25, "17-32px": 25}, {"L": 50})
    rows = {row.name: row for row in shifts(batch, reference)}
    assert rows["mean[0]"].value == pytest.approx(0.5)  # (0.5 - 0.3) / 0.4
    assert rows["std[0]"].value == pytest.approx(math.log(0.5))
    assert rows["size"].value == pytest.approx(0.5)  # half the images in another bucket
    assert (rows["size"].reference, rows["size"].batch) == ("5-8px 100%", "17-32px 50%, 5-8px 50%")
    assert rows["mode"].value == 0 and not rows["mode"].moved
    assert all(rows[name].moved for name in ("mean[0]", "std[0]", "size"))
    assert drift_score(list(rows.values())) == pytest.approx(math.log(2))


def test_rolling_window_keeps_the_last_images() -> None:
    reference = InputStats(100, (0.5,), (0.25,), {"5-8px": 100}, {"L": 100})
    window = RollingInputStats(MIN_IMAGES)
    dark = np.zeros((MIN_IMAGES - 1, 1, 8, 8), dtype=np.uint8)
    window.add(moments(dark), ["5-8px"] * len(dark), ["L"] * len(dark))
    assert math.isnan(window.score(reference))  # below the minimum
    mid = np.full((MIN_IMAGES, 1, 8, 8), 128, dtype=np.uint8)
    window.add(moments(mid[:1]), ["5-8px"], ["L"])
    assert window.score(reference) == pytest.approx((0.5 - 128 / 255 / MIN_IMAGES) / 0.25)
    window.add(moments(mid), ["5-8px"] * MIN_IMAGES, ["L"] * MIN_IMAGES)
    assert len(window) == MIN_IMAGES
    # the dark images are gone: the mean is back, the std is zero (floored at one grey level)
    assert window.score(reference) == pytest.approx(math.log(0.25 * 255), abs=1e-6)
