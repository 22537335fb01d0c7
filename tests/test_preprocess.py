"""image_to_tensor, prepare, read_split and load_meta on real files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visiontune.config.errors import USER_ERROR_EXIT, VisiontuneError
from visiontune.config.params import DataParams
from visiontune.data.batches import read_split
from visiontune.data.download import download
from visiontune.data.images import image_to_tensor
from visiontune.data.prepared import SPLITS, load_meta
from visiontune.data.preprocess import prepare

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = (
    *[f"{split}-{part}.npy" for split in SPLITS for part in ("images", "labels")],
    "meta.json",
)


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
    return {split: read_split(prepared, split)[1] for split in SPLITS}


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

    assert summary == {
        "train": 1259,
        "val": 269,
        "test": 269,
        "classes": 10,
        "skipped": 0,
        "ignored": 0,
    }
    for split in SPLITS:
        images, labels = read_split(tmp_path, split)
        assert images.dtype == torch.uint8 and images.shape == (summary[split], 1, 12, 12)
        assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
        stored = np.load(tmp_path / f"{split}-images.npy", mmap_mode="r")  # plain NumPy files
        assert stored.dtype == np.uint8 and np.array_equal(stored, images.numpy())
    meta = load_meta(tmp_path)
    assert meta.classes == tuple(str(i) for i in range(10))
    assert (meta.channels, meta.image_size) == (1, 12)
    assert meta.counts == {"train": 1259, "val": 269, "test": 269}
    assert meta.skipped == () and meta.ignored == ()
    train = read_split(tmp_path, "train")[0].double() / 255
    assert meta.mean == (pytest.approx(train.mean().item(), abs=1e-6),)
    assert meta.std == (pytest.approx(train.std(correction=0).item(), abs=1e-6),)
    reference = meta.reference
    assert reference is not None and reference.count == 1259
    assert reference.mean == pytest.approx(meta.mean, abs=1e-6)
    assert reference.std == pytest.approx(meta.std, abs=1e-6)
    assert (reference.sizes, reference.modes) == ({"5-8px": 1259}, {"L": 1259})  # as they came


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
    assert summary == {
        "train": 60,
        "val": 20,
        "test": 20,
        "classes": 10,
        "skipped": 0,
        "ignored": 0,
    }
    labels = torch.cat(list(_all_labels(tmp_path).values()))
    assert torch.bincount(labels).tolist() == [10] * 10
    assert read_split(tmp_path, "train")[0].shape[1:] == (3, 8, 8)
    assert len(load_meta(tmp_path).mean) == 3


def test_prepare_folder_keeps_class_order(tmp_path: Path, make_image_folder) -> None:
    raw = _folder_raw(tmp_path, make_image_folder, {"cat": 10, "dog": 20})
    summary = prepare(raw, tmp_path / "prepared", DataParams(image_size=8, channels=3))
    assert summary == {"train": 20, "val": 5, "test": 5, "classes": 2, "skipped": 0, "ignored": 0}
    assert load_meta(tmp_path / "prepared").classes == ("cat", "dog")
    labels = torch.cat(list(_all_labels(tmp_path / "prepared").values()))
    assert torch.bincount(labels).tolist() == [10, 20]


def test_reference_mixes_count_the_train_images_as_they_came(
    tmp_path: Path, make_image_folder
) -> None:
    source = tmp_path / "source"
    make_image_folder(source, ["cat"], per_class=10, size=8, mode="L")
    make_image_folder(source / "dog", ["large"], per_class=10, size=40, mode="RGB")
    download(str(source), tmp_path / "raw")
    prepare(tmp_path / "raw", tmp_path / "prepared", DataParams(image_size=8, channels=3))
    reference = load_meta(tmp_path / "prepared").reference
    assert reference is not None and reference.count == 12  # 6 of each class's 10 train
    assert reference.sizes == {"33-64px": 6, "5-8px": 6}
    assert reference.modes == {"L": 6, "RGB": 6}


def test_a_meta_json_without_reference_loads(tmp_path: Path, digits_raw: Path) -> None:
    prepare(digits_raw, tmp_path, DataParams())
    meta = json.loads((tmp_path / "meta.json").read_text())
    del meta["reference"]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert load_meta(tmp_path).reference is None
    meta["reference"] = {"count": 3}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(VisiontuneError, match=r"unusable reference: no mean, std, sizes, modes"):
        load_meta(tmp_path)


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
    assert load_meta(tmp_path / "prepared").skipped == ("images/cat/bad.png",)


def _broken_source(tmp_path: Path, make_image_folder, broken: int) -> Path:
    """3 good PNGs per class (cat, dog) and ``broken`` undecodable .png/.jpg files in each."""
    source = make_image_folder(tmp_path / "source", ["cat", "dog"], per_class=3)
    for name in ("cat", "dog"):
        for i in range(broken):
            (source / name / f"bad{i:02}.{'png' if i % 2 else 'jpg'}").write_bytes(b"broken")
    return source


def test_several_corrupt_images_are_listed_in_one_error(tmp_path: Path, make_image_folder) -> None:
    source = _broken_source(tmp_path, make_image_folder, broken=2)
    download(str(source), tmp_path / "raw")
    with pytest.raises(VisiontuneError) as error:
        prepare(tmp_path / "raw", tmp_path / "prepared", DataParams())
    assert str(error.value) == (
        "cannot read 4 images: images/cat/bad00.jpg, images/cat/bad01.png, "
        "images/dog/bad00.jpg, images/dog/bad01.png; "
        "set data.skip_corrupt=true to skip unreadable images"
    )
    assert not (tmp_path / "prepared").exists()


def test_more_than_ten_corrupt_images_are_counted(tmp_path: Path, make_image_folder) -> None:
    source = _broken_source(tmp_path, make_image_folder, broken=7)
    download(str(source), tmp_path / "raw")
    with pytest.raises(VisiontuneError) as error:
        prepare(tmp_path / "raw", tmp_path / "prepared", DataParams())
    message = str(error.value)
    listed = [f"images/cat/bad{i:02}" for i in range(7)] + [
        f"images/dog/bad{i:02}" for i in range(3)
    ]
    assert message.startswith("cannot read 14 images: images/cat/bad00.jpg, ")
    assert all(name in message for name in listed) and "images/dog/bad03" not in message
    assert message.endswith(" and 4 more; set data.skip_corrupt=true to skip unreadable images")
    assert "\n" not in message


def test_skip_corrupt_counts_broken_images_not_ignored_files(
    tmp_path: Path, make_image_folder
) -> None:
    source = _broken_source(tmp_path, make_image_folder, broken=1)
    for name in ("Thumbs.db", "desktop.ini", ".DS_Store"):
        (source / "cat" / name).write_bytes(b"junk")
    (source / "README.txt").write_text("about the pets")
    download(str(source), tmp_path / "raw")

    summary = prepare(tmp_path / "raw", tmp_path / "prepared", DataParams(skip_corrupt=True))

    assert (summary["skipped"], summary["ignored"]) == (2, 4)
    assert summary["train"] + summary["val"] + summary["test"] == 6
    meta = load_meta(tmp_path / "prepared")
    assert meta.skipped == ("images/cat/bad00.jpg", "images/dog/bad00.jpg")
    assert meta.ignored == ("README.txt", "cat/.DS_Store", "cat/Thumbs.db", "cat/desktop.ini")


@pytest.mark.parametrize("archive_format", [None, "zip", "gztar"])
def test_class_names_with_spaces_accents_and_cjk(
    tmp_path: Path, make_image_folder, archive_format: str | None
) -> None:
    classes = ["golden retriever (adult)", "café crème", "猫", "Ölçü-Ñandú"]
    source = make_image_folder(tmp_path / "my pets", classes, per_class=4)
    if archive_format:
        source = Path(shutil.make_archive(str(tmp_path / "pets"), archive_format, root_dir=source))

    info = download(str(source), tmp_path / "raw")
    summary = prepare(tmp_path / "raw", tmp_path / "prepared", DataParams(channels=3))

    assert info["classes"] == sorted(classes) and info["count"] == 16
    assert summary == {"train": 8, "val": 4, "test": 4, "classes": 4, "skipped": 0, "ignored": 0}
    assert load_meta(tmp_path / "prepared").classes == tuple(sorted(classes))
    labels = torch.cat(list(_all_labels(tmp_path / "prepared").values()))
    assert torch.bincount(labels).tolist() == [4] * 4


@pytest.mark.parametrize("side", [12, 16])  # over the limit: a warning, over twice: an error
def test_decompression_bomb_is_unreadable(
    tmp_path: Path, make_image_folder, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    raw = _folder_raw(tmp_path, make_image_folder, {"cat": 3, "dog": 3})
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


def test_a_single_class_stops_the_preprocess_stage_in_one_line(
    tmp_path: Path, make_image_folder
) -> None:
    """A folder of one class downloads, then preprocess refuses it: nothing to tell apart."""
    source = make_image_folder(tmp_path / "my cats", ["cats"], per_class=30)
    download(str(source), tmp_path / "data" / "raw")
    (tmp_path / "params.yaml").write_text(f"data:\n  source: {source}\n")
    stage = [sys.executable, str(ROOT / "stages" / "preprocess.py")]
    result = subprocess.run(stage, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == USER_ERROR_EXIT
    assert result.stderr == (
        f"error: data.source {source}: 1 class found (cats); a classifier needs at least 2\n"
    )
    assert not (tmp_path / "data" / "prepared").exists()


def test_an_empty_validation_or_test_split_is_an_error(tmp_path: Path, make_image_folder) -> None:
    """Each class keeps an image to train on, but 15 % of 3 images rounds to none."""
    raw = _folder_raw(tmp_path, make_image_folder, {"cat": 3, "dog": 10})
    with pytest.raises(VisiontuneError) as error:
        prepare(raw, tmp_path / "prepared", DataParams(max_per_class=3, val_fraction=0.3))
    assert str(error.value) == (
        "the test split is empty: data.test_fraction=0.15 of at most 3 usable images per class "
        "keeps none; raise data.test_fraction or use more images per class"
    )
    assert not (tmp_path / "prepared").exists()
    summary = prepare(
        raw,
        tmp_path / "prepared",
        DataParams(max_per_class=3, val_fraction=0.34, test_fraction=0.34),
    )
    assert (summary["train"], summary["val"], summary["test"]) == (2, 2, 2)


def test_missing_raw_dir(tmp_path: Path) -> None:
    with pytest.raises(VisiontuneError, match=re.escape("run the download stage")):
        prepare(tmp_path / "raw", tmp_path / "prepared", DataParams())


def test_missing_or_corrupt_prepared_files(tmp_path: Path) -> None:
    with pytest.raises(VisiontuneError, match="not found; run `dvc repro preprocess`"):
        read_split(tmp_path, "train")
    with pytest.raises(VisiontuneError, match="not found; run `dvc repro preprocess`"):
        load_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{")
    with pytest.raises(VisiontuneError, match=r"meta\.json is corrupt .*dvc repro preprocess"):
        load_meta(tmp_path)
