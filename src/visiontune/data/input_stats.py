"""Input statistics of images, and how far a batch's have moved from a reference's.

The statistics of a set of images: per-channel pixel mean and std (0..1 scale) of the
tensors the model takes, and the mix of the source images' sizes (longer side, in
power-of-two buckets) and PIL modes. The preprocess stage computes them for the train split
(the reference, kept in meta.json and the checkpoint); ``visiontune drift`` and the server's
rolling drift score compare a batch against it with :func:`shifts`. numpy only: cheap to
import.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

REFERENCE_SPLIT = "train"  # the prepared split whose statistics are the reference
MIN_IMAGES = 20  # fewer images than this say too little to compare
MOVED = 0.25  # a shift of at least this size is flagged as moved
_CHUNK_PIXELS = 1 << 24  # values squared at a time


@dataclass(frozen=True)
class InputStats:
    """The statistics of ``count`` images: per-channel ``mean`` and ``std`` of their pixels
    (0..1 scale), and how many came in each source size bucket and mode."""

    count: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: dict[str, int]
    modes: dict[str, int]

    @classmethod
    def of(cls, moments: np.ndarray, sizes: Iterable[str], modes: Iterable[str]) -> InputStats:
        """The statistics of images with these :func:`moments`, source sizes and modes."""
        mean = moments[:, :, 0].mean(axis=0)
        var = np.maximum(moments[:, :, 1].mean(axis=0) - mean**2, 0.0)
        return cls(
            count=len(moments),
            mean=tuple(round(float(m), 6) for m in mean),
            std=tuple(round(float(s), 6) for s in np.sqrt(var)),
            sizes=dict(sorted(Counter(sizes).items())),
            modes=dict(sorted(Counter(modes).items())),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean": list(self.mean),
            "std": list(self.std),
            "sizes": dict(self.sizes),
            "modes": dict(self.modes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputStats:
        """The inverse of :meth:`to_dict`; ValueError (naming missing keys) or TypeError if
        unusable."""
        missing = [key for key in ("count", "mean", "std", "sizes", "modes") if key not in data]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        return cls(
            count=int(data["count"]),
            mean=tuple(float(m) for m in data["mean"]),
            std=tuple(float(s) for s in data["std"]),
            sizes={str(k): int(v) for k, v in data["sizes"].items()},
            modes={str(k): int(v) for k, v in data["modes"].items()},
        )


def pixel_sums(images: Any) -> np.ndarray:
    """Per image and channel, the sum of the pixels and the sum of their squares of uint8
    images (N, C, H, W), a numpy array or CPU tensor: exact, uint64 (N, C, 2)."""
    images = np.asarray(images)
    count, channels = images.shape[:2]
    flat = images.reshape(count, channels, math.prod(images.shape[2:]))
    step = max(1, _CHUNK_PIXELS // max(1, math.prod(flat.shape[1:])))
    # uint32 sums take half the time of uint64 ones, and are exact while a channel's squares
    # stay below 2 ** 32: up to 257 x 257 pixels.
    total = np.uint32 if flat.shape[2] * 255**2 < 2**32 else np.uint64
    sums = np.zeros((count, channels, 2), np.uint64)
    for start in range(0, count, step):
        part = flat[start : start + step]
        sums[start : start + step, :, 0] = part.sum(axis=2, dtype=total)
        squares = np.square(part, dtype=np.uint16)  # 255 ** 2 fits
        sums[start : start + step, :, 1] = squares.sum(axis=2, dtype=total)
    return sums


def moments(images: Any) -> np.ndarray:
    """Per image and channel, the mean pixel and mean squared pixel (0..1 scale) of uint8
    images (N, C, H, W), a numpy array or CPU tensor: float64 (N, C, 2), each the exact
    :func:`pixel_sums` divided once."""
    return moments_of(pixel_sums(images), math.prod(np.shape(images)[2:]))


def moments_of(sums: np.ndarray, pixels: int) -> np.ndarray:
    """:func:`moments` from :func:`pixel_sums` of images of ``pixels`` pixels a channel."""
    return sums / (max(1, pixels) * np.array([255.0, 255.0**2]))


def size_bucket(width: int, height: int) -> str:
    """The size bucket of a ``width`` x ``height`` image: its longer side, rounded up to a
    power of two, as a range (``"5-8px"``, ``"17-32px"``)."""
    high = 1 << max(0, max(width, height) - 1).bit_length()
    low = high // 2 + 1
    return f"{low}-{high}px" if low < high else f"{high}px"


@dataclass(frozen=True)
class Shift:
    """How one statistic moved: its reference and batch values (as shown), and ``value``,
    the shift on a scale where 0 is none and :data:`MOVED` or more counts as moved:
    pixel mean, the difference in reference stds; pixel std, the log of the ratio; size
    and mode mix, the total variation distance (the share of images that would have to
    change bucket)."""

    name: str
    reference: str
    batch: str
    value: float

    @property
    def moved(self) -> bool:
        return abs(self.value) >= MOVED


def shifts(batch: InputStats, reference: InputStats) -> list[Shift]:
    """The shift of every statistic of ``batch`` from ``reference`` (same channels)."""
    rows = []
    for c, (ref_mean, ref_std, mean, std) in enumerate(
        zip(reference.mean, reference.std, batch.mean, batch.std, strict=True)
    ):
        scale = max(ref_std, 1 / 255)  # a constant reference channel: one grey level
        difference = (mean - ref_mean) / scale
        rows.append(Shift(f"mean[{c}]", f"{ref_mean:.3f}", f"{mean:.3f}", difference))
        ratio = math.log(max(std, 1 / 255) / scale)
        rows.append(Shift(f"std[{c}]", f"{ref_std:.3f}", f"{std:.3f}", ratio))
    for name in ("sizes", "modes"):
        ref_mix, mix = getattr(reference, name), getattr(batch, name)
        distance = _total_variation(ref_mix, mix)
        rows.append(Shift(name[:-1], _format_mix(ref_mix), _format_mix(mix), distance))
    return rows


def drift_score(rows: Sequence[Shift]) -> float:
    """One number for all the shifts: the largest in size (0 = none)."""
    return max(abs(row.value) for row in rows)


def _shares(mix: Mapping[str, int]) -> dict[str, float]:
    total = sum(mix.values())
    return {key: count / total for key, count in mix.items()} if total else {}


def _total_variation(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    pa, pb = _shares(a), _shares(b)
    return 0.5 * sum(abs(pa.get(key, 0.0) - pb.get(key, 0.0)) for key in pa.keys() | pb.keys())


def _format_mix(mix: Mapping[str, int], shown: int = 2) -> str:
    """The most common entries of a mix with their shares: ``"5-8px 100%"``."""
    ranked = sorted(_shares(mix).items(), key=lambda item: (-item[1], item[0]))
    text = ", ".join(f"{key} {share:.0%}" for key, share in ranked[:shown])
    return text + (", ..." if len(ranked) > shown else "")


class RollingInputStats:
    """The statistics of the last ``window`` images seen, for the server; thread-safe."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._images: deque[tuple[np.ndarray, str, str]] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, image_moments: np.ndarray, sizes: Sequence[str], modes: Sequence[str]) -> None:
        """Add images by their :func:`moments`, size buckets and modes; the oldest go."""
        with self._lock:
            self._images.extend(zip(image_moments, sizes, modes, strict=True))

    def __len__(self) -> int:
        return len(self._images)

    def score(self, reference: InputStats) -> float:
        """:func:`drift_score` of the window against ``reference``; NaN while the window
        holds fewer than :data:`MIN_IMAGES` images."""
        with self._lock:
            images = list(self._images)
        if len(images) < MIN_IMAGES:
            return math.nan
        stacked, sizes, modes = zip(*images, strict=True)
        return drift_score(shifts(InputStats.of(np.stack(stacked), sizes, modes), reference))
