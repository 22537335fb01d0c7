"""download(): offline datasets, torchvision caches, folders, archives and URLs."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontune.config.errors import VisiontuneError
from visiontune.data.download import default_cache_dir, download

DIGITS = [str(i) for i in range(10)]


def _arrays(raw: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(raw / "arrays.npz") as arrays:
        return arrays["images"], arrays["labels"]


@pytest.mark.parametrize(
    ("source", "shape"), [("digits", (1797, 8, 8)), ("mnist_subset", (5000, 28, 28))]
)
def test_offline_sources(tmp_path: Path, source: str, shape: tuple[int, ...]) -> None:
    info = download(source, tmp_path / "raw")
    images, labels = _arrays(tmp_path / "raw")
    assert info == {"source": source, "format": "arrays", "classes": DIGITS, "count": shape[0]}
    assert json.loads((tmp_path / "raw" / "source.json").read_text()) == info
    assert images.shape == shape and images.dtype == np.uint8 and images.max() == 255
    assert labels.shape == shape[:1] and labels.dtype == np.int64
    assert set(labels.tolist()) == set(range(10))


def test_download_replaces_out_dir_and_is_reproducible(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "stale.txt").write_text("old")
    download("digits", raw)
    first = (raw / "arrays.npz").read_bytes()
    download("digits", raw)
    assert sorted(p.name for p in raw.iterdir()) == ["arrays.npz", "source.json"]
    assert (raw / "arrays.npz").read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no staging folder left behind


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VISIONTUNE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("VISIONTUNE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "visiontune"


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed MNIST idx-ubyte file: magic (uint8, ndim), big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(
    ("source", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
@pytest.mark.usefixtures("no_network")
def test_torchvision_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, folder: str
) -> None:
    """torchvision skips downloading when the four unzipped idx files are in <root>/<Class>/raw."""
    import torchvision

    cache = tmp_path / "cache"
    raw_files = cache / source / folder / "raw"
    raw_files.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"train": 6, "t10k": 4}
    for prefix, count in sizes.items():
        _write_idx(raw_files / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(raw_files / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)
    monkeypatch.setenv("VISIONTUNE_CACHE", str(cache))

    info = download(source, tmp_path / "raw")

    images, labels = _arrays(tmp_path / "raw")
    assert info["format"] == "arrays" and info["count"] == 10
    assert info["classes"] == getattr(torchvision.datasets, folder).classes
    assert images.shape == (10, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]  # train split, then test


@pytest.mark.usefixtures("no_network")
def test_torchvision_without_network(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "kept.txt").write_text("previous download")
    with pytest.raises(VisiontuneError, match=r"data\.source=mnist needs a network") as error:
        download("mnist", raw, cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "cache" / "mnist") in message and "digits, mnist_subset" in message
    assert (raw / "kept.txt").exists()


def test_local_folder(tmp_path: Path, make_image_folder) -> None:
    source = make_image_folder(tmp_path / "pets", ["dog", "cat"], per_class=3)
    (source / "README.txt").write_text("not a class")
    (source / "cat" / ".DS_Store").write_text("hidden")
    (source / ".git").mkdir()

    info = download(str(source), tmp_path / "raw")

    assert info == {
        "source": str(source),
        "format": "folder",
        "classes": ["cat", "dog"],
        "count": 6,
        "ignored": ["README.txt", "cat/.DS_Store"],
    }
    copied = sorted(
        p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*.*")
    )
    assert copied == [f"images/{c}/{i}.png" for c in ("cat", "dog") for i in range(3)] + [
        "source.json"
    ]


def _write_junk(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"junk")


def test_junk_and_hidden_files_are_ignored_and_listed(tmp_path: Path, make_image_folder) -> None:
    """Only image extensions (any case) outside hidden names are copied; the rest is listed."""
    source = make_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=1)
    Image.new("RGB", (4, 4)).save(source / "cat" / "IMG_1.JPG", format="JPEG")
    Image.new("RGB", (4, 4)).save(source / "dog" / "anim.gif")
    (source / "dog" / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(source / "dog" / "sub" / "photo.webp")
    junk = [
        "README.txt",
        "stray.png",  # an image beside the class folders belongs to no class
        ".ipynb_checkpoints/cat/0.png",  # a hidden folder is no class
        "cat/Thumbs.db",
        "cat/desktop.ini",
        "cat/.DS_Store",
        "cat/._0.png",  # AppleDouble resource fork: hidden, though named .png
        "cat/.ipynb_checkpoints/0-checkpoint.png",
        "dog/notes.md",
        "dog/0.png.txt",
    ]
    _write_junk(source, junk)

    info = download(str(source), tmp_path / "raw")

    assert info["classes"] == ["cat", "dog"] and info["count"] == 5
    assert info["ignored"] == sorted(junk)
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["ignored"] == sorted(junk)
    images = tmp_path / "raw" / "images"
    copied = sorted(p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file())
    assert copied == [
        "cat/0.png",
        "cat/IMG_1.JPG",
        "dog/0.png",
        "dog/anim.gif",
        "dog/sub/photo.webp",
    ]


def test_macosx_folder_in_zip_is_ignored(tmp_path: Path, make_image_folder) -> None:
    """A zip made by macOS Finder: __MACOSX/ beside the top folder, .DS_Store inside it."""
    folder = make_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=2)
    (folder / ".DS_Store").write_bytes(b"junk")
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in sorted(folder.rglob("*")):
            bundle.write(file, f"pets/{file.relative_to(folder).as_posix()}")
        for name in ("cat/0.png", "cat/1.png", "dog/0.png"):
            bundle.writestr(f"__MACOSX/pets/{name.replace('/', '/._')}", b"resource fork")

    info = download(str(archive), tmp_path / "raw")

    assert info["classes"] == ["cat", "dog"] and info["count"] == 4
    assert info["ignored"] == [
        "__MACOSX/pets/cat/._0.png",
        "__MACOSX/pets/cat/._1.png",
        "__MACOSX/pets/dog/._0.png",
        "pets/.DS_Store",
    ]
    assert not (tmp_path / "raw" / "images" / "__MACOSX").exists()


def test_home_folder_is_expanded(tmp_path: Path, monkeypatch, make_image_folder) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    make_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=1)
    assert download("~/pets", tmp_path / "raw")["count"] == 2


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"a.png": "x"}, "has no class sub-folders"),
        ({"cat/.hidden": "x"}, "class folder 'cat' has no image files"),
        (
            {"cat/0.png": "x", "dog/Thumbs.db": "x"},
            r"class folder 'dog' has no image files \(\.jpg",
        ),
        ({"cat/0.png": "x", "dog/.ipynb_checkpoints/0.png": "x"}, "folder 'dog' has no image"),
    ],
)
def test_bad_folder(tmp_path: Path, layout: dict[str, str], message: str) -> None:
    for name, text in layout.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text(text)
    with pytest.raises(VisiontuneError, match=message) as error:
        download(str(tmp_path / "src"), tmp_path / "raw")
    assert "\n" not in str(error.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(VisiontuneError, match=r"data.source path .*nowhere does not exist"):
        download(str(tmp_path / "nowhere"), tmp_path / "raw")


def test_file_that_is_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VisiontuneError, match="is not a folder or a zip/tar archive"):
        download(str(tmp_path / "notes.txt"), tmp_path / "raw")


def _archive(folder: Path, target: Path, archive_format: str, top_dir: bool) -> Path:
    """Archive ``folder``'s class folders, under a top-level directory or at the root."""
    root, base = (folder.parent, folder.name) if top_dir else (folder, ".")
    return Path(shutil.make_archive(str(target), archive_format, root_dir=root, base_dir=base))


