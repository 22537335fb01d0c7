"""The prepared format on disk: written chunk by chunk, whole or not at all, checked against
its meta when read; decoding on several processes; batches streamed from the file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.photos import write_exact_pngs, write_photos
from PIL import Image

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import DataParams
from visiontune.data import preprocess
from visiontune.data.augmentation import Augmentation
from visiontune.data.batches import BatchSource
from visiontune.data.decoding import image_to_array
from visiontune.data.download import download
from visiontune.data.model_input import ModelInput
from visiontune.data.prepared import SPLITS, load_meta, open_split, split_files, writing


@pytest.fixture(scope="module")
def photo_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw folder dataset of 3 x 60 JPEGs."""
    root = tmp_path_factory.mktemp("photos")
    download(str(write_photos(root / "source", 60)), root / "raw")
    return root / "raw"


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_decoding_on_processes_equals_one_process_byte_for_byte(
    photo_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = DataParams(channels=3, image_size=24)
    preprocess.prepare(photo_raw, tmp_path / "serial", data)
    monkeypatch.setattr(preprocess, "PARALLEL_FROM", 1)  # a small folder on processes too
    monkeypatch.setattr(preprocess, "CHUNK_PIXELS", 1)  # chunks of the minimum, 16 images
    parallel = DataParams(channels=3, image_size=24, workers=2)
    preprocess.prepare(photo_raw, tmp_path / "parallel", parallel)
    assert _files(tmp_path / "parallel") == _files(tmp_path / "serial")
    assert load_meta(tmp_path / "serial").counts == {"train": 126, "val": 27, "test": 27}


# sha256 of the files that main's preprocess (decoded chunks sent back to the stage's
# process, which appended them) wrote from write_exact_pngs(per_class=70, broken=3) at
# 24 px RGB with data.skip_corrupt: the format on disk may not change byte for byte.
RECORDED = {
    "meta.json": "76dff15e886c422c3e087340138d47057bd1111d64883c43e7e4532b5d9169fb",
    "test-images.npy": "24d39ec2c9e223592f3f529662524893c7be6915945282fa1fe63db2b9202a2c",
    "test-labels.npy": "3ee6bff03ecee7013776a11f1806c40bb8d55a9edaaec002ecd0d6d57e84dd66",
    "train-images.npy": "47c5660dc25f87cddb2bb99c1778fa96808af4127c298c9cafbbe10c1295a57a",
    "train-labels.npy": "958c1979ff0b5866aef8330edd54ce8950e5c7b183676f0651af1f22d4b21d02",
    "val-images.npy": "9e67c0a1497225b8eed35cd2031f4b917a85dc7b3bba4dbeab28d74edb6f5bc9",
    "val-labels.npy": "9020fe729e869898e3cdd89fcdce12299c019aff67cdb1bbf66a67f319a5c255",
}


@pytest.mark.parametrize("processes", [1, 2])
def test_prepared_files_equal_the_recorded_ones_with_unreadable_images_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    """Serial in one chunk a split, and on two processes in chunks of 16 (so rows after an
    unreadable image move up across chunks): the same files as recorded."""
    download(str(write_exact_pngs(tmp_path / "source", 70, broken=3)), tmp_path / "raw")
    if processes > 1:
        monkeypatch.setattr(preprocess, "PARALLEL_FROM", 1)
        monkeypatch.setattr(preprocess, "CHUNK_PIXELS", 1)
    data = DataParams(channels=3, image_size=24, skip_corrupt=True, workers=processes)
    summary = preprocess.prepare(tmp_path / "raw", tmp_path / "prepared", data)
    assert summary["skipped"] == 9
    digests = {
        name: hashlib.sha256(content).hexdigest()
        for name, content in _files(tmp_path / "prepared").items()
    }
    assert digests == RECORDED


def test_round_trip_read_and_gather(tmp_path: Path, prepared: Path) -> None:
    for split in SPLITS:
        stored = open_split(prepared, split)
        whole = stored.read()
        assert whole.dtype == np.uint8 and whole.shape == stored.shape
        index = np.array([5, 0, len(stored) - 1, 5])
        assert np.array_equal(stored.gather(index), whole[index])
        assert np.array_equal(np.load(split_files(prepared, split)[0]), whole)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", r"train-images\.npy is corrupt \(\d+ bytes, \d+ expected\)"),
        ("garbage", r"train-images\.npy is corrupt \(not a NumPy file"),
        ("shape", r"train-images\.npy is corrupt \(holds uint8 \(2, 1, 8, 8\), meta\.json says"),
        ("dtype", r"train-images\.npy is corrupt \(holds float32"),
        ("labels", r"train-labels\.npy is corrupt \(holds int64 \(3,\), meta\.json says"),
        ("range", r"train-labels\.npy is corrupt \(labels outside 0\.\.9\)"),
        ("missing", r"train-images\.npy not found; run `dvc repro preprocess`"),
    ],
)
def test_a_split_that_does_not_match_its_meta_is_one_line(
    prepared: Path, tmp_path: Path, damage: str, message: str
) -> None:
    copy = Path(shutil.copytree(prepared, tmp_path / "prepared"))
    images, labels = split_files(copy, "train")
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:-10])
    elif damage == "garbage":
        images.write_bytes(b"not numpy at all")
    elif damage == "shape":
        np.save(images, np.zeros((2, 1, 8, 8), np.uint8))
    elif damage == "dtype":
        np.save(images, np.zeros(open_split(prepared, "train").shape, np.float32))
    elif damage == "labels":
        np.save(labels, np.zeros(3, np.int64))
    elif damage == "range":
        np.save(labels, np.full(len(np.load(labels)), 10, np.int64))
    else:
        images.unlink()
    with pytest.raises(VisiontuneError, match=message) as error:
        open_split(copy, "train")
    assert "\n" not in str(error.value)


