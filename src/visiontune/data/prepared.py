"""The prepared dataset (``data/prepared``), written and read by this module alone.

A split is two NumPy files: ``<split>-images.npy``, uint8 (N, C, S, S), and
``<split>-labels.npy``, int64 (N,); ``meta.json`` is a :class:`PreparedMeta` that gives
each split's N. The preprocess stage writes a whole dataset with :func:`writing`: its
decoding processes write images chunk by chunk straight into their rows of a split's file
(:class:`SplitRows`; memory does not grow with the dataset) in a folder beside
the target that is renamed into place only when every file is whole, so a killed
preprocess leaves nothing a stage would take for complete. Every stage and command reads
a split through :func:`open_split` (checked against meta.json: a mismatch is a one-line
error naming the file), which reads it whole or gathers images by index from the file
memory-mapped; :func:`stored_files` names the files that hold some splits (what a content
hash of them covers). numpy only: torch is the callers' business.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.paths import write_json

if TYPE_CHECKING:
    from visiontune.data.input_stats import InputStats

SPLITS = ("train", "val", "test")
META_FILE = "meta.json"


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
        from visiontune.data.input_stats import InputStats

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


def load_meta(prepared_dir: Path) -> PreparedMeta:
    """The prepared dataset's meta.json."""
    path = Path(prepared_dir) / META_FILE
    _require(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _corrupt(path, exc) from None
    return PreparedMeta.from_dict(data, path)


def split_files(prepared_dir: Path, split: str) -> tuple[Path, Path]:
    """The (images, labels) files of one split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return Path(prepared_dir) / f"{split}-images.npy", Path(prepared_dir) / f"{split}-labels.npy"


@dataclass(frozen=True)
class SplitRows:
    """Where one split's images go in its file: image ``i`` (uint8 ``shape``) at ``offset +
    i * row_bytes``. Picklable, so that any process may write its rows (:meth:`write`)."""

    path: Path
    offset: int
    shape: tuple[int, ...]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape))

    def write(self, first: int, pixels: np.ndarray) -> None:
        """Write uint8 images (n, C, S, S) as rows ``first`` to ``first + n - 1``."""
        if pixels.dtype != np.uint8 or pixels.shape[1:] != self.shape:
            raise ValueError(f"expected uint8 images of shape {self.shape}, got {pixels.shape}")
        with self.path.open("r+b") as file:
            file.seek(self.offset + first * self.row_bytes)
            file.write(np.ascontiguousarray(pixels).data)


class SplitWriter:
    """One split's file: rows written at their places (by any process, through
    :attr:`rows`), then closed up and finished with its labels; see :func:`writing`."""

    def __init__(self, folder: Path, split: str, capacity: int, shape: tuple[int, ...]) -> None:
        images_path, self.labels_path = split_files(folder, split)
        images_path.write_bytes(b"")
        header = len(_npy_header((capacity, *shape)))
        self.rows = SplitRows(images_path, header, tuple(shape))

    def finish(self, labels: np.ndarray, runs: list[tuple[int, int]]) -> None:
        """Keep the rows written, ``runs`` of (first row, count) in order, moved up to follow
        each other (one read and write a run that moves: memory holds a run), with
        ``labels`` (one an image); write the header for them."""
        rows, count = self.rows, sum(length for _, length in runs)
        if len(labels) != count:
            raise ValueError(f"{len(labels)} labels for {count} images")
        with rows.path.open("r+b") as file:
            kept = 0
            for first, length in runs:
                if first != kept:
                    file.seek(rows.offset + first * rows.row_bytes)
                    block = file.read(length * rows.row_bytes)
                    file.seek(rows.offset + kept * rows.row_bytes)
                    file.write(block)
                kept += length
            file.truncate(rows.offset + count * rows.row_bytes)
            file.seek(0)
            file.write(_npy_header((count, *rows.shape), rows.offset))
        np.save(self.labels_path, np.asarray(labels, dtype=np.int64))


class PreparedWriter:
    """A prepared dataset being written into ``folder`` (beside its target)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def split(self, split: str, capacity: int, shape: tuple[int, ...]) -> SplitWriter:
        """A writer for ``split``: at most ``capacity`` images of ``shape`` (C, S, S)."""
        return SplitWriter(self.folder, split, capacity, shape)

    def meta(self, meta: PreparedMeta) -> None:
        """Store the dataset's meta.json."""
        write_json(self.folder / META_FILE, dataclasses.asdict(meta))


