"""A folder of photos through the real pipeline: dvc exp run in the workspace, --temp and
the queue, with the train split streamed from its file and augmented as photos are; never
ranked with the digits the baseline commit's dvc.lock records."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.dvc_repo import SHRINK, DvcRepo
from helpers.photos import write_photos

from visiontune.experiments.frame import experiments_frame
from visiontune.experiments.report import by_data

pytestmark = pytest.mark.slow


def test_a_photo_folder_streams_through_exp_run_temp_and_the_queue(tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "my photos", per_class=100, sizes=(64, 200))
    overrides = {
        **SHRINK,
        "data": {"source": str(photos), "image_size": 64, "channels": 3},
        "model": {"input_size": 48, "crop_pct": 0.875},  # evaluated: the centre 56 px, resized
        # 1 MB: the 210-image train split (2.6 MB) streams from its file, val and test do not
        "train": {
            **SHRINK["train"],
            "resident_mb": 1,
            **{"crop": 0, "flip": True, "resized_crop": True, "color_jitter": 0.4},
        },
    }
    repo = DvcRepo.copy_of_project(tmp_path / "repo", overrides)

    streamed = repo.dvc("exp", "run", "-n", "streamed", "evaluate")
    assert "Running stage 'preprocess'" in streamed.stdout
    repo.dvc("exp", "run", "--temp", "-n", "resident", "evaluate", "-S", "train.resident_mb=64")
    repo.dvc("exp", "run", "--queue", "-n", "queued", "evaluate", "-S", "model.lr=0.02")
    repo.start_queue()
    repo.wait_for_queue(timeout=300)

    rows = repo.experiments()
    assert {"streamed", "resident", "queued"} <= set(rows)
    data = rows["streamed"]["metrics"]["metrics/data.json"]["data"]["images"]
    assert (data["train"], data["val"], data["test"]) == (210, 45, 45)
    # Streamed or moved whole to the device, the same random crops and jitter make the same
    # batches, which train the same model.
    assert rows["resident"]["metrics"] == rows["streamed"]["metrics"]
    assert rows["queued"]["metrics"] != rows["streamed"]["metrics"]
    for row in rows.values():
        assert 0 <= row["metrics"]["metrics/evaluate.json"]["data"]["test"]["acc"] <= 1

    # The commit's params name the photos, but its dvc.lock and metrics are the shipped
    # digits run's: other data, whatever the params say. The runs stopped at evaluate, so
    # `dvc exp show` lists the digits' data/prepared among their deps (the sweep stage's).
    groups = by_data(experiments_frame(repo.path))
    assert set(groups.ranked.index) == {"workspace", "streamed", "resident", "queued"}
    ((label, apart),) = groups.apart
    assert list(apart.index) == ["main"] and label.startswith("data/prepared ")
