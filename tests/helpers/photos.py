"""Folders of photo-like JPEGs for tests: random sizes, a little structure per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(root: Path, per_class: int, classes: int = 3, sizes: tuple = (20, 90)) -> Path:
    """``root/class<k>/<i>.jpg``: ``per_class`` JPEGs a class, each side drawn from
    ``sizes``; a brightness ramp per class under noise (seeded). Returns ``root``."""
    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(*sizes, 2)
            base = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None] // (label + 1)
            noise = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
            Image.fromarray(base + noise).save(folder / f"{i}.jpg", quality=85)
    return root


def write_exact_pngs(root: Path, per_class: int, broken: int, classes: int = 3) -> Path:
    """``root/class<k>/<i>.png``: ``per_class`` 24x24 RGB PNGs of seeded noise a class (at
    ``data.image_size`` 24 they decode to exactly these pixels, whatever Pillow's resizing),
    and ``broken`` undecodable ``bad<i>.png`` files a class among them. Returns ``root``."""
    rng = np.random.default_rng(1)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03}.png")
        for i in range(broken):
            (folder / f"{i * per_class // broken:03}bad.png").write_bytes(b"broken")
    return root
