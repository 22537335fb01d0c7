"""train.nproc: the train stage as several real processes through torchrun (gloo on the
CPU, on 127.0.0.1), against the same stage in one process, in workspaces of their own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from visiontune.config.errors import USER_ERROR_EXIT
from visiontune.config.params import ParamsError, parse_params
from visiontune.config.processes import ENDPOINT_ENV, LAUNCHER_ENV, NNODES_ENV, RUN_ID_ENV

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "stages" / "train.py"
MISBEHAVING = ROOT / "tests" / "helpers" / "train_processes.py"
# Small and fp32, with batch norm (synchronised); flips, crops and label smoothing on, so
# that a process's share of a batch is augmented and weighted as the single process does
# it; no dropout (its masks are drawn per process).
TRAIN = {"epochs": 3, "batch_size": 32, "flip": True, "crop": 1, "label_smoothing": 0.1}
MODEL = {"width": 8, "blocks": 2, "dropout": 0.0}
TIMEOUT = 300


def workspace(root: Path, prepared: Path, nproc: int, **train: object) -> Path:
    """A folder to run the train stage in: params.yaml and data/prepared."""
    root.mkdir(parents=True)
    params = {"model": MODEL, "train": {**TRAIN, "nproc": nproc, **train}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data").mkdir()
    (root / "data" / "prepared").symlink_to(prepared)
    return root


def run(folder: Path, script: Path = STAGE, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != LAUNCHER_ENV}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "models" / "model.pt", weights_only=True)["state_dict"]


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest ||a - b|| / ||a|| over the floating-point tensors."""
    return max(
        ((a[k].double() - b[k].double()).norm() / a[k].double().norm().clamp_min(1e-12)).item()
        for k in a
        if a[k].is_floating_point()
    )


def outputs(folder: Path) -> dict[str, object]:
    """Every file the stage wrote, metrics.json's keys and the rows of each DVCLive series."""
    files = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and "data" not in p.parts
    )
    series = {
        str(p.relative_to(folder)): len(p.read_text().splitlines())
        for p in (folder / "plots").rglob("*.tsv")
    }
    summary = yaml.safe_load((folder / "metrics" / "train.json").read_text())
    return {"files": files, "series": series, "keys": sorted(summary)}


