"""The model registry end to end: versions and stages as GTO's git tags over real dvc and git,
fetched with `dvc artifacts get` and `visiontune fetch-model`, served by `visiontune serve
--model NAME@STAGE|@VERSION`, from this repository and from a clone through a bare git
remote and a local DVC remote, and the deploy workflow's steps run against those remotes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
import yaml
from helpers.dvc_repo import DvcRepo
from helpers.servers import api_server

from visiontune.experiments.registered_versions import (
    VersionRecord,
    version_record,
    version_records,
    versions_table,
)
from visiontune.registry.references import Reference, parse_reference
from visiontune.registry.versions import Version

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# A proxy that refuses every connection: what nothing offline or on loopback may go through.
DEAD_PROXY = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Registry:
    """The project with two registered versions, v1.0.0 in prod, pushed to a bare git
    remote (``origin``) and a local DVC remote."""

    repo: DvcRepo
    origin: Path
    models: dict[str, str]  # version: md5 of its model
    commits: dict[str, str]  # version: commit
    test_acc: dict[str, float]  # version: its commit's test acc


@pytest.fixture(scope="module")
def registry(baseline: DvcRepo, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("registry")
    repo = baseline.clone_with_cache(root / "repo")
    repo.dvc("remote", "add", "--default", "--force", "storage", str(root / "dvc-storage"))
    repo.commit("a local DVC remote")
    repo.run("git", "clone", "-q", "--bare", str(repo.path), str(root / "origin.git"))
    repo.git("remote", "set-url", "origin", str(root / "origin.git"))
    models, commits, test_acc = {}, {}, {}

    def register(*args: str) -> str:
        repo.dvc("push", "-q")
        repo.git("push", "-q", "origin", "main")
        created = repo.run("gto", "register", "classifier", *args).stdout
        version = created.split("classifier@")[1].split("'")[0]
        models[version] = md5(repo.path / "models" / "model.pt")
        commits[version] = repo.git("rev-parse", "HEAD").stdout.strip()
        test_acc[version] = repo.metrics()["test"]["acc"]
        return version

    assert register("--version", "v1.0.0") == "v1.0.0"
    repo.run("gto", "assign", "classifier", "--version", "v1.0.0", "--stage", "prod")
    # The documented way from an experiment (a study's best trial) to a version: apply it,
    # commit, push the model, register the next version (the docs run `dvc repro` before
    # the commit for robustness and sweep; the registry reads nothing after evaluate).
    repo.dvc("exp", "run", "evaluate", "-n", "best-trial", "-S", "model.lr=0.02")
    repo.dvc("exp", "apply", "best-trial")
    repo.commit("the best trial: model.lr 0.02")
    assert register("--bump-minor") == "v1.1.0"
    repo.git("push", "-q", "origin", "--tags")
    return Registry(repo, root / "origin.git", models, commits, test_acc)


def visiontune(repo: DvcRepo, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return repo.run(sys.executable, "-m", "visiontune", *args, check=check)


def test_references_name_a_version_or_a_stage_and_anything_else_is_a_path():
    assert parse_reference("classifier@v1.2.0") == Reference("classifier", version="v1.2.0")
    assert parse_reference("classifier@prod") == Reference("classifier", stage="prod")
    assert str(parse_reference("classifier@v1.0.0-rc.1")) == "classifier@v1.0.0-rc.1"
    for path in ("models/model.pt", "model.onnx", "/tmp/a@b/model.pt", "classifier@"):
        assert parse_reference(path) is None


def test_the_table_shows_the_params_that_differ_with_floats_cut_to_four_digits():
    made = datetime(2026, 12, 7, 11, 39, tzinfo=timezone.utc)
    records = [
        VersionRecord(
            Version("v1.1.0", "695cc89" + "0" * 33, made, ("prod",)),
            0.9926,
            {"model.lr": 0.02, "train.epochs": 6, "model.width": 16},
        ),
        VersionRecord(
            Version("v1.0.0", "f125232" + "0" * 33, made, ()),
            0.8699,
            {"model.lr": 0.011423254155608374, "train.epochs": 2, "model.width": 16},
        ),
    ]
    assert versions_table(records).splitlines() == [
        "version  stages  commit   registered        test acc  model.lr  train.epochs",
        "v1.1.0   prod    695cc89  2026-12-07 11:39  0.9926    0.02      6",
        "v1.0.0   -       f125232  2026-12-07 11:39  0.8699    0.01142   2",
    ]


def test_the_artifact_dvc_yaml_declares_is_the_train_stage_model_it_describes(baseline):
    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]["classifier"]
    assert declared["path"] == "models/model.pt" and declared["type"] == "model"
    assert declared["desc"] and declared["labels"]
    checkpoint = torch.load(baseline.path / "models" / "model.pt")
    assert declared["meta"]["classes"] == list(checkpoint["classes"])
    size = checkpoint["image_size"]
    assert declared["meta"]["input_size"] == [checkpoint["channels"], size, size]
    assert yaml.safe_load((ROOT / ".gto").read_text())["stages"] == ["dev", "staging", "prod"]


def test_a_repository_with_no_version_says_how_to_register_one(baseline):
    listed = visiontune(baseline, "registry")  # reads the tags only: the shared baseline
    assert listed.stdout == (
        "no version of classifier is registered yet: commit the model you chose, then "
        "gto register classifier --version v1.0.0\n"
    )


def test_versions_and_stages_are_gto_tags_and_listed_with_their_commits_records(registry):
    repo = registry.repo
    tags = set(repo.git("tag", "--list").stdout.split())
    assert tags == {"classifier@v1.0.0", "classifier@v1.1.0", "classifier#prod#1"}
    records = version_records(repo.path, "classifier")
    assert [(r.version.version, r.version.stages) for r in records] == [
        ("v1.1.0", ()),
        ("v1.0.0", ("prod",)),
    ]
    assert [r.version.rev for r in records] == [
        registry.commits["v1.1.0"],
        registry.commits["v1.0.0"],
    ]
    assert [r.test_acc for r in records] == [
        registry.test_acc["v1.1.0"],
        registry.test_acc["v1.0.0"],
    ]
    assert [r.params["model.lr"] for r in records] == [0.02, 0.01]
    assert records[0].params["train.epochs"] == 2 and records[0].params["data.source"] == "digits"
    table = visiontune(repo, "registry").stdout.splitlines()
    assert table[0].split() == [
        "version",
        "stages",
        "commit",
        "registered",
        "test",
        "acc",
        "model.lr",
    ]
    assert table[1].split()[:3] == ["v1.1.0", "-", registry.commits["v1.1.0"][:7]]
    assert table[2].split()[:3] == ["v1.0.0", "prod", registry.commits["v1.0.0"][:7]]
    assert table[1].split()[-2:] == [f"{registry.test_acc['v1.1.0']:.4f}", "0.02"]


def test_a_version_whose_commit_evaluated_another_model_shows_no_test_acc(registry):
    records = version_records(registry.repo.path, "classifier")
    lock = registry.repo.git("show", f"{records[1].version.rev}:dvc.lock").stdout
    stale = yaml.safe_load(lock)
    for dep in stale["stages"]["evaluate"]["deps"]:
        if dep["path"] == "models/model.pt":
            dep["md5"] = "0" * 32
    metrics = json.dumps({"test": {"acc": 0.5}})
    record = version_record(records[1].version, yaml.safe_dump(stale), metrics)
    assert record.test_acc is None and record.note == "its commit evaluated another model"
    assert versions_table([record]).splitlines()[-1] == (
        "v1.0.0: no test acc: its commit evaluated another model"
    )


def test_dvc_artifacts_get_fetches_a_version_and_a_stage_offline(registry, tmp_path):
    repo = registry.repo
    offline = {**repo.env, **DEAD_PROXY}
    for how, out in (("--rev", "v1.0.0"), ("--stage", "prod")):
        target = tmp_path / f"{out}.pt"
        command = [sys.executable, "-m", "dvc", "artifacts", "get", ".", "classifier"]
        subprocess.run(
            [*command, how, out, "-o", str(target)], cwd=repo.path, env=offline, check=True
        )
        assert md5(target) == registry.models["v1.0.0"]
    fetched = visiontune(repo, "fetch-model", "classifier@v1.1.0", "--out", str(tmp_path / "f"))
    assert fetched.stdout.startswith(f"wrote {tmp_path / 'f' / 'model.pt'}: classifier v1.1.0 ")
    assert md5(tmp_path / "f" / "model.pt") == registry.models["v1.1.0"]
    record = json.loads((tmp_path / "f" / "registered.json").read_text())
    assert record["version"] == "v1.1.0" and record["rev"] == registry.commits["v1.1.0"]


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("detector@prod", "detector@prod: no version of 'detector' is registered in "),
        (
            "classifier@v9.0.0",
            "classifier@v9.0.0: classifier has no version v9.0.0; registered: v1.1.0, v1.0.0",
        ),
        (
            "classifier@qa",
            "classifier@qa: 'qa' is neither a version (vX.Y.Z) nor a stage (dev, staging, prod)",
        ),
        ("classifier@1.0.0", "did you mean v1.0.0?"),
        (
            "classifier@staging",
            "classifier@staging: no version of classifier is in stage "
            "staging (assign one with: gto assign classifier --version v1.1.0 --stage staging)",
        ),
    ],
)
def test_a_bad_reference_is_one_line_before_any_server_starts(registry, model, says):
    result = visiontune(registry.repo, "serve", "--model", model, "--port", "9", check=False)
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert "Uvicorn" not in result.stdout + result.stderr


def test_prod_serves_its_version_and_after_reassignment_the_newer_one(registry, tmp_path):
    repo = registry.repo

    def metadata(model: str) -> dict:
        with api_server(["--model", model], tmp_path / "serve.log", repo.env, repo.path) as api:
            return api.get("/metadata").json()

    first = metadata("classifier@prod")
    assert first["registry"] == {
        "reference": "classifier@prod",
        "artifact": "classifier",
        "version": "v1.0.0",
        "stages": ["prod"],
        "rev": registry.commits["v1.0.0"],
        "path": "models/model.pt",
        "repo": str(repo.path),
        "description": first["registry"]["description"],
        "labels": ["image-classification", "pytorch", "digits"],
        "meta": {"classes": [str(i) for i in range(10)], "input_size": [1, 8, 8]},
    }
    assert first["revision"] == registry.commits["v1.0.0"]
    assert first["params"]["model"]["lr"] == 0.01

    time.sleep(1)  # GTO orders a stage's assignments by their tags' times (whole seconds)
    repo.run("gto", "assign", "classifier", "--version", "v1.1.0", "--stage", "prod")
    assert "classifier#prod#2" in repo.git("tag", "--list").stdout.split()
    newer = metadata("classifier@prod")
    assert (newer["registry"]["version"], newer["registry"]["stages"]) == ("v1.1.0", ["prod"])
    assert newer["params"]["model"]["lr"] == 0.02
    older = metadata("classifier@v1.0.0")
    assert (older["registry"]["version"], older["registry"]["stages"]) == ("v1.0.0", [])
    repo.git("tag", "-d", "classifier#prod#2")  # prod back to v1.0.0 for the other tests


def test_a_clone_fetches_versions_through_the_dvc_remote(registry, tmp_path):
    clone = DvcRepo.clone(registry.origin, tmp_path / "clone")  # no DVC cache
    clone.run(
        sys.executable,
        "-m",
        "dvc",
        "artifacts",
        "get",
        ".",
        "classifier",
        "--stage",
        "prod",
        "-o",
        "prod.pt",
    )
    assert md5(clone.path / "prod.pt") == registry.models["v1.0.0"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ["--model", "classifier@v1.1.0", "--repo", str(registry.origin)]
    with api_server(args, tmp_path / "serve.log", clone.env, elsewhere) as api:
        served = api.get("/metadata").json()["registry"]
    assert (served["version"], served["repo"]) == ("v1.1.0", str(registry.origin))


def test_a_version_whose_model_is_in_no_cache_or_remote_is_one_line(registry, tmp_path):
    """A version registered and pushed to git, its model never pushed to the DVC remote:
    a clone cannot fetch it."""
    repo = DvcRepo.clone(registry.origin, tmp_path / "trainer")
    shutil.copytree(registry.repo.path / ".dvc" / "cache", repo.path / ".dvc" / "cache")
    repo.dvc("checkout", "-q")
    repo.dvc("exp", "run", "evaluate", "-S", "model.lr=0.03")
    repo.commit("model.lr 0.03, model never pushed")
    repo.run("gto", "register", "classifier", "--version", "v2.0.0")
    repo.git("push", "-q", "origin", "main", "classifier@v2.0.0")
    clone = DvcRepo.clone(registry.origin, tmp_path / "clone")
    result = visiontune(clone, "serve", "--model", "classifier@v2.0.0", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert (
        result.stderr.startswith("error: classifier@v2.0.0: models/model.pt of v2.0.0 (commit ")
        and "is in no DVC cache or remote reachable from here" in result.stderr
    )
    registry.repo.git("fetch", "-q", "origin", "--tags")  # others see v2.0.0 too: remove it
    for where in (registry.repo.path, registry.origin):
        subprocess.run(
            ["git", "tag", "-d", "classifier@v2.0.0"], cwd=where, check=True, capture_output=True
        )


def workflow_steps() -> list[dict]:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yaml").read_text())
    (job,) = workflow["jobs"].values()
    return job["steps"]


def expand(value: str, context: dict[str, str]) -> str:
    """A workflow expression ``${{ a.b }}`` from ``context`` (secrets: unset, empty)."""
    text = str(value)
    while "${{" in text:
        start, end = text.index("${{"), text.index("}}")
        name = text[start + 3 : end].strip()
        text = text[:start] + context.get(name, "") + text[end + 2 :]
    return text


def test_the_deploy_workflow_fetches_serves_and_smoke_tests_a_pushed_stage_tag(registry, tmp_path):
    """On a stage tag pushed to the bare remote, the workflow's steps run for real in a fresh
    clone of it: GTO parses the tag, `dvc artifacts get` fetches the version from the local
    DVC remote, and the smoke test passes against the server the image would run (its build
    resolves the version as its Dockerfile does; docker itself only linted here)."""
    tag = "classifier#prod#1"
    checkout = DvcRepo.clone(registry.origin, tmp_path / "checkout")
    outputs: dict[str, str] = {"github.ref_name": tag}
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    ran, skipped = [], []
    for step in workflow_steps():
        if "run" not in step or step["name"] == "Install":  # set up: this very environment
            continue
        if step.get("id") in ("build", "start", "log"):  # docker: linted, not run
            skipped.append(step["id"])
            continue
        env = {k: expand(v, outputs) for k, v in (step.get("env") or {}).items()}
        github_output = tmp_path / f"output-{len(ran)}"
        github_output.touch()
        env = {
            **checkout.env,
            **env,
            **DEAD_PROXY,  # a runner behind a proxy: none of the steps may need it
            "RUNNER_TEMP": str(runner_temp),
            "GITHUB_OUTPUT": str(github_output),
        }
        if "smoke_test.py" in step["run"]:
            # The image: its build's resolution, then its CMD (`visiontune serve`).
            image = tmp_path / "image-models"
            model = (
                f"{outputs['steps.tag.outputs.artifact']}@{outputs['steps.tag.outputs.version']}"
            )
            image.mkdir()
            shutil.copy(checkout.path / "models" / "model.pt", image / "model.pt")
            visiontune(
                checkout, "fetch-model", model, "--repo", str(checkout.path), "--out", str(image)
            )
            with api_server(
                ["--model", str(image / "model.pt")], tmp_path / "serve.log", checkout.env
            ) as api:
                env["API_URL"] = str(api.base_url).rstrip("/")
                result = subprocess.run(
                    ["bash", "-e", "-c", step["run"]],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                )
        else:
            result = subprocess.run(
                ["bash", "-e", "-c", step["run"]],
                cwd=checkout.path,
                env=env,
                capture_output=True,
                text=True,
            )
        assert result.returncode == 0, f"{step['name']}:\n{result.stdout}\n{result.stderr}"
        ran.append((step["name"], result.stdout))
        for line in github_output.read_text().splitlines():
            key, _, value = line.partition("=")
            outputs[f"steps.{step['id']}.outputs.{key}"] = value
    assert skipped == ["build", "start", "log"]
    assert [name for name, _ in ran] == [
        "Parse the stage tag",
        "Fetch the version with dvc artifacts get",
        "Smoke-test /health, /metadata and one prediction",
    ]
    assert outputs["steps.tag.outputs.version"] == "v1.0.0"
    assert outputs["steps.tag.outputs.stage"] == "prod"
    assert md5(checkout.path / "models" / "model.pt") == registry.models["v1.0.0"]
    assert ran[-1][1].startswith("smoke test passed: classifier v1.0.0 at ")


@pytest.mark.parametrize("tag", ["classifier#prod!#2", "classifier#staging#9"])
def test_a_tag_that_assigns_nothing_deploys_nothing(registry, tmp_path, tag):
    """An unassignment (``gto deprecate NAME VERSION STAGE``) and a tag GTO does not know
    stop at the parse."""
    (parse,) = [step for step in workflow_steps() if step.get("id") == "tag"]
    clone = DvcRepo.clone(registry.origin, tmp_path / "clone")
    clone.run("gto", "deprecate", "classifier", "v1.0.0", "prod")
    env = {**clone.env, "TAG": tag, "RUNNER_TEMP": str(tmp_path), "GITHUB_OUTPUT": "/dev/null"}
    result = subprocess.run(
        ["bash", "-e", "-c", parse["run"]], cwd=clone.path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    says = "is a stage unassignment, not an assignment" if "!" in tag else "is not a GTO tag"
    assert result.stderr.strip() == f"::error::{tag} {says}" + (
        "" if "!" in tag else " of this repository"
    )
