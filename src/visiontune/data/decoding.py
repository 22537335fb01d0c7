"""Decoding images to the model's pixels, with numpy and Pillow only (no torch), so that the
preprocess stage's decoding processes start quickly: :func:`image_to_array` is the one place
where an image is converted; :func:`decode_rows` decodes a chunk of images in a worker and
writes them into their rows of a split's file, sending back only counts and statistics.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps

from visiontune.config.errors import VisiontuneError, reason
from visiontune.data.input_stats import pixel_sums, size_bucket
from visiontune.data.prepared import SplitRows

MAX_LISTED = 10  # unreadable images named in the error; the rest are counted

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


def image_to_array(image: Image.Image, channels: int, size: int) -> np.ndarray:
    """Any PIL image as uint8 pixels (channels, size, size), grayscale or RGB: EXIF
    orientation applied, then converted and resized to the square."""
    mode = "L" if channels == 1 else "RGB"
    image.draft(mode, (size, size))  # JPEG: decode at a reduced scale when much larger
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # as a camera held it
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):  # 16-bit grayscale: keep the high byte, don't clip
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    pixels = np.array(image)
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def decode(image: Image.Image, channels: int, size: int) -> tuple[np.ndarray, str, str]:
    """:func:`image_to_array`, with the image's size bucket and mode as it came."""
    bucket, mode = size_bucket(*image.size), image.mode  # before draft() changes them
    return image_to_array(image, channels, size), bucket, mode


@contextmanager
def decompression_bombs_refused() -> Iterator[None]:
    """Within the block, Pillow's decompression-bomb warning is an error (unreadable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@dataclass(frozen=True)
class ChunkJob:
    """A chunk of images to decode into rows ``first``, ``first + 1``, ... of a split:
    ``items`` are image files' paths or images' pixels as arrays; ``reference``: also gather
    the input statistics (the reference split's)."""

    rows: SplitRows
    first: int
    items: list[str | np.ndarray]
    reference: bool


@dataclass(frozen=True)
class ChunkStats:
    """A chunk's share of its split's statistics: each readable image's
    :func:`pixel_sums`, source size bucket and mode, in order."""

    sums: np.ndarray
    sizes: list[str]
    modes: list[str]


@dataclass(frozen=True)
class DecodedRows:
    """A chunk decoded into its rows: the readable images, ``written`` of them, fill the
    rows from the chunk's first on; each unreadable one's position in the chunk and reason;
    the chunk's statistics if it was asked for them."""

    written: int
    unreadable: list[tuple[int, str]]
    stats: ChunkStats | None


def decode_rows(job: ChunkJob, channels: int, size: int, max_pixels: int | None) -> DecodedRows:
    """Decode each of ``job``'s items as :func:`image_to_array` does and write the readable
    ones into its rows; ``max_pixels`` is Pillow's decompression-bomb limit."""
    Image.MAX_IMAGE_PIXELS = max_pixels  # a worker process starts with Pillow's default
    pixels, sizes, modes, unreadable = [], [], [], []
    with decompression_bombs_refused():
        for position, item in enumerate(job.items):
            try:
                image = Image.fromarray(item) if isinstance(item, np.ndarray) else Image.open(item)
                with image:
                    array, bucket, mode = decode(image, channels, size)
            except UNREADABLE as exc:
                unreadable.append((position, reason(exc)))
                continue
            pixels.append(array)
            sizes.append(bucket)
            modes.append(mode)
    stacked = np.stack(pixels) if pixels else np.zeros((0, channels, size, size), np.uint8)
    job.rows.write(job.first, stacked)
    if not job.reference:
        return DecodedRows(len(stacked), unreadable, None)
    return DecodedRows(len(stacked), unreadable, ChunkStats(pixel_sums(stacked), sizes, modes))


def unreadable_error(unreadable: list[tuple[str, str]], hint: str) -> VisiontuneError:
    """One error naming every unreadable image (the first ``MAX_LISTED``, then a count),
    ending with ``hint`` (how to skip them)."""
    if len(unreadable) == 1:
        ref, why = unreadable[0]
        return VisiontuneError(f"cannot read image {ref}: {why}; {hint}")
    names = ", ".join(ref for ref, _ in unreadable[:MAX_LISTED])
    more = len(unreadable) - MAX_LISTED
    names += f" and {more} more" if more > 0 else ""
    return VisiontuneError(f"cannot read {len(unreadable)} images: {names}; {hint}")
