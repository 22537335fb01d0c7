"""The preprocess stage: raw images -> fixed-size uint8 images split into train/val/test.

``prepare`` decodes every image of ``data/raw`` as the model takes it
(:mod:`visiontune.data.images`), takes a seeded subset per class, deals each class into
stratified splits, and stores them with their meta (classes, channels, image_size, train
mean/std per channel on a 0..1 scale, split counts, skipped unreadable images, non-image
files the download stage ignored, and the train split's :class:`InputStats`: the reference
that drift checks compare against) in the prepared format (:mod:`visiontune.data.prepared`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import DataParams
from visiontune.data.folders import files
from visiontune.data.images import (
    Loaded,
    Loader,
    convert,
    decompression_bombs_refused,
    load_all,
    load_file,
    unreadable_error,
)
from visiontune.data.input_stats import REFERENCE_SPLIT, InputStats, moments
from visiontune.data.prepared import SPLITS, PreparedMeta, write_meta, write_split


def prepare(raw_dir: Path, out_dir: Path, data: DataParams) -> dict:
    """Decode, resize and split the raw dataset; write tensors and meta.json; return counts.

    Every unreadable image is reported in one error, unless ``data.skip_corrupt``. The
    files the download stage ignored (not images) are counted apart from the skipped ones.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    source = _read_source(raw_dir)
    classes = source["classes"]
    ignored = source.get("ignored", [])
    members, load = _open_raw(raw_dir, source, data)
    with decompression_bombs_refused():
        loaded, unreadable = _load_classes(members, load, data)
    if unreadable and not data.skip_corrupt:
        raise unreadable_error(unreadable, "set data.skip_corrupt=true to skip unreadable images")
    dealt = _split_classes(classes, loaded, data)
    shape = (data.channels, data.image_size, data.image_size)
    splits = {split: _stack(*dealt[split], shape) for split in SPLITS}
    for split, (images, labels) in splits.items():
        write_split(out_dir, split, images, labels)
    mean, std = _channel_stats(splits["train"][0])
    described = dealt[REFERENCE_SPLIT][0]
    reference = InputStats.of(
        moments(splits[REFERENCE_SPLIT][0]),
        [image.size for image in described],
        [image.mode for image in described],
    )
    counts = {split: len(labels) for split, (_, labels) in splits.items()}
    skipped = sorted(ref for ref, _ in unreadable)
    meta = PreparedMeta(
        classes=tuple(classes),
        channels=data.channels,
        image_size=data.image_size,
        mean=tuple(mean),
        std=tuple(std),
        counts=counts,
        skipped=tuple(skipped),
        ignored=tuple(ignored),
        reference=reference,
    )
    write_meta(out_dir, meta)
    return {**counts, "classes": len(classes), "skipped": len(skipped), "ignored": len(ignored)}


def _read_source(raw_dir: Path) -> dict:
    path = raw_dir / "source.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VisiontuneError(
            f"{path} not found; run the download stage first (`dvc repro download`)"
        ) from None
    except ValueError as exc:
        raise VisiontuneError(f"{path} is corrupt ({exc}); run `dvc repro download`") from None


def _open_raw(raw_dir: Path, source: dict, data: DataParams) -> tuple[list[list], Loader]:
    """Per class, references to its images; and the function that loads one reference."""
    classes = source["classes"]
    shape = {"channels": data.channels, "size": data.image_size}
    if source["format"] == "arrays":
        images, labels = _read_arrays(raw_dir / "arrays.npz")
        members = [np.flatnonzero(labels == label).tolist() for label in range(len(classes))]
        return members, lambda index: convert(Image.fromarray(images[index]), **shape)
    members = [
        [path.relative_to(raw_dir).as_posix() for path in files(raw_dir / "images" / name)]
        for name in classes
    ]
    return members, lambda relative: load_file(raw_dir / str(relative), **shape)


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as arrays:
            return arrays["images"], arrays["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise VisiontuneError(f"cannot read {path} ({exc}); run `dvc repro download`") from None


def _subset(refs: list, limit: int, rng: np.random.Generator) -> list:
    """At most ``limit`` references (0 = all), a seeded random choice kept in order."""
    if not limit or len(refs) <= limit:
        return refs
    return [refs[i] for i in np.sort(rng.choice(len(refs), limit, replace=False))]


def _load_classes(
    members: list[list], load: Loader, data: DataParams
) -> tuple[list[list[Loaded]], list[tuple[str, str]]]:
    """Per class, its (subset of) images in a seeded random order; and the unreadable ones."""
    rng = np.random.default_rng(data.seed)
    loaded, unreadable = [], []
    for refs in members:
        images = load_all(_subset(refs, data.max_per_class, rng), load, unreadable)
        loaded.append([images[i] for i in rng.permutation(len(images))])
    return loaded, unreadable


def _split_classes(
    classes: list[str], loaded: list[list[Loaded]], data: DataParams
) -> dict[str, tuple[list[Loaded], list[int]]]:
    """Deal each class's shuffled images into stratified train/val/test splits."""
    parts: dict[str, tuple[list[Loaded], list[int]]] = {s: ([], []) for s in SPLITS}
    for label, (name, members) in enumerate(zip(classes, loaded, strict=True)):
        start = 0
        for split, count in zip(SPLITS, _split_sizes(len(members), data, name), strict=True):
            images, labels = parts[split]
            images.extend(members[start : start + count])
            labels.extend([label] * count)
            start += count
    return parts


def _split_sizes(count: int, data: DataParams, name: str) -> tuple[int, int, int]:
    """(train, val, test) sizes of a class of ``count`` images; at least one to train on."""
    val = round(count * data.val_fraction)
    test = round(count * data.test_fraction)
    if count - val - test < 1:
        raise VisiontuneError(
            f"class {name!r} has {count} usable images: too few to keep one for training "
            f"with data.val_fraction={data.val_fraction:g} and "
            f"data.test_fraction={data.test_fraction:g}"
        )
    return count - val - test, val, test


def _stack(
    images: list[Loaded], labels: list[int], shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = [image.tensor for image in images]
    stacked = torch.stack(tensors) if tensors else torch.empty((0, *shape), dtype=torch.uint8)
    return stacked, torch.tensor(labels, dtype=torch.int64)


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on a 0..1 scale, exact (integer histograms), so reproducible."""
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].flatten(), minlength=256).tolist()
        total = sum(counts)
        first = sum(value * count for value, count in enumerate(counts))
        second = sum(value * value * count for value, count in enumerate(counts))
        means.append(round(first / total / 255, 6))
        stds.append(round((second * total - first * first) ** 0.5 / total / 255, 6))
    return means, stds
