"""The preprocess stage: raw images -> fixed-size uint8 images split into train/val/test.

``prepare`` takes a seeded subset of each class's images in a seeded order, deals each
class into stratified splits, and decodes them as the model takes them
(:mod:`visiontune.data.decoding`) in chunks, on ``data.workers`` processes
(:mod:`visiontune.data.decoder_processes`). Once the files are dealt, every chunk's rows in
its split's file are known: a process decodes a chunk and writes it there itself, sending
back only counts and the chunk's statistics (no pixels), which this process merges, so
memory does not grow with the dataset. The files are in the prepared format
(:mod:`visiontune.data.prepared`), with their meta: classes, channels, image_size, train
mean/std per channel on a 0..1 scale, split counts, skipped unreadable images, non-image
files the download stage ignored, and the train split's :class:`InputStats` (the reference
that drift checks compare against). The result does not depend on the number of processes.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import DataParams
from visiontune.data.decoder_processes import decoder_pool
from visiontune.data.decoding import (
    ChunkJob,
    ChunkStats,
    DecodedRows,
    decode_rows,
    unreadable_error,
)
from visiontune.data.folders import files
from visiontune.data.input_stats import REFERENCE_SPLIT, InputStats, moments_of
from visiontune.data.prepared import SPLITS, PreparedMeta, SplitWriter, writing

MIN_CLASSES = 2  # a classifier needs something to tell apart
CHUNK_PIXELS = 1 << 22  # pixels decoded per chunk (16 to 1,024 images)
PARALLEL_FROM = 2048  # images: fewer are decoded in the stage's own process
Dealt = dict[str, tuple[list, list[int]]]  # split -> (image references, labels)
Items = Callable[[list], list]  # image references -> ChunkJob's items
Decode = Callable[[Iterable[ChunkJob]], Iterator[DecodedRows]]  # jobs -> their rows, in order


def prepare(raw_dir: Path, out_dir: Path, data: DataParams) -> dict:
    """Decode, resize and split the raw dataset; write the splits and meta.json; return
    counts.

    Every unreadable image is reported in one error, unless ``data.skip_corrupt``: then it
    is left out of the split it was dealt to. The files the download stage ignored (not
    images) are counted apart from the skipped ones. A dataset of fewer than
    :data:`MIN_CLASSES` classes, a class left with no image to train on, or an empty
    validation or test split is an error.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    source = _read_source(raw_dir)
    classes = source["classes"]
    _check_classes(classes, source.get("source", str(raw_dir)))
    ignored = source.get("ignored", [])
    members, items = _open_raw(raw_dir, source)
    dealt = _deal(classes, _shuffled_subsets(members, data), data)
    shape = (data.channels, data.image_size, data.image_size)
    unreadable: list[tuple[str, str]] = []
    reference = _SplitStats(data.channels, data.image_size)
    files_to_decode = 0 if source["format"] == "arrays" else sum(len(r) for r, _ in dealt.values())
    size = chunk_size(data.channels, data.image_size)
    with writing(out_dir) as out, _decoding(data, files_to_decode, size) as decode:
        writers = {split: out.split(split, len(dealt[split][0]), shape) for split in SPLITS}
        jobs = list(_jobs(dealt, writers, items, size))
        kept: dict[str, list[int]] = {split: [] for split in SPLITS}
        runs: dict[str, list[tuple[int, int]]] = {split: [] for split in SPLITS}
        for (split, job), rows in zip(jobs, decode(job for _, job in jobs), strict=True):
            refs, labels = dealt[split]
            bad = {position for position, _ in rows.unreadable}
            chunk_labels = labels[job.first : job.first + len(job.items)]
            kept[split].extend(label for i, label in enumerate(chunk_labels) if i not in bad)
            runs[split].append((job.first, rows.written))
            unreadable.extend((str(refs[job.first + i]), why) for i, why in rows.unreadable)
            if rows.stats is not None:
                reference.add(rows.stats)
        for split in SPLITS:
            writers[split].finish(np.array(kept[split], dtype=np.int64), runs[split])
            dealt[split] = (dealt[split][0], kept[split])
        if unreadable and not data.skip_corrupt:
            hint = "set data.skip_corrupt=true to skip unreadable images"
            raise unreadable_error(sorted(unreadable), hint)
        _check_trainable(classes, dealt, data)
        _check_evaluable(dealt, data)
        counts = {split: len(dealt[split][1]) for split in SPLITS}
        skipped = sorted(ref for ref, _ in unreadable)
        mean, std = reference.channel_stats()
        out.meta(
            PreparedMeta(
                classes=tuple(classes),
                channels=data.channels,
                image_size=data.image_size,
                mean=tuple(mean),
                std=tuple(std),
                counts=counts,
                skipped=tuple(skipped),
                ignored=tuple(ignored),
                reference=reference.stats(),
            )
        )
    return {**counts, "classes": len(classes), "skipped": len(skipped), "ignored": len(ignored)}


