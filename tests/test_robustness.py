"""The robustness stage: corruptions as batch ops, the curves and metrics it writes."""

from __future__ import annotations

import json

import pytest
import torch

from visiontune.config.params import CORRUPTIONS, ParamsError, parse_params
from visiontune.data.prepared import open_split
from visiontune.evaluation.evaluate import evaluate
from visiontune.evaluation.robustness import SEVERITIES, _subset, corrupt, robustness


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensor ops: on cores shared with another test worker, a second torch thread
    only waits for the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(size: int) -> torch.Tensor:
    """Random uint8 images (a batch of 16, 3 channels)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (16, 3, size, size), generator=generator, dtype=torch.uint8)


def test_every_corruption_params_name_has_its_severities():
    assert tuple(SEVERITIES) == CORRUPTIONS
    assert all(len(strengths) == 5 for _, strengths in SEVERITIES.values())


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("size", [8, 32])
def test_a_corruption_grows_with_its_severity_and_is_seeded(name, size):
    images = _images(size)
    distances = []
    for severity in range(1, 6):
        out = corrupt(images, name, severity, torch.Generator().manual_seed(0))
        again = corrupt(images, name, severity, torch.Generator().manual_seed(0))
        assert out.dtype == torch.uint8 and out.shape == images.shape
        assert torch.equal(out, again)
        distances.append((out.float() - images.float()).abs().mean().item())
    assert distances[0] > 0, "severity 1 leaves the images unchanged"
    assert distances == sorted(distances), distances


def test_bad_robustness_params_name_the_key():
    with pytest.raises(ParamsError, match=r"^robustness.corruptions: 'fog' is not a corruption"):
        parse_params({"robustness": {"corruptions": ["blur", "fog"]}})
    with pytest.raises(ParamsError, match=r"^robustness.severities must be <= 5, got 6$"):
        parse_params({"robustness": {"severities": 6}})
    with pytest.raises(ParamsError, match=r"^robustness.corruptions has repeated values"):
        parse_params({"robustness": {"corruptions": ["blur", "blur"]}})


def test_curves_start_at_test_acc_and_metrics_summarize_them(prepared, trained_model, tmp_path):
    params = parse_params({"train": {"threads": 1}, "robustness": {"severities": 3}})
    test = evaluate(params, trained_model, prepared, tmp_path / "e.json", tmp_path / "e")["test"]
    curves, metrics = tmp_path / "curves.json", tmp_path / "robustness.json"
    summary = robustness(params, trained_model, prepared, curves, metrics)["robustness"]
    rows = json.loads(curves.read_text())

    assert [(r["corruption"], r["severity"]) for r in rows] == [
        (name, severity) for name in CORRUPTIONS for severity in range(4)
    ]
    assert {r["acc"] for r in rows if r["severity"] == 0} == {test["acc"]} == {summary["clean_acc"]}
    corrupted = [r["acc"] for r in rows if r["severity"] > 0]
    assert summary["mean_acc"] == pytest.approx(sum(corrupted) / len(corrupted))
    assert summary["mean_acc"] < test["acc"]
    top = {r["corruption"]: r["acc"] for r in rows if r["severity"] == 3}
    assert summary["worst_acc"] == top[summary["worst_corruption"]] == min(top.values())
    assert json.loads(metrics.read_text()) == {"robustness": summary}

    # Each corruption draws from its own seeded generator: a shorter list, or a rerun,
    # gives the same rows for the corruptions kept.
    fewer = parse_params({"train": {"threads": 1}, "robustness": {"corruptions": ["occlusion"]}})
    robustness(fewer, trained_model, prepared, tmp_path / "few.json", tmp_path / "m.json")
    kept = [r for r in rows if r["corruption"] == "occlusion"]
    assert json.loads((tmp_path / "few.json").read_text())[:4] == kept


def test_max_images_keeps_a_seeded_subset_in_split_order(prepared):
    split = open_split(prepared, "test")
    whole, labels = torch.from_numpy(split.read()), torch.from_numpy(split.labels)
    kept_images, kept = _subset(split, 30, seed=1)
    assert len(kept) == len(kept_images) == 30
    position = -1  # each kept image is a later image of the split than the one before
    for image, label in zip(kept_images, kept, strict=True):
        later = [i for i in range(position + 1, len(whole)) if torch.equal(whole[i], image)]
        assert later and labels[later[0]] == label
        position = later[0]
    assert torch.equal(_subset(split, 30, seed=1)[0], kept_images)
    assert not torch.equal(_subset(split, 30, seed=2)[0], kept_images)
    assert torch.equal(_subset(split, 0, seed=1)[0], whole)


def test_pixelate_at_half_the_side_is_the_mean_of_each_2x2_block():
    images = _images(8)
    blocks = torch.nn.functional.avg_pool2d(images.float(), 2).round()
    expected = blocks.repeat_interleave(2, 2).repeat_interleave(2, 3).to(torch.uint8)
    assert torch.equal(corrupt(images, "pixelate", 3, torch.Generator()), expected)


@pytest.mark.slow
def test_the_stage_reruns_alone_on_its_params_and_its_curves_overlay_in_plots_diff(
    baseline_clone,
):
    repo = baseline_clone  # the baseline ran the whole pipeline
    assert set(repo.metrics()["robustness"]) == {
        "clean_acc",
        "mean_acc",
        "worst_corruption",
        "worst_acc",
    }
    repo.set_param("robustness", "severities", 2)
    assert set(json.loads(repo.dvc("status", "--json").stdout)) == {"robustness"}
    rerun = repo.dvc("repro").stdout
    assert "Running stage 'robustness'" in rerun and rerun.count("Running stage") == 1
    shown = json.loads(repo.dvc("plots", "diff", "HEAD", "--json").stdout)["data"]
    (plot,) = [p for p in shown["plots/robustness/curves.json"] if p["type"] == "vega"]
    values = plot["content"]["data"]["values"]
    severities = {
        rev: {v["severity"] for v in values if v["rev"] == rev} for rev in ("HEAD", "workspace")
    }
    assert severities == {"HEAD": set(range(6)), "workspace": set(range(3))}
    assert plot["content"]["encoding"]["color"]["field"] == "corruption"
