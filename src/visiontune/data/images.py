"""One image as the model takes it: :func:`image_to_tensor` is the one place where an
image is converted, so that training, serving and drift checks see identical pixels."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from visiontune.config.errors import VisiontuneError, reason
from visiontune.data.input_stats import size_bucket

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


def load_all(refs: list, load: Loader, unreadable: list[tuple[str, str]]) -> list[Loaded]:
    """Load every reference; append each unreadable one, with the reason, to ``unreadable``."""
    images = []
    for ref in refs:
        try:
            images.append(load(ref))
        except UNREADABLE as exc:
            unreadable.append((str(ref), reason(exc)))
    return images


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