def _check_classes(classes: list[str], source: str) -> None:
    """At least :data:`MIN_CLASSES` classes, or one line naming the source and its classes."""
    if len(classes) < MIN_CLASSES:
        found = f"{len(classes)} class{'' if len(classes) == 1 else 'es'} found"
        names = f" ({', '.join(classes)})" if classes else ""
        raise VisiontuneError(
            f"data.source {source}: {found}{names}; a classifier needs at least {MIN_CLASSES}"
        )


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


def _open_raw(raw_dir: Path, source: dict) -> tuple[list[list], Items]:
    """Per class, references to its images (array indices or file paths relative to
    ``raw_dir``); and what turns references into :class:`ChunkJob`'s items."""
    classes = source["classes"]
    if source["format"] == "arrays":
        images, labels = _read_arrays(raw_dir / "arrays.npz")
        members = [np.flatnonzero(labels == label).tolist() for label in range(len(classes))]
        return members, lambda refs: [images[index] for index in refs]
    members = [
        [path.relative_to(raw_dir).as_posix() for path in files(raw_dir / "images" / name)]
        for name in classes
    ]
    return members, lambda refs: [str(raw_dir / relative) for relative in refs]


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


def _shuffled_subsets(members: list[list], data: DataParams) -> list[list]:
    """Per class, its (subset of) references in a seeded random order."""
    rng = np.random.default_rng(data.seed)
    chosen = []
    for refs in members:
        subset = _subset(refs, data.max_per_class, rng)
        chosen.append([subset[i] for i in rng.permutation(len(subset))])
    return chosen


def _deal(classes: list[str], chosen: list[list], data: DataParams) -> Dealt:
    """Deal each class's shuffled references into stratified train/val/test splits."""
    parts: Dealt = {split: ([], []) for split in SPLITS}
    for label, (name, refs) in enumerate(zip(classes, chosen, strict=True)):
        start = 0
        for split, count in zip(SPLITS, _split_sizes(len(refs), data, name), strict=True):
            split_refs, labels = parts[split]
            split_refs.extend(refs[start : start + count])
            labels.extend([label] * count)
            start += count
    return parts


def _check_trainable(classes: list[str], dealt: Dealt, data: DataParams) -> None:
    """Each class still has an image to train on once the unreadable ones are left out."""
    for label, name in enumerate(classes):
        if label not in dealt["train"][1]:
            usable = sum(labels.count(label) for _, labels in dealt.values())
            _split_sizes(0, data, name, usable)


def _check_evaluable(dealt: Dealt, data: DataParams) -> None:
    """The validation and test splits each have an image: an empty one scores 0 on nothing."""
    for split in ("val", "test"):
        if not dealt[split][1]:
            per_class = Counter(label for _, labels in dealt.values() for label in labels)
            fraction = data.val_fraction if split == "val" else data.test_fraction
            raise VisiontuneError(
                f"the {split} split is empty: data.{split}_fraction={fraction:g} of at most "
                f"{max(per_class.values())} usable images per class keeps none; "
                f"raise data.{split}_fraction or use more images per class"
            )


