"""Starting weights: a file in weights/ (model.weights), the hub's cache, an unreachable hub,
and the weights' own mean/std (model.mean_std: pretrained). Real timm and huggingface_hub:
a tiny timm model (test_resnet) trained here stands in for downloaded weights."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import yaml
from helpers.dvc_repo import ROOT, DvcRepo

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import ModelParams, Params, parse_params
from visiontune.data.prepared import load_meta
from visiontune.models.checkpoint import save_checkpoint
from visiontune.models.factory import build_model
from visiontune.models.meta import ModelMeta
from visiontune.models.pretrained import fetch_weights
from visiontune.training.fit import fit

TINY = "test_resnet"  # timm's model for tests: 0.4 M parameters, any image size
HEAD = ("fc.weight", "fc.bias")


def tiny(**model: object) -> Params:
    return parse_params({"model": {"name": TINY, **model}, "train": {"epochs": 1, "threads": 1}})


def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hub_at(monkeypatch: pytest.MonkeyPatch, cache: Path, *, offline: bool) -> None:
    """What HF_HUB_CACHE, HF_HUB_OFFLINE and HF_ENDPOINT (a closed port: any request fails)
    set, in this process: huggingface_hub reads them into constants when imported (timm
    imports it), too early for the environment here."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", offline)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE", template)


@pytest.fixture(scope="module")
def trained(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """test_resnet trained one epoch on the 10 digits, saved three ways: safetensors, a torch
    state dict and a visiontune checkpoint."""
    fitted = fit(tiny(), prepared)
    folder = tmp_path_factory.mktemp("trained")
    state = {key: value.contiguous() for key, value in fitted.model.state_dict().items()}
    safetensors.torch.save_file(state, folder / "digits.safetensors")
    torch.save(state, folder / "digits.pt")
    save_checkpoint(folder / "model.pt", fitted.model, fitted.meta)
    return {path.name: path for path in folder.iterdir()}


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository root (the working directory, as for a stage) with its weights/ folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    return tmp_path / "weights"


@pytest.mark.parametrize("name", ["digits.safetensors", "digits.pt", "model.pt"])
def test_weights_of_another_task_load_with_a_new_head(trained, weights_dir, name) -> None:
    (weights_dir / name).write_bytes(trained[name].read_bytes())
    saved = safetensors.torch.load_file(trained["digits.safetensors"])
    assert saved["fc.weight"].shape[0] == 10

    model = ModelParams(name=TINY, weights=name)
    state = build_model(model, num_classes=3, channels=1, image_size=16).state_dict()

    assert state.keys() == saved.keys()
    backbone = [key for key in saved if key not in HEAD]
    assert [key for key in backbone if not torch.equal(state[key], saved[key])] == []
    assert state["fc.weight"].shape == (3, saved["fc.weight"].shape[1])
    assert state["fc.bias"].shape == (3,)
    assert not torch.equal(state["fc.weight"], saved["fc.weight"][:3])  # a new head


def test_three_channel_weights_adapt_to_grayscale(weights_dir) -> None:
    saved = timm.create_model(TINY).state_dict()  # as the hub's are: RGB, 1000 classes
    safetensors.torch.save_file(saved, weights_dir / "rgb.safetensors")
    model = ModelParams(name=TINY, weights="rgb.safetensors")
    state = build_model(model, num_classes=3, channels=1, image_size=16).state_dict()
    first = "conv1.0.weight"
    assert torch.allclose(state[first], saved[first].sum(dim=1, keepdim=True))  # timm's adaptation
    assert all(torch.equal(state[k], saved[k]) for k in saved if k not in (*HEAD, first))


def _build(weights: str) -> None:
    build_model(ModelParams(name=TINY, weights=weights), num_classes=3, channels=1, image_size=16)


def _one_line_error(weights: str) -> str:
    with pytest.raises(VisiontuneError) as info:
        _build(weights)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_missing_file_says_how_to_get_it(weights_dir) -> None:
    assert _one_line_error("resnet18.safetensors") == (
        "weights/resnet18.safetensors not found: put the file there and `dvc add` it, "
        "or `dvc pull` it"
    )


def test_weights_of_another_architecture_are_named(weights_dir) -> None:
    torch.save(timm.create_model("resnet10t").state_dict(), weights_dir / "resnet10t.pt")
    assert _one_line_error("resnet10t.pt") == (
        f"weights/resnet10t.pt does not fit {TINY}: missing layer3.0.conv3.weight, "
        "layer3.0.bn3.weight, layer3.0.bn3.bias, ... (6 in all)"
    )
    state = timm.create_model(TINY).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    torch.save(state, weights_dir / "edited.pt")
    assert _one_line_error("edited.pt") == (
        f"weights/edited.pt does not fit {TINY}: missing layer1.0.conv1.weight; "
        "unexpected extra.weight"
    )


def test_weights_of_other_shapes_are_named(weights_dir) -> None:
    state = timm.create_model(TINY).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(2, 2, 3, 3)
    torch.save(state, weights_dir / "narrow.pt")
    message = _one_line_error("narrow.pt")
    assert message.startswith(
        f"weights/narrow.pt does not fit {TINY}: size mismatch for layer1.0.conv1.weight: "
        "copying a param with shape torch.Size([2, 2, 3, 3]) from checkpoint"
    )


@pytest.mark.parametrize("name", ["corrupt.safetensors", "corrupt.pt"])
def test_an_unreadable_file_is_one_line(weights_dir, name) -> None:
    (weights_dir / name).write_bytes(b"not weights at all" * 8)
    assert _one_line_error(name).startswith(f"weights/{name} cannot be read as weights (")


@pytest.mark.parametrize("channels", [1, 3])
def test_mean_std_pretrained_are_the_weights_own(prepared, channels) -> None:
    data = dataclasses.replace(load_meta(prepared), channels=channels)
    cfg = timm.models.get_pretrained_cfg("resnet18")
    assert cfg.mean != data.mean  # ImageNet's, not the digits'
    model = {"name": "resnet18", "weights": "r.pt", "mean_std": "pretrained"}
    params = parse_params({"model": model})
    meta = ModelMeta.trained_on(data, params)
    if channels == 3:
        assert (meta.mean, meta.std) == (cfg.mean, cfg.std)
    else:
        assert meta.mean == pytest.approx((sum(cfg.mean) / 3,))
        assert meta.std == pytest.approx((sum(cfg.std) / 3,))
    assert ModelMeta.trained_on(data, tiny()).mean == data.mean  # mean_std: data


def _hub_cache(root: Path, state: dict[str, torch.Tensor]) -> Path:
    """``root`` laid out as the hub's cache, holding ``state`` as test_resnet's weights."""
    repo = root / f"models--timm--{timm.models.get_pretrained_cfg(TINY).hf_hub_id.split('/')[1]}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    safetensors.torch.save_file(state, snapshot / "model.safetensors")
    return root


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_pretrained_weights_come_from_the_hub_cache_without_a_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: bool
) -> None:
    saved = timm.create_model(TINY).state_dict()
    hub_at(monkeypatch, _hub_cache(tmp_path, saved), offline=offline)
    model = ModelParams(name=TINY, pretrained=True)
    state = build_model(model, num_classes=3, channels=3, image_size=16).state_dict()
    assert all(torch.equal(state[key], saved[key]) for key in saved if key not in HEAD)
    assert state["fc.weight"].shape[0] == 3


