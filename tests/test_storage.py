"""Storage: a local folder's images and the prepared data exist once on disk (the workspace
is linked to DVC's cache: ``cache.type`` in .dvc/config), and nothing done to the user's
folder, to an output by hand, or by a re-run reaches the cached objects."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.dvc_repo import ROOT, DvcRepo

STORED_ONCE = "Data and pipelines are up to date."


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _object(repo: DvcRepo, oid: str) -> Path:
    return repo.path / ".dvc" / "cache" / "files" / "md5" / oid[:2] / oid[2:]


def _objects(repo: DvcRepo) -> dict[str, Path]:
    """The cache's file objects (not the .dir listings) by their md5."""
    root = repo.path / ".dvc" / "cache" / "files" / "md5"
    return {p.parent.name + p.name: p for p in root.glob("*/*") if not p.name.endswith(".dir")}


def _corrupted(repo: DvcRepo) -> list[str]:
    """Cache objects whose bytes no longer hash to their name."""
    return sorted(oid for oid, path in _objects(repo).items() if _md5(path) != oid)


def _on_disk(*roots: Path) -> int:
    """Bytes allocated to the regular files under ``roots``, each inode counted once (a
    hardlinked file is stored once); directories are left out."""
    inodes = {}
    for root in roots:
        for path in root.rglob("*"):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                inodes[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return sum(inodes.values())


def _reflinks(folder: Path) -> bool:
    """Whether ``folder``'s filesystem clones files (btrfs, XFS, APFS): DVC then stores a
    copy-on-write clone, as small on disk as a link but a file of its own."""
    from dvc_objects.fs.system import reflink

    (folder / "a").write_bytes(b"a")
    try:
        reflink(str(folder / "a"), str(folder / "b"))
    except OSError:
        return False
    return True


def _tracked(repo: DvcRepo, stage: str) -> dict[str, str]:
    """``data/...`` path -> md5 of every file of ``stage``'s output, from dvc.lock."""
    import yaml

    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())
    (out,) = [out for out in lock["stages"][stage]["outs"] if out["md5"].endswith(".dir")]
    listing = json.loads(_object(repo, out["md5"]).read_text())
    return {f"{out['path']}/{entry['relpath']}": entry["md5"] for entry in listing}


@pytest.fixture
def folder_repo(tmp_path: Path, make_image_folder: Callable[..., Path]) -> tuple[DvcRepo, Path]:
    """The project with ``data.source`` a local folder of 90 images, run up to preprocess."""
    folder = make_image_folder(tmp_path / "photos", ["cat", "dog", "fox"], per_class=30, size=64)
    data = {"source": str(folder), "image_size": 16, "channels": 3}
    repo = DvcRepo.copy_of_project(tmp_path / "repo", {"data": data})
    repo.dvc("repro", "preprocess")
    repo.commit("photos prepared")
    return repo, folder


def test_the_committed_config_links_the_workspace_to_the_cache():
    from configobj import ConfigObj

    types = ConfigObj(str(ROOT / ".dvc" / "config"))["cache"]["type"].split(",")
    # hardlink first: dvc commit links a stage's new file into the cache instead of copying
    # it (reflink first leaves the copy in place where there are no reflinks, as on ext4);
    # copy last: a cache on another filesystem still works.
    assert types[0] == "hardlink" and types[-1] == "copy"


@pytest.mark.slow
def test_a_local_folder_and_its_prepared_data_are_stored_once(folder_repo, tmp_path: Path):
    repo, folder = folder_repo
    (tmp_path / "probe").mkdir()
    if _reflinks(tmp_path / "probe"):
        pytest.skip("copy-on-write clones are stored once, but not by one inode")
    outputs = {**_tracked(repo, "download"), **_tracked(repo, "preprocess")}
    assert sum(name.startswith("data/raw/images/") for name in outputs) == 90
    repeated = {oid for oid in outputs.values() if list(outputs.values()).count(oid) > 1}
    for name, oid in outputs.items():
        work = repo.path / name
        if oid in repeated:  # DVC links one of several files of the same content
            continue
        assert os.path.samefile(work, _object(repo, oid)), name  # one file, two names
        assert not work.stat().st_mode & 0o222, name  # read-only: a write fails, not the cache
    stored = _on_disk(repo.path / "data", repo.path / ".dvc" / "cache")
    assert stored <= 1.1 * (_on_disk(folder) + _on_disk(repo.path / "data" / "prepared"))


