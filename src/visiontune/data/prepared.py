"""The prepared dataset (``data/prepared``), written and read by this module alone.

A split is ``<split>.pt``, ``{"images": uint8 (N, C, S, S), "labels": int64 (N,)}``;
``meta.json`` is a :class:`PreparedMeta`. The preprocess stage writes them with
:func:`write_split` and :func:`write_meta`; every stage and command reads them with
:func:`load_split` and :func:`load_meta`, and :func:`stored_files` names the files that
hold some splits (what a content hash of them covers). torch is imported only to store or
load a split: the sweep's cell keys read the file names alone.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.paths import write_json

if TYPE_CHECKING:
    import torch

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


def write_split(prepared_dir: Path, split: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Store one split: uint8 images (N, C, S, S) and int64 labels (N,)."""
    import torch

    Path(prepared_dir).mkdir(parents=True, exist_ok=True)
    torch.save({"images": images, "labels": labels}, _split_path(prepared_dir, split))


def write_meta(prepared_dir: Path, meta: PreparedMeta) -> None:
    """Store the prepared dataset's meta.json."""
    write_json(Path(prepared_dir) / META_FILE, dataclasses.asdict(meta))


def load_split(prepared_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (images uint8 (N,C,S,S), labels int64 (N,)) of one prepared split."""
    import torch

    path = _split_path(prepared_dir, split)
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
    path = Path(prepared_dir) / META_FILE
    _require(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _corrupt(path, exc) from None
    return PreparedMeta.from_dict(data, path)


def stored_files(prepared_dir: Path, splits: tuple[str, ...]) -> list[Path]:
    """The files that hold ``splits`` and the meta, each checked to exist."""
    paths = [_split_path(prepared_dir, split) for split in splits]
    paths.append(Path(prepared_dir) / META_FILE)
    for path in paths:
        _require(path)
    return paths


def _split_path(prepared_dir: Path, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return Path(prepared_dir) / f"{split}.pt"


def _require(path: Path) -> None:
    if not path.is_file():
        raise VisiontuneError(f"{path} not found; run `dvc repro preprocess`")


def _corrupt(path: Path, why: object) -> VisiontuneError:
    return VisiontuneError(f"{path} is corrupt ({why}); run `dvc repro preprocess`")