def test_a_failed_write_leaves_the_old_dataset_and_no_partial_one(
    prepared: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(prepared, tmp_path / "prepared"))
    before = _files(copy)
    with pytest.raises(RuntimeError), writing(copy) as out:
        out.split("train", 4, (1, 8, 8)).rows.write(0, np.zeros((2, 1, 8, 8), np.uint8))
        raise RuntimeError("disk full")
    assert _files(copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_a_killed_preprocess_leaves_nothing_a_stage_would_read(
    photo_raw: Path, tmp_path: Path
) -> None:
    """kill -9 while the splits are being written: no prepared folder, so every stage says
    to run preprocess; the next run replaces what was left beside it."""
    script = (
        "import sys, time\n"
        "from visiontune.config.params import DataParams\n"
        "from visiontune.data import decoding, preprocess\n"
        "decode = decoding.decode_rows\n"
        "def slow(*args, **kwargs):\n"
        "    time.sleep(0.2)\n"
        "    return decode(*args, **kwargs)\n"
        "preprocess.decode_rows = slow\n"
        "if __name__ == '__main__':\n"
        "    preprocess.prepare(sys.argv[1], sys.argv[2], DataParams(channels=3, image_size=24))\n"
    )
    (tmp_path / "slow_prepare.py").write_text(script)
    out = tmp_path / "prepared"
    partial = tmp_path / ".prepared.partial"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "slow_prepare.py"), str(photo_raw), str(out)], env=env
    )
    deadline = time.monotonic() + 60
    while not list(partial.glob("*.npy")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(partial.glob("*.npy")), "preprocess never started writing"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    with pytest.raises(VisiontuneError, match=r"meta\.json not found; run `dvc repro preprocess`"):
        open_split(out, "train")
    preprocess.prepare(photo_raw, out, DataParams(channels=3, image_size=24))
    assert not partial.exists() and len(open_split(out, "test")) == 27


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    path_image = _saved_with_exif(image, exif)
    array = image_to_array(path_image, 3, 20)
    upright = image_to_array(Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_270), 3, 20)
    assert np.array_equal(array, upright)
    assert array[:, :10].mean() > array[:, 10:].mean()  # now the top half is white


def _saved_with_exif(image: Image.Image, exif: Image.Exif) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    buffer.seek(0)
    return Image.open(buffer)


@pytest.mark.parametrize(
    "augmentation",
    [
        Augmentation(),
        Augmentation(flip=True, crop=2),
        Augmentation(flip=True, resized_crop=True, jitter=0.4),
    ],
)
def test_streamed_batches_equal_resident_batches(
    prepared: Path, augmentation: Augmentation
) -> None:
    meta = json.loads((prepared / "meta.json").read_text())
    size, cpu = meta["image_size"], torch.device("cpu")
    normalize = ModelInput.from_stats(
        meta["mean"], meta["std"], cpu, stored=size, crop_pct=0.875, size=size // 2
    )
    stored = open_split(prepared, "train")
    labels = torch.from_numpy(stored.labels)
    resident = BatchSource(torch.from_numpy(stored.read()), labels, normalize, augmentation)
    streamed = BatchSource(stored, labels, normalize, augmentation)
    assert streamed.streamed and not resident.streamed
    for generator_seed in (None, 3):
        runs = []
        for source in (resident, streamed):
            generator = None if generator_seed is None else torch.Generator().manual_seed(3)
            runs.append(list(source.batches(50, generator)))
        assert len(runs[0]) == len(runs[1]) == streamed.batch_count(50)
        for a, b in zip(*runs, strict=True):
            assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    full = [
        [batch.inputs for batch in islice(s.full_batches(64, torch.Generator()), 30)]
        for s in (resident, streamed)
    ]
    assert all(torch.equal(a, b) for a, b in zip(*full, strict=True))


def test_a_split_over_the_budget_streams(photo_raw: Path, tmp_path: Path) -> None:
    preprocess.prepare(photo_raw, tmp_path, DataParams(channels=3, image_size=64))
    meta, cpu = load_meta(tmp_path), torch.device("cpu")
    normalize = ModelInput.from_stats(meta.mean, meta.std, cpu, stored=64)
    assert open_split(tmp_path, "train").nbytes == 126 * 3 * 64 * 64  # 1.5 MB
    flips = Augmentation(flip=True)
    over = BatchSource.of_split(
        tmp_path, "train", normalize, cpu, resident_mb=1, augmentation=flips
    )
    under = BatchSource.of_split(tmp_path, "train", normalize, cpu, 2, flips)
    assert over.streamed and not under.streamed
    runs = [list(s.batches(32, torch.Generator().manual_seed(1))) for s in (over, under)]
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(*runs, strict=True))
