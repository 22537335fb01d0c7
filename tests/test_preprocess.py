"""image_to_tensor, prepare, load_split and load_meta on real files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visiontune.errors import VisiontuneError
from visiontune.params import DataParams
from visiontune.preprocess import SPLITS, image_to_tensor, load_meta, load_split, prepare
from visiontune.sources import download

OUTPUTS = ("train.pt", "val.pt", "test.pt", "meta.json")


@pytest.fixture(scope="module")
def digits_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits dataset in the raw format, downloaded once for the module."""
    raw = tmp_path_factory.mktemp("digits") / "raw"
    download("digits", raw)
    return raw


def _folder_raw(tmp_path: Path, make_image_folder, counts: dict[str, int]) -> Path:
    """A raw folder dataset with ``counts[class]`` 8x8 RGB PNGs per class."""
    source = tmp_path / "source"
    for name, count in counts.items():
        make_image_folder(source, [name], per_class=count)
    download(str(source), tmp_path / "raw")
    return tmp_path / "raw"


def _all_labels(prepared: Path) -> dict[str, torch.Tensor]:
    return {split: load_split(prepared, split)[1] for split in SPLITS}


def _gray_image(mode: str) -> Image.Image:
    """A 20x12 image of gray level 200 in ``mode`` (16-bit: 200 * 256)."""
    if mode == "I;16":
        return Image.fromarray(np.full((12, 20), 200 * 256, dtype=np.uint16))
    return Image.new("RGB", (20, 12), (200, 200, 200)).convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "CMYK", "I;16"])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_to_tensor_modes(mode: str, channels: int) -> None:
    image = _gray_image(mode)
    assert image.mode == mode
    tensor = image_to_tensor(image, channels, 6)
    assert tensor.dtype == torch.uint8 and tensor.shape == (channels, 6, 6)
    assert tensor.float().mean().item() == pytest.approx(200, abs=2)


def test_image_to_tensor_keeps_pixels_at_the_target_size() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    tensor = image_to_tensor(Image.fromarray(pixels), 3, 5)
    assert torch.equal(tensor, torch.from_numpy(pixels).permute(2, 0, 1))


def test_prepare_digits(digits_raw: Path, tmp_path: Path) -> None:
    summary = prepare(digits_raw, tmp_path, DataParams(image_size=12))

    assert summary == {"train": 1259, "val": 269, "test": 269, "classes": 10, "skipped": 0}
    for split in SPLITS:
        images, labels = load_split(tmp_path, split)
        assert images.dtype == torch.uint8 and images.shape == (summary[split], 1, 12, 12)
        assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
        saved = torch.load(tmp_path / f"{split}.pt", weights_only=True)
        assert set(saved) == {"images", "labels"}
    meta = load_meta(tmp_path)
    assert meta["classes"] == [str(i) for i in range(10)]
    assert (meta["channels"], meta["image_size"]) == (1, 12)
    assert meta["counts"] == {"train": 1259, "val": 269, "test": 269} and meta["skipped"] == []
    train = load_split(tmp_path, "train")[0].double() / 255
    assert meta["mean"] == [pytest.approx(train.mean().item(), abs=1e-6)]
    assert meta["std"] == [pytest.approx(train.std(correction=0).item(), abs=1e-6)]


def test_prepare_is_deterministic(digits_raw: Path, tmp_path: Path) -> None:
    outputs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        prepare(digits_raw, tmp_path / name, DataParams(seed=seed))
        outputs[name] = [(tmp_path / name / file).read_bytes() for file in OUTPUTS]
    assert outputs["a"] == outputs["b"]
    assert outputs["a"][0] != outputs["c"][0]


def test_max_per_class_and_rgb(digits_raw: Path, tmp_path: Path) -> None:
    data = DataParams(max_per_class=10, channels=3, image_size=8)
    summary = prepare(digits_raw, tmp_path, data)
    assert summary == {"train": 60, "val": 20, "test": 20, "classes": 10, "skipped": 0}
    labels = torch.cat(list(_all_labels(tmp_path).values()))
    assert torch.bincount(labels).tolist() == [10] * 10
    assert load_split(tmp_path, "train")[0].shape[1:] == (3, 8, 8)
    assert len(load_meta(tmp_path)["mean"]) == 3


