"""``visiontune drift``: is a folder of images from the distribution the model was trained on?

The folder's images (found as in a ``data.source`` folder, any depth, non-image and hidden
files ignored) are converted exactly as the preprocess stage converts training images and
compared with the reference, the prepared train split: a kernel two-sample test (MMD, see
:mod:`visiontune.monitoring.mmd`) on the model's features (the input of its classifier head)
gives the verdict; input statistics (:mod:`visiontune.data.input_stats`) show what moved.
Both samples are seeded random subsets of at most ``max_images`` images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visiontune.config.errors import VisiontuneError
from visiontune.data.decoding import decompression_bombs_refused, unreadable_error
from visiontune.data.folders import files, image_files
from visiontune.data.images import Loaded, load_all, load_file
from visiontune.data.input_stats import (
    MIN_IMAGES,
    MOVED,
    REFERENCE_SPLIT,
    InputStats,
    Shift,
    drift_score,
    moments,
)
from visiontune.data.input_stats import shifts as input_shifts
from visiontune.data.prepared import META_FILE, StoredSplit, load_meta, open_split
from visiontune.models.features import features
from visiontune.models.meta import ModelMeta
from visiontune.models.scoring import load_trained
from visiontune.monitoring.mmd import MmdResult, mmd_test

MAX_IMAGES = 1000
PERMUTATIONS = 1000
ALPHA = 0.05


@dataclass(frozen=True)
class Batch:
    """The checked folder: what it holds, and what was left out."""

    path: Path
    found: int  # image files
    ignored: int  # other files
    skipped: tuple[str, ...]  # unreadable images left out


@dataclass(frozen=True)
class DriftReport:
    """The outcome of a drift check; :meth:`to_dict` is what ``--out`` writes."""

    batch: Batch
    reference: Path
    reference_used: int  # train images in the two-sample test
    reference_stats: InputStats  # of the whole train split
    batch_stats: InputStats
    shifts: list[Shift]
    test: MmdResult
    alpha: float
    seed: int

    @property
    def drift(self) -> bool:
        return self.test.p_value < self.alpha

    @property
    def outcome(self) -> str:
        return "drift detected" if self.drift else "no drift"

    def verdict(self) -> str:
        """The one line: the outcome, the test's statistic and p-value, the sample sizes."""
        return (
            f"{self.outcome}: MMD^2 {self.test.statistic:.4f}, p = {self.test.p_value:.4f} "
            f"(alpha {self.alpha:g}; {self.batch_stats.count} images of {self.batch.path} "
            f"vs {self.reference_used} {REFERENCE_SPLIT} images of {self.reference}, "
            f"{self.test.permutations} permutations)"
        )

    def table(self) -> str:
        """What moved: each input statistic in the reference and the batch, and its shift."""
        head = ("statistic", REFERENCE_SPLIT, "images", "shift", "")
        rows = [
            (s.name, s.reference, s.batch, f"{s.value:+.2f}", "moved" if s.moved else "")
            for s in self.shifts
        ]
        widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in (head, *rows)
        ]
        lines.append(
            f"input drift score {drift_score(self.shifts):.2f} (the largest shift; "
            f"{MOVED:g} or more is moved); {self.batch.ignored} non-image files ignored, "
            f"{len(self.batch.skipped)} unreadable images skipped"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drift": self.drift,
            "verdict": self.outcome,
            "test": {
                "name": "mmd",
                "statistic": self.test.statistic,
                "p_value": self.test.p_value,
                "alpha": self.alpha,
                "permutations": self.test.permutations,
                "bandwidth": self.test.bandwidth,
                "seed": self.seed,
            },
            "images": {
                "path": str(self.batch.path),
                "found": self.batch.found,
                "used": self.batch_stats.count,
                "ignored": self.batch.ignored,
                "skipped": list(self.batch.skipped),
                "stats": self.batch_stats.to_dict(),
            },
            "reference": {
                "path": str(self.reference),
                "split": REFERENCE_SPLIT,
                "used": self.reference_used,
                "stats": self.reference_stats.to_dict(),
            },
            "input_drift_score": drift_score(self.shifts),
            "shifts": [
                {
                    "statistic": s.name,
                    "reference": s.reference,
                    "images": s.batch,
                    "shift": s.value,
                    "moved": s.moved,
                }
                for s in self.shifts
            ],
        }


