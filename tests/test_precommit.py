"""The pre-commit hooks: offline from the dev environment, green on the repository, and a
commit of bad params, a broken dvc.yaml, an import across the package layers, a key or a
large file is refused."""

from __future__ import annotations

import re
import sys

import yaml
from helpers.dvc_repo import DvcRepo


def _failed(output: str) -> set[str]:
    """Ids of the hooks that pre-commit reported as failed."""
    return set(re.findall(r"\.Failed\n- hook id: (\S+)", output))


def test_the_hooks_pass_offline_and_then_refuse_a_bad_commit(tmp_path):
    repo = DvcRepo.copy_of_project(tmp_path / "repo", overrides={})
    repo.env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        repo.env[proxy] = "http://127.0.0.1:9"  # a closed port: any download would fail
    pre_commit = (sys.executable, "-m", "pre_commit")

    clean = repo.run(*pre_commit, "run", "--all-files", check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    config = yaml.safe_load((repo.path / ".pre-commit-config.yaml").read_text())
    hooks = {hook["name"]: hook for entry in config["repos"] for hook in entry["hooks"]}
    ran = set(re.findall(r"^(.+?)\.{3,}Passed$", clean.stdout, re.MULTILINE))
    on_commit = {name for name, hook in hooks.items() if "stages" not in hook}
    assert ran == on_commit - {"no credential files (keys, .env, DVC's local config)"}

    installed = repo.run(*pre_commit, "install")
    assert "post-checkout" in installed.stdout
    repo.set_param("model", "lr", -1)
    dvc_yaml = repo.path / "dvc.yaml"
    dvc_yaml.write_text(
        dvc_yaml.read_text().replace("    cmd: python stages/sweep.py", "    cmdd: x")
    )
    key = "-----BEGIN OPENSSH " + "PRIVATE KEY-----"  # split: this file must not hold one
    (repo.path / "deploy.txt").write_text(f"{key}\nb3Blbn\n")
    (repo.path / "gcs-key.json").write_text('{"type": "service_account"}\n')
    (repo.path / "weights.bin").write_bytes(bytes(2 << 20))
    (repo.path / "stages" / "extra.py").write_text("import os\n")
    serving = repo.path / "src" / "visiontune" / "serving" / "app.py"
    serving.write_text(
        serving.read_text()
        + "\n\ndef _late() -> None:\n    import visiontune.training.fit  # noqa: F401\n"
    )
    repo.git("add", "-A")
    refused = repo.run("git", "commit", "-m", "bad", check=False)
    output = refused.stderr  # git gives hooks its stderr for their output
    assert refused.returncode == 1, refused.stdout + output
    assert _failed(output) == {
        "visiontune-params",
        "dvc-yaml",
        "detect-private-key",
        "no-credential-files",
        "check-added-large-files",
        "ruff-check",
        "lint-imports",
        "dvc-pre-commit",
    }
    assert "error: model.lr must be > 0, got -1" in output
    assert "extra keys not allowed" in output
    assert repo.git("rev-list", "--count", "HEAD").stdout.strip() == "1"