def test_prepare_folder_keeps_class_order(tmp_path: Path, make_image_folder) -> None:
    raw = _folder_raw(tmp_path, make_image_folder, {"cat": 10, "dog": 20})
    summary = prepare(raw, tmp_path / "prepared", DataParams(image_size=8, channels=3))
    assert summary == {"train": 20, "val": 5, "test": 5, "classes": 2, "skipped": 0}
    assert load_meta(tmp_path / "prepared")["classes"] == ["cat", "dog"]
    labels = torch.cat(list(_all_labels(tmp_path / "prepared").values()))
    assert torch.bincount(labels).tolist() == [10, 20]


@pytest.fixture
def corrupt_raw(tmp_path: Path, make_image_folder) -> Path:
    raw = _folder_raw(tmp_path, make_image_folder, {"cat": 6, "dog": 6})
    (raw / "images" / "cat" / "bad.png").write_bytes(b"not an image")
    return raw


def test_corrupt_image_fails_naming_the_file(corrupt_raw: Path, tmp_path: Path) -> None:
    with pytest.raises(VisiontuneError, match=r"cannot read image images/cat/bad\.png: ") as error:
        prepare(corrupt_raw, tmp_path / "prepared", DataParams())
    assert str(error.value).endswith("set data.skip_corrupt=true to skip unreadable images")
    assert not (tmp_path / "prepared").exists()


def test_skip_corrupt(corrupt_raw: Path, tmp_path: Path) -> None:
    summary = prepare(corrupt_raw, tmp_path / "prepared", DataParams(skip_corrupt=True))
    assert summary["skipped"] == 1
    assert summary["train"] + summary["val"] + summary["test"] == 12
    assert load_meta(tmp_path / "prepared")["skipped"] == ["images/cat/bad.png"]


@pytest.mark.parametrize("side", [12, 16])  # over the limit: a warning, over twice: an error
def test_decompression_bomb_is_unreadable(
    tmp_path: Path, make_image_folder, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    raw = _folder_raw(tmp_path, make_image_folder, {"cat": 3})
    Image.new("L", (side, side)).save(raw / "images" / "cat" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(VisiontuneError, match=r"cannot read image images/cat/huge\.png"):
        prepare(raw, tmp_path / "prepared", DataParams())


def test_class_with_too_few_images(tmp_path: Path, make_image_folder) -> None:
    raw = _folder_raw(tmp_path, make_image_folder, {"cat": 5, "dog": 2})
    data = DataParams(val_fraction=0.4, test_fraction=0.45)
    message = "class 'dog' has 2 usable images: too few to keep one for training"
    with pytest.raises(VisiontuneError, match=re.escape(message)):
        prepare(raw, tmp_path / "prepared", data)


def test_missing_raw_dir(tmp_path: Path) -> None:
    with pytest.raises(VisiontuneError, match=re.escape("run the download stage")):
        prepare(tmp_path / "raw", tmp_path / "prepared", DataParams())


def test_missing_or_corrupt_prepared_files(tmp_path: Path) -> None:
    with pytest.raises(VisiontuneError, match="not found; run `dvc repro preprocess`"):
        load_split(tmp_path, "train")
    with pytest.raises(VisiontuneError, match="not found; run `dvc repro preprocess`"):
        load_meta(tmp_path)
    (tmp_path / "train.pt").write_bytes(b"garbage")
    (tmp_path / "meta.json").write_text("{")
    with pytest.raises(VisiontuneError, match=r"train\.pt is corrupt .*dvc repro preprocess"):
        load_split(tmp_path, "train")
    with pytest.raises(VisiontuneError, match=r"meta\.json is corrupt .*dvc repro preprocess"):
        load_meta(tmp_path)
    torch.save({"images": torch.zeros(2, 1, 4, 4)}, tmp_path / "train.pt")
    with pytest.raises(VisiontuneError, match=r"train\.pt is corrupt"):
        load_split(tmp_path, "train")