@pytest.fixture(scope="module")
def pair(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The stage trained by one process and by two, on the same params."""
    root = tmp_path_factory.mktemp("nproc")
    one, two = workspace(root / "one", prepared, 1), workspace(root / "two", prepared, 2)
    for folder in (one, two):
        result = run(folder)
        assert result.returncode == 0, result.stderr
    return one, two


def test_two_processes_train_the_weights_of_one(pair):
    """Shards of every global batch, augmented with the global batch's draws and weighted by
    their share, batch norm over the global batch, validated on disjoint shares: the weights
    and metrics of one process (2e-6 apart when measured)."""
    one, two = pair
    assert relative_difference(weights(one), weights(two)) <= 1e-5
    a, b = (yaml.safe_load((f / "metrics" / "train.json").read_text()) for f in pair)
    assert a["val"]["acc"] == b["val"]["acc"] and a["epochs"] == b["epochs"] == 3
    assert a["val"]["loss"] == pytest.approx(b["val"]["loss"], rel=1e-5)
    assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-5)


def test_unsynchronised_batch_norm_trains_other_weights(pair, prepared, tmp_path):
    """The comparison above sees state that is not synchronised: each process normalising
    its own share gives weights far from one process's."""
    folder = workspace(tmp_path / "ws", prepared, 2, sync_bn=False)
    result = run(folder)
    assert result.returncode == 0, result.stderr
    assert relative_difference(weights(pair[0]), weights(folder)) > 1e-3


def test_one_writer_leaves_the_outputs_of_one_process(pair):
    one, two = pair
    assert outputs(one) == outputs(two)
    assert outputs(two)["series"]["plots/train/plots/metrics/val/acc.tsv"] == 1 + 3


def test_two_nodes_on_loopback_train_the_weights_of_one_node(pair, prepared, tmp_path):
    """Two launchers as two machines of one process each, meeting through torchrun's c10d
    rendezvous on 127.0.0.1: the weights of train.nproc=2 on one machine, bit for bit."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {NNODES_ENV: "2", ENDPOINT_ENV: f"127.0.0.1:{port}", RUN_ID_ENV: tmp_path.name}
    nodes = [workspace(tmp_path / name, prepared, 2) for name in ("a", "b")]
    launched = [
        subprocess.Popen(
            [sys.executable, str(STAGE)],
            cwd=node,
            env={**{k: v for k, v in os.environ.items() if k != LAUNCHER_ENV}, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in nodes
    ]
    try:
        results = [process.communicate(timeout=TIMEOUT) for process in launched]
    finally:
        for process in launched:
            process.kill()
            process.wait()
    assert [p.returncode for p in launched] == [0, 0], [err for _, err in results]
    one_node = weights(pair[1])
    for node in nodes:  # each machine's writer keeps the run's outputs, bit for bit
        assert all(torch.equal(one_node[key], value) for key, value in weights(node).items())


def test_a_process_that_raises_stops_the_stage_naming_its_rank(prepared, tmp_path):
    folder = workspace(tmp_path / "ws", prepared, 2)
    start = time.monotonic()
    result = run(folder, MISBEHAVING, TRAIN_SCENARIO="raise")
    assert time.monotonic() - start < TIMEOUT
    assert result.returncode == USER_ERROR_EXIT
    assert "error: rank 1 of 2: RuntimeError: raised on purpose" in result.stderr.splitlines()
    assert result.stderr.splitlines()[-1].startswith("error: train.nproc=2: rank 1 failed")
    assert "Traceback" not in result.stderr
    assert not (folder / "models").exists() and not (folder / "metrics").exists()
    assert not _launched_by_anyone_of(folder)


def test_a_killed_process_stops_the_stage_naming_its_rank(prepared, tmp_path):
    folder = workspace(tmp_path / "ws", prepared, 2)
    result = run(folder, MISBEHAVING, TRAIN_SCENARIO="kill")
    assert result.returncode == USER_ERROR_EXIT
    last = result.stderr.splitlines()[-1]
    assert (
        last == "error: train.nproc=2: rank 1 failed (killed by SIGKILL); every process was stopped"
    )
    assert not (folder / "models").exists()
    assert not _launched_by_anyone_of(folder)


def test_rank_0_decides_pruning_and_every_process_stops_there(prepared, tmp_path):
    """Only rank 0 has the trial's callback: without its verdict broadcast rank 1 would
    train on and wait forever for the others."""
    folder = workspace(tmp_path / "ws", prepared, 2)
    result = run(folder, MISBEHAVING, TRAIN_SCENARIO="prune")
    assert result.returncode == 0, result.stderr
    summary = yaml.safe_load((folder / "metrics" / "train.json").read_text())
    assert summary["epochs"] == 2 and summary["pruned"]["reason"] == "told to"
    assert result.stdout.count("pruned: told to") == 1  # printed by the writer alone


def test_launched_processes_end_when_the_stage_is_killed(prepared, tmp_path):
    folder = workspace(tmp_path / "ws", prepared, 2)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"]["epochs"] = 10_000
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != LAUNCHER_ENV}
    stage = subprocess.Popen([sys.executable, str(STAGE)], cwd=folder, env=env)
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(_launched_by(stage.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        launched = _launched_by(stage.pid)
        assert len(launched) == 2
        stage.send_signal(signal.SIGKILL)
        stage.wait()
        deadline = time.monotonic() + 10
        while _launched_by(stage.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _launched_by(stage.pid) == []
    finally:
        stage.kill()
        stage.wait()
        for pid in _launched_by(stage.pid):
            os.kill(pid, signal.SIGKILL)


def test_params_errors_of_several_processes():
    with pytest.raises(ParamsError, match=r"^train.batch_size must divide by train.nproc"):
        parse_params({"train": {"nproc": 3, "batch_size": 128}})
    with pytest.raises(ParamsError, match=r"^train.nproc=2 runs on the CPU or on CUDA"):
        parse_params({"train": {"nproc": 2, "device": "mps"}})


def test_a_missing_backend_is_a_params_error():
    from visiontune.training.distributed import backend_for

    with pytest.raises(ParamsError, match=r"^train.nproc > 1 needs gloo \(CPU\) or NCCL"):
        backend_for(torch.device("meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_more_processes_than_gpus_is_a_params_error(prepared, tmp_path):
    nproc = 2 * (torch.cuda.device_count() + 1)
    folder = workspace(tmp_path / "ws", prepared, nproc)
    result = run(folder)
    assert result.returncode == USER_ERROR_EXIT
    assert result.stderr.strip().splitlines() == [
        f"error: train.nproc must be at most the {torch.cuda.device_count()} GPUs here (one a "
        f"process) times the machines, got {nproc}"
    ]


def _launched_by(pid: int) -> list[int]:
    """The live processes whose environment names ``pid`` as their launcher."""
    found = []
    marker = f"{LAUNCHER_ENV}={pid}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def _launched_by_anyone_of(folder: Path) -> list[int]:
    """Live processes launched by a stage whose working folder is ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if cwd == str(folder) and LAUNCHER_ENV.encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_experiments_in_a_temp_folder_and_the_queue_run_several_processes(baseline_clone):
    repo = baseline_clone
    before = repo.read_outputs()
    repo.dvc("exp", "run", "--temp", "-n", "temp-two", "-S", "train.nproc=2", "train")
    queued = ("-S", "train.nproc=2", "-S", "train.epochs=3", "train")  # not run-cached
    repo.dvc("exp", "run", "--queue", "-n", "queued-two", *queued)
    repo.start_queue(jobs=1)
    repo.wait_for_queue(timeout=600)
    rows = repo.experiments()
    assert {"temp-two", "queued-two"} <= set(rows), repo.dvc("queue", "status").stdout
    for name, epochs in (("temp-two", 2), ("queued-two", 3)):
        assert rows[name]["params"]["train"]["nproc"] == 2
        summary = rows[name]["metrics"]["metrics/train.json"]["data"]
        assert summary["epochs"] == epochs and summary["val"]["acc"] > 0.3
    assert repo.read_outputs() == before


def test_a_trial_reports_each_epoch_from_rank_0_only(prepared, tmp_path):
    from helpers.dvc_repo import SPACE

    from visiontune.config.params import Params
    from visiontune.config.tune_settings import parse_settings
    from visiontune.tuning.options import TuneOptions
    from visiontune.tuning.study import open_study, pruner_spec
    from visiontune.tuning.trial_link import (
        EXPERIMENT_ATTR,
        EXPERIMENT_ENV,
        PRUNER_ATTR,
        STORAGE_ENV,
    )

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    params, settings = Params(), parse_settings({"space": SPACE, "pruner": "none"})
    study = open_study(params, TuneOptions(trials=1, storage=storage, study="s", settings=settings))
    trial = study.ask()
    trial.set_user_attr(PRUNER_ATTR, pruner_spec(params, settings))
    trial.set_user_attr(EXPERIMENT_ATTR, "s-0")
    folder = workspace(tmp_path / "ws", prepared, 2)
    result = run(folder, **{STORAGE_ENV: storage, EXPERIMENT_ENV: "s-0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("trial 0 of study s: reporting val.acc each epoch") == 1
    reported = study.trials[0].intermediate_values
    series = (folder / "plots/train/plots/metrics/val/acc.tsv").read_text().splitlines()[1:]
    assert reported == {int(row.split()[0]): float(row.split()[1]) for row in series}


def test_cpu_sync_batch_norm_keeps_the_checkpoint_keys_or_names_the_param():
    from torch import nn

    from visiontune.config.errors import VisiontuneError
    from visiontune.training.sync_batchnorm import CpuSyncBatchNorm, synchronised

    cpu = torch.device("cpu")
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    synced = synchronised(plain, cpu)
    assert sum(isinstance(m, CpuSyncBatchNorm) for m in synced.modules()) == 2
    assert all(torch.equal(state[k], v) for k, v in synced.state_dict().items())
    assert synced.state_dict().keys() == state.keys()
    with pytest.raises(VisiontuneError, match=r"^train.sync_bn=true, but .* BatchNorm1d layers"):
        synchronised(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), cpu)