def check_drift(
    images: Path,
    reference: Path,
    model_path: Path,
    *,
    max_images: int = MAX_IMAGES,
    permutations: int = PERMUTATIONS,
    alpha: float = ALPHA,
    seed: int = 0,
    skip_corrupt: bool = False,
) -> DriftReport:
    """Compare the images under ``images`` with the train split of the prepared dataset
    ``reference`` in the feature space of the ``.pt`` model at ``model_path``.

    VisiontuneError (one line) for a missing folder, fewer than ``MIN_IMAGES`` images (or
    ``max_images``), unreadable images (unless ``skip_corrupt``), a model that is not a
    ``.pt``, or a reference that does not match the model.
    """
    if max_images < MIN_IMAGES:
        raise VisiontuneError(f"--max-images must be >= {MIN_IMAGES}, got {max_images}")
    if Path(model_path).suffix.lower() != ".pt":
        raise VisiontuneError(
            f"{model_path}: the drift check needs a .pt checkpoint (its feature layer)"
        )
    trained = load_trained(Path(model_path))
    meta = trained.meta
    reference_stats, stored = _reference(Path(reference), meta)
    rng = np.random.default_rng(seed)
    batch, loaded = _load_batch(Path(images), meta, max_images, rng, skip_corrupt)
    batch_images = torch.stack([image.tensor for image in loaded])
    batch_stats = InputStats.of(
        moments(batch_images), [i.size for i in loaded], [i.mode for i in loaded]
    )
    keep = np.arange(len(stored))
    if len(stored) > max_images:
        keep = np.sort(rng.choice(len(stored), max_images, replace=False))
    train = torch.from_numpy(stored.gather(keep))
    test = mmd_test(
        features(trained, train),
        features(trained, batch_images),
        permutations,
        seed,
    )
    return DriftReport(
        batch=batch,
        reference=Path(reference),
        reference_used=len(train),
        reference_stats=reference_stats,
        batch_stats=batch_stats,
        shifts=input_shifts(batch_stats, reference_stats),
        test=test,
        alpha=alpha,
        seed=seed,
    )


def _reference(prepared: Path, meta: ModelMeta) -> tuple[InputStats, StoredSplit]:
    """The reference statistics and train split of ``prepared``, checked against ``meta``."""
    prepared_meta = load_meta(prepared)
    if (prepared_meta.channels, prepared_meta.image_size) != (meta.channels, meta.image_size):
        raise VisiontuneError(
            f"{prepared} holds {_shape(prepared_meta.channels, prepared_meta.image_size)} images "
            f"but the model takes {_shape(meta.channels, meta.image_size)} ones: pass the "
            "--reference it was trained on"
        )
    if prepared_meta.reference is None:
        raise VisiontuneError(
            f"{prepared / META_FILE} has no reference statistics (written by an older "
            "visiontune); run `dvc repro preprocess`"
        )
    return prepared_meta.reference, open_split(prepared, REFERENCE_SPLIT, prepared_meta)


def _load_batch(
    folder: Path, meta: ModelMeta, max_images: int, rng: np.random.Generator, skip_corrupt: bool
) -> tuple[Batch, list[Loaded]]:
    """The folder, and a seeded random choice of at most ``max_images`` of its images
    converted to the model's input; VisiontuneError if unreadable or too few."""
    if not folder.is_dir():
        raise VisiontuneError(f"--images {folder} is not a folder")
    found = image_files(folder)
    ignored = len(files(folder)) - len(found)
    chosen = found
    if len(found) > max_images:
        chosen = [found[i] for i in np.sort(rng.choice(len(found), max_images, replace=False))]
    unreadable: list[tuple[str, str]] = []
    with decompression_bombs_refused():
        loaded = load_all(
            [path.relative_to(folder).as_posix() for path in chosen],
            lambda name: load_file(folder / name, meta.channels, meta.image_size),
            unreadable,
        )
    if unreadable and not skip_corrupt:
        raise unreadable_error(unreadable, "pass --skip-corrupt to leave unreadable images out")
    if len(loaded) < MIN_IMAGES:
        left_out = f", {len(unreadable)} unreadable" if unreadable else ""
        raise VisiontuneError(
            f"--images {folder} has {len(loaded)} usable images{left_out} ({ignored} other "
            f"files ignored): the drift check needs at least {MIN_IMAGES}"
        )
    skipped = tuple(name for name, _ in unreadable)
    return Batch(folder, found=len(found), ignored=ignored, skipped=skipped), loaded


def _shape(channels: int, size: int) -> str:
    return f"{channels}-channel {size}x{size}"
