"""Shared fixtures: image folders built with PIL, a real local HTTP server, no network."""

from __future__ import annotations

import fcntl
import functools
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The longest test files, longest first (seconds of one worker in a full run, measured with
# --durations on a 2-core AMD EPYC): xdist hands whole files to its workers in collection
# order, so starting these first lets the many short files fill in at the end and the
# workers finish together (within 40 s of each other when measured). The first builds the
# shared baseline; the next two begin with tests that need none, so no worker waits for it.
LONGEST_FIRST = (
    "test_tuning.py",  # 470
    "test_experiment_cost.py",  # 430
    "test_train_processes.py",  # 155
    "test_remote.py",  # 150
    "test_distributed.py",  # 150
    "test_registry.py",  # 125
    "test_heatmap.py",  # 115
    "test_pruning.py",  # 105
    "test_report.py",  # 100
    "test_export.py",  # 95
    "test_photo_pipeline.py",  # 80
    "test_dvc_reads.py",  # 70
    "test_pretrained_weights.py",  # 65
    "test_serve.py",  # 50
    "test_precision.py",  # 50
    "test_finetuning.py",  # 45
    "test_pipeline.py",  # 35
    "test_stage_deps.py",  # 20
    "test_storage.py",  # 20
    "test_finders.py",  # 20
    "test_cpu_kernels.py",  # 20
    "test_robustness.py",  # 15
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the :data:`LONGEST_FIRST` files first, in that order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


_first_environment: dict[str, str] = {}  # os.environ as the first test of the process found it


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Start each test in the environment the first one found. Code run in-process may set
    variables for the processes it would start (fit asks for its CPU kernels through
    ATEN_CPU_CAPABILITY and its kin): a later test's dvc then ran its "native" stages on
    the pinned kernels, and a model trained by one worker differed from another's."""
    if not _first_environment:
        _first_environment.update(os.environ)
    for name in set(os.environ) - set(_first_environment):
        del os.environ[name]
    os.environ.update(_first_environment)
    return (yield)


def _make_image_folder(
    root: Path, classes: list[str], per_class: int, size: int = 8, mode: str = "RGB"
) -> Path:
    """Write ``root/<class>/<i>.png`` random images (seeded per class); return ``root``."""
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(label)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(folder / f"{i}.png")
    return root


@pytest.fixture
def make_image_folder() -> Callable[..., Path]:
    """``make_image_folder(root, classes, per_class, size=8, mode="RGB") -> root``."""
    return _make_image_folder


@dataclass(frozen=True)
class FileServer:
    """A real HTTP server on 127.0.0.1 serving the files under ``root``."""

    root: Path
    base_url: str

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep request lines out of the test output."""


@pytest.fixture
def file_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """Serve ``tmp_path/served`` over HTTP (port chosen by the OS), bypassing any proxy."""
    monkeypatch.setenv("no_proxy", "*")
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serve = functools.partial(server.serve_forever, poll_interval=0.01)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield FileServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route every urllib request to a closed local port, so downloads fail at once."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small prepared digits set: 40 images per class at 8 px (280 to train on)."""
    from visiontune.config.params import parse_params
    from visiontune.data.download import download
    from visiontune.data.preprocess import prepare

    root = tmp_path_factory.mktemp("digits")
    download("digits", root / "raw")
    prepare(
        root / "raw",
        root / "prepared",
        parse_params({"data": {"max_per_class": 40, "image_size": 8}}).data,
    )
    return root / "prepared"


@pytest.fixture(scope="session")
def trained_model(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/model.pt`` trained with the shipped params for a few epochs on
    :func:`prepared` (about 1 s)."""
    from visiontune.config.params import parse_params
    from visiontune.models.checkpoint import save_checkpoint
    from visiontune.training.fit import fit

    params = parse_params({"train": {"epochs": 4, "threads": 1}})
    fitted = fit(params, prepared)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, fitted.model, fitted.meta)
    return path


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory, worker_id: str):
    """The project shrunk for tests (TUNE), its whole pipeline run and committed: where most
    end-to-end tests start. They work in clones of it (``baseline_clone``), so
    pytest-xdist's workers share one: the first to need it builds it, under a lock."""
    from helpers.dvc_repo import TUNE, DvcRepo

    if worker_id == "master":  # no xdist: this session's own
        return _build_baseline(tmp_path_factory.mktemp("baseline") / "repo", TUNE)
    shared = tmp_path_factory.getbasetemp().parent  # this test run's, common to its workers
    path = shared / "baseline" / "repo"
    with (shared / "baseline.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (shared / "baseline" / "built").exists():
            return DvcRepo(path)
        repo = _build_baseline(path, TUNE)
        (shared / "baseline" / "built").touch()
        return repo


def _build_baseline(path: Path, overrides: dict):
    from helpers.dvc_repo import DvcRepo

    repo = DvcRepo.copy_of_project(path, overrides)
    repo.dvc("repro")
    repo.commit("baseline")
    return repo


@pytest.fixture
def baseline_clone(baseline, tmp_path: Path):
    """A clone of :func:`baseline` with a copy of its DVC cache, outputs checked out."""
    return baseline.clone_with_cache(tmp_path / "repo")