@contextmanager
def writing(prepared_dir: Path) -> Iterator[PreparedWriter]:
    """Write a prepared dataset into a folder beside ``prepared_dir``, which replaces
    ``prepared_dir`` only when the block ends without an error; on an error it is deleted."""
    target = Path(prepared_dir)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed run
    partial.mkdir(parents=True)
    try:
        yield PreparedWriter(partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


@dataclass(frozen=True)
class StoredSplit:
    """One prepared split on disk, checked against meta.json: its labels in memory, its
    images read whole (:meth:`read`) or gathered by index (:meth:`gather`)."""

    path: Path
    offset: int
    shape: tuple[int, int, int, int]
    labels: np.ndarray

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """The images' size in bytes."""
        return int(np.prod(self.shape))

    def read(self) -> np.ndarray:
        """All images, read into memory: uint8 (N, C, S, S)."""
        with self.path.open("rb") as file:
            file.seek(self.offset)
            pixels = np.fromfile(file, dtype=np.uint8, count=self.nbytes)
        return pixels.reshape(self.shape)

    def gather(self, index: np.ndarray) -> np.ndarray:
        """The images at ``index``, in that order, from the file memory-mapped: only their
        pages are read, and the mapping is dropped afterwards, so memory stays flat."""
        mapped = np.memmap(self.path, np.uint8, "r", self.offset, self.shape)
        return mapped[index]


def open_split(prepared_dir: Path, split: str, meta: PreparedMeta | None = None) -> StoredSplit:
    """One prepared split, checked against ``meta`` (read when not given): the image file's
    dtype, shape and size, the labels' dtype, count and range."""
    meta = meta or load_meta(prepared_dir)
    images_path, labels_path = split_files(prepared_dir, split)
    _require(images_path)
    _require(labels_path)
    expected = (meta.counts.get(split, -1), meta.channels, meta.image_size, meta.image_size)
    try:
        with images_path.open("rb") as file:
            shape, fortran, dtype = _read_header(file)
            offset = file.tell()
    except (OSError, ValueError, SyntaxError) as exc:
        raise _corrupt(images_path, f"not a NumPy file: {reason(exc)}") from None
    if dtype != np.uint8 or fortran or tuple(shape) != expected:
        found = f"{dtype} {tuple(shape)}"
        raise _corrupt(images_path, f"holds {found}, meta.json says uint8 {expected}")
    size, whole = images_path.stat().st_size, offset + int(np.prod(shape))
    if size != whole:
        raise _corrupt(images_path, f"{size} bytes, {whole} expected")
    try:
        labels = np.load(labels_path)
    except (OSError, ValueError, EOFError) as exc:
        raise _corrupt(labels_path, f"not a NumPy file: {reason(exc)}") from None
    if labels.dtype != np.int64 or labels.shape != expected[:1]:
        found = f"{labels.dtype} {labels.shape}"
        raise _corrupt(labels_path, f"holds {found}, meta.json says int64 {expected[:1]}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(meta.classes):
        raise _corrupt(labels_path, f"labels outside 0..{len(meta.classes) - 1}")
    return StoredSplit(images_path, offset, expected, labels)


def stored_files(prepared_dir: Path, splits: tuple[str, ...]) -> list[Path]:
    """The files that hold ``splits`` and the meta, each checked to exist."""
    paths = [path for split in splits for path in split_files(prepared_dir, split)]
    paths.append(Path(prepared_dir) / META_FILE)
    for path in paths:
        _require(path)
    return paths


def _npy_header(shape: tuple[int, ...], length: int | None = None) -> bytes:
    """A NumPy format 1.0 header for uint8 C-order ``shape``, padded with spaces to
    ``length`` bytes (default: the usual 64-byte alignment)."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    size = length or -(-(len(text) + 11) // 64) * 64
    padding = size - 10 - len(text) - 1
    if padding < 0:
        raise ValueError(f"a header for {shape} does not fit in {length} bytes")
    return (
        b"\x93NUMPY\x01\x00" + struct.pack("<H", size - 10) + (text + " " * padding + "\n").encode()
    )


def _read_header(file: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from a NumPy file's header; ValueError if not one."""
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(file)
    return np.lib.format.read_array_header_2_0(file)


def _require(path: Path) -> None:
    if not path.is_file():
        raise VisiontuneError(f"{path} not found; run `dvc repro preprocess`")


def _corrupt(path: Path, why: object) -> VisiontuneError:
    return VisiontuneError(f"{path} is corrupt ({why}); run `dvc repro preprocess`")
