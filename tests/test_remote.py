"""Sharing through remotes: data and models on a gs:// bucket, experiments through git.

A real GCS-protocol server (gcp-storage-emulator) on loopback stands for the bucket and a
bare git repository for the team's git host; each clone stands for another machine.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.dvc_repo import DvcRepo
from helpers.gcs import GcsEmulator, gcs_emulator, remote_url
from helpers.servers import free_port

pytestmark = pytest.mark.slow

OUTPUTS = ("data/prepared/train-images.npy", "data/prepared/test-labels.npy", "models/model.pt")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    with gcs_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def origin(
    baseline: DvcRepo, tmp_path_factory: pytest.TempPathFactory, gcs: GcsEmulator
) -> DvcRepo:
    """The first machine: the session's baseline (pipeline run, results committed), its
    data pushed to the bucket and git pushed to the team's host."""
    root = tmp_path_factory.mktemp("remote")
    repo = baseline.clone_with_cache(root / "first")
    gcs.use_in(repo)
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(root / "origin.git")], check=True
    )
    repo.git("remote", "set-url", "origin", str(root / "origin.git"))
    repo.dvc("push")
    repo.git("push", "-q", "origin", "main")
    return repo


def clone(origin: DvcRepo, path: Path, gcs: GcsEmulator) -> DvcRepo:
    """Another machine: a git clone with the emulator as its (local) remote endpoint."""
    repo = DvcRepo.clone(origin.path.parent / "origin.git", path)
    gcs.use_in(repo)
    return repo


def test_committed_default_remote_is_a_gs_bucket_without_secrets():
    config = (DvcRepo(Path(__file__).parents[1]).path / ".dvc" / "config").read_text()
    assert remote_url().startswith("gs://")
    assert "verify = true" in config  # a corrupted download is refused, not checked out
    for secret in ("credentialpath", "endpointurl", "allow_anonymous_login"):
        assert secret not in config  # those belong in the git-ignored config.local
    assert (
        ".dvc/config.local"
        not in subprocess.run(
            ["git", "ls-files", ".dvc"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_push_puts_everything_on_the_bucket(origin: DvcRepo, gcs: GcsEmulator):
    status = origin.dvc("status", "--cloud").stdout
    assert "Cache and remote 'storage' are in sync" in status
    fs = gcs.fs()
    for name in OUTPUTS:
        assert fs.exists(gcs.object_path(md5(origin.path / name))), name
    assert "Everything is up to date" in origin.dvc("push").stdout


def test_fresh_clone_pulls_data_and_model_and_has_nothing_to_rerun(
    origin: DvcRepo, gcs: GcsEmulator, tmp_path: Path
):
    second = clone(origin, tmp_path / "second", gcs)
    assert not (second.path / "models" / "model.pt").exists()
    second.dvc("pull")
    for name in OUTPUTS:
        assert md5(second.path / name) == md5(origin.path / name), name
    assert "Data and pipelines are up to date" in second.dvc("status").stdout
    assert "Running stage" not in second.dvc("repro").stdout


def test_missing_or_corrupted_object_fails_clearly_and_keeps_the_workspace(
    origin: DvcRepo, gcs: GcsEmulator, tmp_path: Path
):
    second = clone(origin, tmp_path / "second", gcs)
    model = origin.path / "models" / "model.pt"
    on_remote = gcs.object_path(md5(model))
    fs = gcs.fs()
    try:
        damages = {
            "Missing cache files": fs.rm,
            "Checkout failed": lambda path: fs.pipe(path, b"not the model"),
        }
        for message, damage in damages.items():
            damage(on_remote)
            pulled = second.dvc("pull", check=False)
            assert pulled.returncode != 0
            assert message in pulled.stderr
            assert "Checkout failed for following targets:\nmodels/model.pt" in pulled.stderr
            assert not (second.path / "models" / "model.pt").exists()  # no bad file checked out
            assert not (
                second.path / ".dvc" / "cache" / "files" / "md5" / md5(model)[:2] / md5(model)[2:]
            ).exists()
            for name in OUTPUTS[:-1]:  # everything else arrived intact
                assert md5(second.path / name) == md5(origin.path / name), name
            assert second.git("status", "--porcelain").stdout == ""
    finally:
        fs.pipe(on_remote, model.read_bytes())
    second.dvc("pull")
    assert md5(second.path / "models" / "model.pt") == md5(model)


class _SilentServer:
    """Accepts connections on loopback and never answers: a remote that hangs."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_unreachable_remote_fails_in_bounded_time_with_a_clear_message(
    origin: DvcRepo, gcs: GcsEmulator, tmp_path: Path
):
    """A refused connection and a server that never answers, side by side (two clones:
    both pulls only wait, on gcsfs' retries and on the request timeout)."""
    refusing = clone(origin, tmp_path / "refusing", gcs)
    gcs.use_in(refusing, endpoint=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    silent = _SilentServer()
    waiting = clone(origin, tmp_path / "waiting", gcs)
    gcs.use_in(waiting, endpoint=f"http://127.0.0.1:{silent.port}")
    waiting.env["FSSPEC_GS"] = json.dumps({"requests_timeout": 5})  # as docs/sharing.md advises
    # gcsfs tries each request 6 times with backoff (about 35 s): one target keeps it short
    pull = (sys.executable, "-m", "dvc", "pull", "models/model.pt")
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(2) as pool:
            refused, hung = pool.map(
                lambda repo: repo.run(*pull, check=False, timeout=180), (refusing, waiting)
            )
    finally:
        silent.close()
    print(f"both failed after {time.monotonic() - started:.0f} s")
    for result in (refused, hung):
        assert result.returncode != 0
        assert "failed to connect to gs" in result.stderr
    assert not (refusing.path / "models" / "model.pt").exists()
    assert not (waiting.path / "models" / "model.pt").exists()


def test_experiments_travel_between_clones_through_git(
    origin: DvcRepo, gcs: GcsEmulator, tmp_path: Path
):
    first = clone(origin, tmp_path / "first", gcs)
    first.dvc("pull")
    for name, lr in (("lr-low", 0.003), ("lr-high", 0.03)):
        first.dvc("exp", "run", "-n", name, "-S", f"model.lr={lr}", "evaluate")
    first.dvc("exp", "push", "origin", "--all-commits")

    second = clone(origin, tmp_path / "second", gcs)
    assert second.experiments() == {}
    second.dvc("exp", "pull", "origin")
    shared = second.experiments()
    assert shared == first.experiments()
    assert set(shared) == {"lr-low", "lr-high"}
    assert shared["lr-high"]["params"]["model"]["lr"] == 0.03
    assert 0 <= shared["lr-high"]["metrics"]["metrics/evaluate.json"]["data"]["test"]["acc"] <= 1

    report = second.run(sys.executable, "-m", "visiontune", "report", "--out", "report.md")
    table = (second.path / "report.md").read_text()
    assert report.returncode == 0
    assert "lr-low" in table and "lr-high" in table

    second.dvc("exp", "apply", "lr-high")  # its model came with it: no re-run needed
    assert "Running stage" not in second.dvc("repro", "evaluate").stdout
