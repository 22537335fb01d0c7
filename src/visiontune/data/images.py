"""One image as the model takes it: :func:`image_to_tensor` is the one place where an
image is converted, so that training, serving and drift checks see identical pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from visiontune.config.errors import reason
from visiontune.data.decoding import UNREADABLE, decode, image_to_array


class Loaded(NamedTuple):
    """One image as the model takes it, with its source's size bucket and mode."""

    tensor: torch.Tensor
    size: str
    mode: str


Loader = Callable[[object], Loaded]  # loads one image reference (array index or path)


def image_to_tensor(image: Image.Image, channels: int, size: int) -> torch.Tensor:
    """Convert any PIL image to a uint8 tensor (channels, size, size), grayscale or RGB
    (:func:`~visiontune.data.decoding.image_to_array`)."""
    return torch.from_numpy(image_to_array(image, channels, size))


def convert(image: Image.Image, channels: int, size: int) -> Loaded:
    """:func:`image_to_tensor`, with the image's size bucket and mode as it came
    (:func:`~visiontune.data.decoding.decode`)."""
    array, bucket, mode = decode(image, channels, size)
    return Loaded(torch.from_numpy(array), bucket, mode)


def load_file(path: Path, channels: int, size: int) -> Loaded:
    """An image file, converted as :func:`convert` does."""
    with Image.open(path) as image:
        return convert(image, channels, size)


def load_all(refs: list, load: Loader, unreadable: list[tuple[str, str]]) -> list[Loaded]:
    """Load every reference; append each unreadable one, with the reason, to ``unreadable``."""
    images = []
    for ref in refs:
        try:
            images.append(load(ref))
        except UNREADABLE as exc:
            unreadable.append((str(ref), reason(exc)))
    return images