@pytest.mark.parametrize("archive_format", ["zip", "gztar"])
@pytest.mark.parametrize("top_dir", [False, True])
def test_local_archive(
    tmp_path: Path, make_image_folder, archive_format: str, top_dir: bool
) -> None:
    folder = make_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=2)
    archive = _archive(folder, tmp_path / "pets-archive", archive_format, top_dir)

    info = download(str(archive), tmp_path / "raw")

    assert info["format"] == "folder" and info["classes"] == ["cat", "dog"] and info["count"] == 4
    assert (tmp_path / "raw" / "images" / "dog" / "1.png").is_file()


def _evil_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("cat/0.png", b"x")
        bundle.writestr("../evil.png", b"x")


def _evil_tar(path: Path) -> None:
    with tarfile.open(path, "w:gz") as bundle:
        member = tarfile.TarInfo("../evil.png")
        member.size = 1
        bundle.addfile(member, io.BytesIO(b"x"))


@pytest.mark.parametrize(("name", "write"), [("evil.zip", _evil_zip), ("evil.tar.gz", _evil_tar)])
def test_archive_escaping_its_folder_is_refused(tmp_path: Path, name: str, write) -> None:
    work = tmp_path / "work"
    work.mkdir()
    write(work / name)
    with pytest.raises(VisiontuneError, match=re.escape("unsafe member '../evil.png'")):
        download(str(work / name), work / "raw")
    assert not list(tmp_path.rglob("evil.png"))


@pytest.mark.parametrize("name", ["pets.zip", "download?id=7"])
def test_url(tmp_path: Path, make_image_folder, file_server, name: str) -> None:
    """Served by a real HTTP server; a URL with no archive suffix is recognised by content."""
    folder = make_image_folder(tmp_path / "pets", ["cat", "dog"], per_class=2)
    archive = _archive(folder, tmp_path / "pets", "zip", top_dir=True)
    shutil.copyfile(archive, file_server.root / name.split("?")[0])

    info = download(file_server.url(name), tmp_path / "raw")

    assert info == {
        "source": file_server.url(name),
        "format": "folder",
        "classes": ["cat", "dog"],
        "count": 4,
        "ignored": [],
    }


def test_url_not_found(tmp_path: Path, file_server) -> None:
    url = file_server.url("missing.zip")
    with pytest.raises(
        VisiontuneError, match=re.escape(f"data.source URL {url} returned HTTP 404")
    ):
        download(url, tmp_path / "raw")


@pytest.mark.usefixtures("no_network")
def test_url_without_network(tmp_path: Path) -> None:
    url = "http://example.invalid/pets.zip"
    with pytest.raises(VisiontuneError, match=re.escape(f"data.source {url} needs a network: ")):
        download(url, tmp_path / "raw")
