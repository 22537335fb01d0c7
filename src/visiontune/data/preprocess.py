"""The preprocess stage: raw images -> fixed-size uint8 tensors split into train/val/test.

``prepare`` writes ``{train,val,test}.pt`` (``{"images": uint8 (N,C,S,S), "labels": int64
(N,)}``) and ``meta.json`` (classes, channels, image_size, train mean/std per channel on a
0..1 scale, split counts, skipped unreadable images, non-image files the download stage
ignored, and the train split's :class:`InputStats`: the reference that drift checks
compare against). ``image_to_tensor`` is the one place where an image is converted, so that
training, serving and drift checks see identical pixels.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.params import DataParams
from visiontune.config.paths import write_json
from visiontune.data.download import files
from visiontune.data.input_stats import REFERENCE_SPLIT, InputStats, moments, size_bucket

SPLITS = ("train", "val", "test")

MAX_LISTED = 10  # unreadable images named in the error; the rest are counted


class Loaded(NamedTuple):
    """One image as the model takes it, with its source's size bucket and mode."""

    tensor: torch.Tensor
    size: str
    mode: str


Loader = Callable[[object], Loaded]  # loads one image reference (array index or path)

# What Pillow raises for a file that is not a readable image (or is a decompression bomb).
UNREADABLE = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


@dataclass(frozen=True)
class PreparedMeta:
    """data/prepared/meta.json: what the prepared tensors hold.

    ``classes`` name the labels 0..K-1; images are uint8 ``channels`` x ``image_size`` x
    ``image_size``; ``mean``/``std`` are the train split's per channel (0..1 scale);
    ``counts`` the images per split; ``skipped`` the unreadable images left out (with
    ``data.skip_corrupt``), ``ignored`` the non-image files the download stage passed over;
    ``reference`` the train split's input statistics (None in a meta.json written before
    they were recorded).
    """

    classes: tuple[str, ...]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    counts: dict[str, int]
    skipped: tuple[str, ...]
    ignored: tuple[str, ...]
    reference: InputStats | None = None

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> PreparedMeta:
        """The meta.json ``data`` read from ``path``; VisiontuneError naming missing keys."""
        keys = [field.name for field in dataclasses.fields(cls) if field.name != "reference"]
        missing = [key for key in keys if not isinstance(data, dict) or key not in data]
        if missing:
            raise _corrupt(path, f"no {', '.join(missing)}")
        try:
            stored = data.get("reference")
            reference = None if stored is None else InputStats.from_dict(stored)
        except (TypeError, ValueError, AttributeError) as exc:
            raise _corrupt(path, f"unusable reference: {reason(exc)}") from None
        return cls(**{key: _frozen(data[key]) for key in keys}, reference=reference)


def _frozen(value: Any) -> Any:
    """A JSON list as a tuple (the form PreparedMeta holds); other values as they are."""
    return tuple(value) if isinstance(value, list) else value


def image_to_tensor(image: Image.Image, channels: int, size: int) -> torch.Tensor:
    """Convert any PIL image to a uint8 tensor (channels, size, size), grayscale or RGB."""
    mode = "L" if channels == 1 else "RGB"
    image.draft(mode, (size, size))  # JPEG: decode at a reduced scale when much larger
    if image.mode.startswith("I;16"):  # 16-bit grayscale: keep the high byte, don't clip
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    pixels = torch.from_numpy(np.array(image))
    return pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1).contiguous()


def convert(image: Image.Image, channels: int, size: int) -> Loaded:
    """:func:`image_to_tensor`, with the image's size bucket and mode as it came."""
    size_, mode = size_bucket(*image.size), image.mode  # before draft() changes them
    return Loaded(image_to_tensor(image, channels, size), size_, mode)


def load_file(path: Path, channels: int, size: int) -> Loaded:
    """An image file, converted as :func:`convert` does."""
    with Image.open(path) as image:
        return convert(image, channels, size)


@contextmanager
def decompression_bombs_refused() -> Iterator[None]:
    """Within the block, Pillow's decompression-bomb warning is an error (unreadable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


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
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        torch.save({"images": images, "labels": labels}, out_dir / f"{split}.pt")
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
    write_json(out_dir / "meta.json", dataclasses.asdict(meta))
    return {**counts, "classes": len(classes), "skipped": len(skipped), "ignored": len(ignored)}


def load_split(prepared_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (images uint8 (N,C,S,S), labels int64 (N,)) of one prepared split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = Path(prepared_dir) / f"{split}.pt"
    _require(path)
    try:
        saved = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        raise _corrupt(path, "not a file written by torch.save") from None
    images = saved.get("images") if isinstance(saved, dict) else None
    labels = saved.get("labels") if isinstance(saved, dict) else None
    if not (
        isinstance(images, torch.Tensor)
        and isinstance(labels, torch.Tensor)
        and images.dtype == torch.uint8
        and images.ndim == 4
        and labels.dtype == torch.int64
        and labels.shape == images.shape[:1]
    ):
        raise _corrupt(path, "not a dict of uint8 images and int64 labels")
    return images, labels


def load_meta(prepared_dir: Path) -> PreparedMeta:
    """The prepared dataset's meta.json."""
    path = Path(prepared_dir) / "meta.json"
    _require(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _corrupt(path, exc) from None
    return PreparedMeta.from_dict(data, path)


def _require(path: Path) -> None:
    if not path.is_file():
        raise VisiontuneError(f"{path} not found; run `dvc repro preprocess`")


def _corrupt(path: Path, reason: object) -> VisiontuneError:
    return VisiontuneError(f"{path} is corrupt ({reason}); run `dvc repro preprocess`")


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


def load_all(refs: list, load: Loader, unreadable: list[tuple[str, str]]) -> list[Loaded]:
    """Load every reference; append each unreadable one, with the reason, to ``unreadable``."""
    images = []
    for ref in refs:
        try:
            images.append(load(ref))
        except UNREADABLE as exc:
            unreadable.append((str(ref), reason(exc)))
    return images


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


def unreadable_error(unreadable: list[tuple[str, str]], hint: str) -> VisiontuneError:
    """One error naming every unreadable image (the first ``MAX_LISTED``, then a count),
    ending with ``hint`` (how to skip them)."""
    if len(unreadable) == 1:
        ref, reason = unreadable[0]
        return VisiontuneError(f"cannot read image {ref}: {reason}; {hint}")
    names = ", ".join(ref for ref, _ in unreadable[:MAX_LISTED])
    more = len(unreadable) - MAX_LISTED
    names += f" and {more} more" if more > 0 else ""
    return VisiontuneError(f"cannot read {len(unreadable)} images: {names}; {hint}")


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