@pytest.mark.slow
def test_edits_of_the_folder_or_of_an_output_by_hand_never_reach_the_cache(folder_repo):
    repo, folder = folder_repo
    raw = _tracked(repo, "download")
    prepared = _tracked(repo, "preprocess")

    images = sorted(folder.rglob("*.png"))  # the user edits, grows and deletes originals
    with images[0].open("r+b") as file:
        file.write(b"\0" * 64)
    with images[1].open("ab") as file:
        file.write(b"more")
    images[2].unlink()
    assert _corrupted(repo) == []
    assert {name: _md5(repo.path / name) for name in raw} == raw
    assert STORED_ONCE in repo.dvc("status", "preprocess").stdout

    # A stage script run by hand writes over the linked outputs: new files, not the objects.
    repo.set_param("data", "image_size", 8)
    repo.run(sys.executable, "stages/preprocess.py")
    assert _corrupted(repo) == []
    assert {name: _md5(repo.path / name) for name in prepared} != prepared
    repo.git("checkout", "params.yaml")
    repo.dvc("checkout", "--force", "preprocess")
    assert {name: _md5(repo.path / name) for name in prepared} == prepared
    assert STORED_ONCE in repo.dvc("status", "preprocess").stdout

    # dvc removes the read-only linked outputs before a stage runs again; the objects of
    # the first run stay intact and come back with the first run's dvc.lock.
    repo.set_param("data", "image_size", 8)
    assert "Running stage 'preprocess'" in repo.dvc("repro", "preprocess").stdout
    assert "Running stage 'download'" in repo.dvc("repro", "--force", "download").stdout
    assert _corrupted(repo) == []
    repo.git("checkout", "--", ".")
    repo.dvc("checkout", "download", "preprocess")
    assert {name: _md5(repo.path / name) for name in {**raw, **prepared}} == {**raw, **prepared}
    assert STORED_ONCE in repo.dvc("status", "download", "preprocess").stdout


def _write_json(out: Path, model: Path) -> None:
    from visiontune.config.paths import write_json

    write_json(out, {"acc": 1.0})


def _save_checkpoint(out: Path, model: Path) -> None:
    import torch

    from visiontune.models.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(out, *load_checkpoint(model, torch.device("cpu")))


@pytest.mark.parametrize(
    ("write", "name"),
    [(_write_json, "data.json"), (_save_checkpoint, "model.pt")],
)
def test_a_writer_replaces_a_linked_output_instead_of_writing_through_it(
    write: Callable[[Path, Path], None], name: str, tmp_path: Path, trained_model: Path
):
    cached = tmp_path / "object"  # a read-only cache object, hardlinked as the output
    cached.write_bytes(b"cached")
    cached.chmod(0o444)
    out = tmp_path / "out" / name
    out.parent.mkdir()
    os.link(cached, out)
    write(out, trained_model)
    assert cached.read_bytes() == b"cached"
    assert not os.path.samefile(out, cached) and out.read_bytes() != b"cached"
    assert [p.name for p in out.parent.iterdir()] == [name]  # nothing partial left behind
    fresh = tmp_path / "fresh" / name  # the same bytes as a write to a new path
    write(fresh, trained_model)
    assert _md5(fresh) == _md5(out)


def test_writing_a_prepared_dataset_replaces_linked_files_instead_of_writing_through_them(
    tmp_path: Path,
):
    import numpy as np

    from visiontune.data.prepared import writing

    cached = tmp_path / "object"
    cached.write_bytes(b"cached")
    cached.chmod(0o444)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    os.link(cached, prepared / "train-images.npy")
    with writing(prepared) as out:
        split = out.split("train", 1, (1, 2, 2))
        split.rows.write(0, np.ones((1, 1, 2, 2), np.uint8))
        split.finish(np.zeros(1, np.int64), [(0, 1)])
    assert cached.read_bytes() == b"cached"
    assert np.load(prepared / "train-images.npy").sum() == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["object", "prepared"]
