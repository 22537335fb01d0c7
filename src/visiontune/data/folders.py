"""Folders of images: which files count as images, in a ``data.source`` class folder and
in a folder that ``visiontune drift`` checks. Imports nothing heavy (the download stage
uses it)."""

from __future__ import annotations

from pathlib import Path

# The files of a class folder that are images: torchvision's IMG_EXTENSIONS plus .gif,
# which the server accepts. Other files (Thumbs.db, desktop.ini, notes) are ignored.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
)


def is_hidden(name: str) -> bool:
    """A hidden file or folder name (``.DS_Store``, ``.ipynb_checkpoints``), or an
    archive's ``__MACOSX``."""
    return name.startswith(".") or name == "__MACOSX"


def files(folder: Path) -> list[Path]:
    """Every file anywhere under ``folder``, sorted."""
    return sorted(path for path in folder.rglob("*") if path.is_file())


def image_files(folder: Path) -> list[Path]:
    """Files under ``folder`` with an image extension (any case) and no hidden path part:
    the images of a class folder, and of a folder that ``visiontune drift`` checks."""
    return [
        path
        for path in files(folder)
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(is_hidden(part) for part in path.relative_to(folder).parts)
    ]