UNREACHABLE = (
    f"model.pretrained=true: cannot reach the model hub for {TINY} ([Errno 111] Connection "
    "refused); offline, put the weights in a file and set model.weights: see weights/README.md"
)


def test_an_unreachable_hub_fails_the_build_within_10_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, huggingface_hub retried for about 46 s (two files, five retries each)."""
    hub_at(monkeypatch, tmp_path, offline=False)  # an empty cache
    start = time.monotonic()
    with pytest.raises(VisiontuneError) as info:
        build_model(
            ModelParams(name=TINY, pretrained=True), num_classes=3, channels=3, image_size=16
        )
    elapsed = time.monotonic() - start
    assert str(info.value) == UNREACHABLE
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_an_unreachable_hub_fails_the_train_stage_in_one_line(
    prepared: Path, tmp_path: Path
) -> None:
    """The real stage, with the hub's own environment variables: one line, at once. Its
    time is mostly the start-up of Python, torch and timm (5 to 11 s on 2 busy cores), so
    the bound here only proves the hub's retries (about 46 s alone) are gone."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(name=TINY, pretrained=True)
    params["train"].update(epochs=1, threads=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(prepared)
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "HF_HUB_CACHE": str(tmp_path / "hub"),  # empty: nothing cached
    }
    env.pop("HF_HUB_OFFLINE", None)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 3
    assert result.stderr.splitlines() == [f"error: {UNREACHABLE}"]
    assert elapsed < 30, f"took {elapsed:.1f} s"


def test_fetch_weights_saves_the_hubs_weights_into_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the hub's cache here (the same path as a download, without a network)."""
    saved = timm.create_model(TINY).state_dict()
    hub_at(monkeypatch, _hub_cache(tmp_path / "hub", saved), offline=True)
    out = tmp_path / "weights" / f"{TINY}.safetensors"
    count = fetch_weights(TINY, out)
    loaded = safetensors.torch.load_file(out)
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert count == sum(t.numel() for t in timm.create_model(TINY).parameters())
    with pytest.raises(VisiontuneError, match="timm knows no pretrained weights named 'nope'"):
        fetch_weights("nope", out)


def test_fetch_weights_offline_says_it_needs_a_network_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    command = [sys.executable, "-m", "visiontune", "fetch-weights", TINY]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: fetch-weights {TINY} needs a network: the hub is")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "weights").exists()


@pytest.mark.slow
def test_weights_are_a_versioned_dependency_of_train(baseline_clone: DvcRepo) -> None:
    """Of the runs that use them: a plain run (model.weights: none) depends on no file of
    weights/, so adding one re-runs nothing."""
    repo = baseline_clone
    weights = repo.path / "weights" / "tiny.safetensors"
    safetensors.torch.save_file(timm.create_model(TINY).state_dict(), weights)
    repo.dvc("add", "weights/tiny.safetensors")
    repo.commit("tiny weights")
    assert "up to date" in repo.dvc("status", "train", "evaluate").stdout
    run = ("exp", "run", "train", "-S", f"model.name={TINY}", "-S", "train.epochs=1")
    run += ("-S", "model.weights=tiny.safetensors", "-S", "model.mean_std=pretrained")

    assert "Running stage 'train'" in repo.dvc(*run).stdout
    assert "up to date" in repo.dvc("status", "train").stdout
    meta = torch.load(repo.path / "models" / "model.pt", weights_only=True)
    cfg = timm.models.get_pretrained_cfg(TINY)
    assert meta["mean"] == pytest.approx([sum(cfg.mean) / 3])  # digits are grayscale

    torch.manual_seed(1)
    safetensors.torch.save_file(timm.create_model(TINY).state_dict(), weights)
    repo.dvc("add", "weights/tiny.safetensors")
    assert "weights/tiny.safetensors" in repo.dvc("status", "train").stdout
    assert "Running stage 'train'" in repo.dvc(*run).stdout
