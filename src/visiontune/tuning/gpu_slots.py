"""The GPUs a study's running trials share (``--gpus-per-trial K``): ``--jobs`` disjoint
slots of K devices, one handed to each trial when it starts and taken back when it ends,
as Ray Tune gives each trial its resources.

The GPUs present are the ones this process may use: the entries of its
``CUDA_VISIBLE_DEVICES`` where that is set (a scheduler's or the user's share of the
machine, taken as given: indices or UUIDs), else every device torch counts. A trial gets
its slot as its ``CUDA_VISIBLE_DEVICES`` (:mod:`~visiontune.config.trial_devices`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from visiontune.config.errors import VisiontuneError
from visiontune.config.trial_devices import VISIBLE_ENV, devices_file


def gpus_present(environ: Mapping[str, str] = os.environ) -> tuple[list[str], str]:
    """The GPUs this process may use, and where they were read (for messages).

    CUDA reads ``CUDA_VISIBLE_DEVICES`` up to its first invalid entry (``-1`` hides every
    device); torch counts devices without a CUDA context (NVML), and finds none without a
    driver."""
    listed = environ.get(VISIBLE_ENV)
    if listed is not None:
        gpus = []
        for entry in (part.strip() for part in listed.split(",")):
            if not entry or entry.startswith("-"):
                break
            gpus.append(entry)
        return gpus, f"{VISIBLE_ENV}={listed}"
    import torch

    return [str(i) for i in range(torch.cuda.device_count())], "torch.cuda.device_count()"


def cut_slots(jobs: int, per_trial: int, environ: Mapping[str, str] = os.environ) -> list[str]:
    """``jobs`` disjoint slots of ``per_trial`` GPUs present (``["0,1", "2,3"]``); none for
    ``per_trial`` 0. More than are present is a one-line error."""
    if per_trial == 0:
        return []
    gpus, source = gpus_present(environ)
    if jobs * per_trial > len(gpus):
        raise VisiontuneError(
            f"--jobs {jobs} x --gpus-per-trial {per_trial} needs {jobs * per_trial} GPUs, "
            f"{len(gpus)} present ({source})"
        )
    return [",".join(gpus[i * per_trial : (i + 1) * per_trial]) for i in range(jobs)]


class GpuSlots:
    """Hands out ``slots`` to trials' experiments, writing each one's file in ``folder``;
    with no slots, hands out nothing."""

    def __init__(self, slots: Sequence[str], folder: Path):
        self.free = list(slots)
        self.folder = folder
        self.held: dict[str, str] = {}
        self.enabled = bool(slots)

    def hand_out(self, experiment: str) -> str | None:
        """The first free slot, now ``experiment``'s (its own again if it holds one); the
        tuner runs at most as many trials at once as there are slots."""
        if not self.enabled:
            return None
        if experiment not in self.held:
            self.held[experiment] = self.free.pop(0)
            self.folder.mkdir(parents=True, exist_ok=True)
            devices_file(self.folder, experiment).write_text(self.held[experiment])
        return self.held[experiment]

    def take_back(self, experiment: str) -> None:
        """``experiment`` ended: its slot is free again."""
        if experiment in self.held:
            devices_file(self.folder, experiment).unlink(missing_ok=True)
            self.free.append(self.held.pop(experiment))