def _split_sizes(
    count: int, data: DataParams, name: str, usable: int | None = None
) -> tuple[int, int, int]:
    """(train, val, test) sizes of a class of ``count`` images; at least one to train on
    (an error naming the ``usable`` images, ``count`` unless given, if not)."""
    val = round(count * data.val_fraction)
    test = round(count * data.test_fraction)
    if count - val - test < 1:
        raise VisiontuneError(
            f"class {name!r} has {count if usable is None else usable} usable images: "
            "too few to keep one for training "
            f"with data.val_fraction={data.val_fraction:g} and "
            f"data.test_fraction={data.test_fraction:g}"
        )
    return count - val - test, val, test


def chunk_size(channels: int, size: int) -> int:
    """Images decoded per chunk: :data:`CHUNK_PIXELS` of output, 16 to 1,024 images."""
    return min(1024, max(16, CHUNK_PIXELS // (channels * size**2)))


def _jobs(
    dealt: Dealt, writers: dict[str, SplitWriter], items: Items, size: int
) -> Iterator[tuple[str, ChunkJob]]:
    """Each split's references in chunks of ``size``, in order, as jobs for their rows."""
    for split in SPLITS:
        refs = dealt[split][0]
        for start in range(0, len(refs), size):
            batch = items(refs[start : start + size])
            yield split, ChunkJob(writers[split].rows, start, batch, split == REFERENCE_SPLIT)


@contextmanager
def _decoding(data: DataParams, images: int, size: int) -> Iterator[Decode]:
    """What runs jobs in order: on ``data.workers`` processes (0 = every core) when there
    are at least :data:`PARALLEL_FROM` image files, else in this one (starting processes
    costs more than a small dataset's decoding, or than converting arrays). The files
    written do not depend on which."""
    run = partial(
        decode_rows, channels=data.channels, size=data.image_size, max_pixels=Image.MAX_IMAGE_PIXELS
    )
    workers = min(data.workers or len(os.sched_getaffinity(0)), -(-images // size))
    if images < PARALLEL_FROM or workers < 2:
        yield lambda jobs: map(run, jobs)
        return
    pool = decoder_pool(workers)
    try:
        yield lambda jobs: pool.map(run, jobs)
    finally:
        pool.shutdown(cancel_futures=True)


class _SplitStats:
    """The reference split's statistics, merged chunk by chunk in order: exact per-channel
    pixel sums (for mean/std) and each image's moments, size bucket and mode."""

    def __init__(self, channels: int, size: int) -> None:
        self.pixels = size * size  # an image's, a channel
        self.first, self.second = [0] * channels, [0] * channels
        self.moments: list[np.ndarray] = []
        self.sizes: list[str] = []
        self.modes: list[str] = []

    def add(self, chunk: ChunkStats) -> None:
        channel_sums = chunk.sums.sum(axis=0, dtype=np.uint64).tolist()
        for channel, (first, second) in enumerate(channel_sums):
            self.first[channel] += first
            self.second[channel] += second
        self.moments.append(moments_of(chunk.sums, self.pixels))
        self.sizes.extend(chunk.sizes)
        self.modes.extend(chunk.modes)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std on a 0..1 scale, exact (integer sums), so reproducible."""
        total = self.pixels * len(self.sizes)
        means, stds = [], []
        for first, second in zip(self.first, self.second, strict=True):
            means.append(round(first / total / 255, 6))
            stds.append(round((second * total - first * first) ** 0.5 / total / 255, 6))
        return means, stds

    def stats(self) -> InputStats:
        return InputStats.of(np.concatenate(self.moments), self.sizes, self.modes)
