"""--gpus-per-trial: slots cut from the GPUs present, handed out and taken back, and taken by
each stage of a trial as its CUDA_VISIBLE_DEVICES. (tests/test_tuning.py runs a study whose
trials record what they saw.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from visiontune.config.errors import VisiontuneError
from visiontune.config.trial_devices import EXPERIMENT_ENV, FOLDER_ENV, VISIBLE_ENV, apply
from visiontune.tuning.gpu_slots import GpuSlots, cut_slots


def visible(devices: str) -> dict[str, str]:
    return {VISIBLE_ENV: devices}


def test_slots_are_disjoint_runs_of_the_visible_devices_in_order():
    assert cut_slots(2, 2, visible("0,1,2,3")) == ["0,1", "2,3"]
    assert cut_slots(2, 1, visible("3, 5,6,7")) == ["3", "5"]  # the rest stay unused
    assert cut_slots(1, 2, visible("GPU-a1,GPU-b2")) == ["GPU-a1,GPU-b2"]  # UUIDs as given
    assert cut_slots(4, 0, visible("")) == []  # --gpus-per-trial 0: every trial sees all


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        (
            "0,1,2",
            "--jobs 2 x --gpus-per-trial 2 needs 4 GPUs, 3 present (CUDA_VISIBLE_DEVICES=0,1,2)",
        ),
        ("", "--jobs 2 x --gpus-per-trial 2 needs 4 GPUs, 0 present (CUDA_VISIBLE_DEVICES=)"),
        # CUDA reads the list up to its first invalid entry: -1 hides every device
        (
            "0,-1,2,3",
            "--jobs 2 x --gpus-per-trial 2 needs 4 GPUs, 1 present (CUDA_VISIBLE_DEVICES=0,-1,2,3)",
        ),
    ],
)
def test_more_gpus_than_present_is_one_line(devices, message):
    with pytest.raises(VisiontuneError) as caught:
        cut_slots(2, 2, visible(devices))
    assert str(caught.value) == message


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="counts the GPUs of a machine without")
def test_without_cuda_visible_devices_torch_counts_the_gpus():
    with pytest.raises(VisiontuneError) as caught:
        cut_slots(1, 1, {})
    assert str(caught.value).endswith("needs 1 GPUs, 0 present (torch.cuda.device_count())")


def test_a_slot_is_the_trial_s_until_it_ends_then_the_next_one_s(tmp_path):
    slots = GpuSlots(["0,1", "2,3"], tmp_path / "devices")
    assert slots.hand_out("study-0") == "0,1"
    assert slots.hand_out("study-1") == "2,3"
    assert slots.hand_out("study-0") == "0,1"  # a retried trial keeps its own
    assert (tmp_path / "devices" / "study-1").read_text() == "2,3"
    slots.take_back("study-0")
    assert not (tmp_path / "devices" / "study-0").exists()
    assert slots.hand_out("study-2") == "0,1"
    assert GpuSlots([], tmp_path / "none").hand_out("study-3") is None
    assert not (tmp_path / "none").exists()


def test_each_stage_of_a_trial_takes_its_slot_as_cuda_visible_devices(tmp_path):
    GpuSlots(["0,1", "2,3"], tmp_path).hand_out("study-0")
    environ = {FOLDER_ENV: str(tmp_path), EXPERIMENT_ENV: "study-0", VISIBLE_ENV: "0,1,2,3"}
    assert apply(environ) == "0,1"
    assert environ[VISIBLE_ENV] == "0,1"
    # an experiment the tuner handed nothing, or a stage run by hand: left as it was
    for environ in ({FOLDER_ENV: str(tmp_path), EXPERIMENT_ENV: "mine"}, visible("3")):
        before = dict(environ)
        assert apply(environ) is None
        assert environ == before


def test_a_stage_process_and_what_it_starts_see_the_slot(tmp_path):
    """Set before CUDA starts, in the environment the stage's own processes inherit."""
    GpuSlots(["4,5"], tmp_path).hand_out("study-0")
    code = (
        "import os, subprocess, sys\n"
        "from visiontune.config.trial_devices import apply\n"
        "apply()\n"
        "subprocess.run([sys.executable, '-c', "
        "'import os; print(os.environ[\"CUDA_VISIBLE_DEVICES\"])'], check=True)\n"
    )
    environ = {"PATH": "/usr/bin:/bin", FOLDER_ENV: str(tmp_path), EXPERIMENT_ENV: "study-0"}
    seen = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    assert seen.stdout == "4,5\n"
