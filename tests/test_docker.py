"""Offline checks of the Docker images (there is no Docker engine in the tests).

hadolint lints both Dockerfiles; every file they COPY is in the build context (present, or a
dvc.yaml output, and not left out by .dockerignore); the commands they run, and the ones their
headers document, exist in the CLIs; they run as a non-root user; the api image's HEALTHCHECK
and CMD behave as intended when run by a real shell against a real HTTP server.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCKERFILES = {
    "train": ROOT / "docker" / "train.Dockerfile",
    "api": ROOT / "docker" / "api.Dockerfile",
}
NAMES = sorted(DOCKERFILES)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


# ---- a small Dockerfile reader ------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the instruction, continuation lines joined
    line: int


@dataclass
class Stage:
    base: str  # FROM's image, ARGs expanded
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def args(self) -> dict[str, str]:
        """The stage's ARG defaults (an ARG without one is the empty string)."""
        found = {}
        for instruction in self.all("ARG"):
            name, _, default = instruction.args.partition("=")
            found[name.strip()] = default.strip().strip("\"'")
        return found

    def env(self) -> dict[str, str]:
        """The stage's ENV values, ARGs and earlier ENVs expanded (``KEY=VALUE`` form only)."""
        scope = self.args()
        found: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.args):
                key, sep, value = token.partition("=")
                assert sep, f"line {instruction.line}: use ENV KEY=VALUE"
                found[key] = scope[key] = expand(value, scope)
        return found


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def expand(text: str, scope: dict[str, str]) -> str:
    """Expand ``$NAME``, ``${NAME}`` and ``${NAME:-default}`` from ``scope``; others stay."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if scope.get(name):
            return scope[name]
        if match.group(2) is not None:
            return match.group(2)
        return scope.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", substitute, text)


def parse_dockerfile(path: Path) -> Dockerfile:
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comments go, even between continuation lines (as Docker does)
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if line.endswith("\\"):
            continue
        keyword, _, rest = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip(), start))
        pending = []
    assert not pending, f"{path.name}: the last instruction ends with a backslash"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(expand(words[0], global_args), name))
        elif not stages:
            assert instruction.keyword == "ARG", f"{path.name}: {instruction.keyword} before FROM"
            key, _, default = instruction.args.partition("=")
            global_args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(path, global_args, stages)


def exec_form(text: str) -> list[str]:
    """The argv of a JSON (exec) form CMD, ENTRYPOINT or HEALTHCHECK CMD."""
    argv = json.loads(text)
    assert isinstance(argv, list), text
    assert all(isinstance(arg, str) for arg in argv), text
    return argv


@dataclass
class Copy:
    sources: list[str]
    dest: str
    from_stage: str | None


def copies(stage: Stage) -> list[Copy]:
    found = []
    scope = stage.args()
    for instruction in stage.all("COPY") + stage.all("ADD"):
        words = shlex.split(instruction.args)
        flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
        paths = [expand(w, scope) for w in words if not w.startswith("--")]
        if paths and paths[0].startswith("["):
            paths = exec_form(" ".join(paths))
        found.append(Copy(paths[:-1], paths[-1], flags.get("from")))
    return found


@functools.cache
def dockerfile(name: str) -> Dockerfile:
    return parse_dockerfile(DOCKERFILES[name])


# ---- .dockerignore, with Docker's matching rules ----------------------------------------------


def _translate(pattern: str) -> str:
    """A .dockerignore pattern as a regex: ``*`` and ``?`` stay within a path segment,
    ``**`` crosses segments (``**/`` also matches nothing), ``[...]`` is a character class."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            if body[0] in "!^":
                body = "^" + body[1:]
            out.append(f"[{body}]")
            i = end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) for each pattern line, in order."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((exception, re.compile(_translate(pattern))))
    return rules


def is_excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides;
    a ``!`` pattern brings a path back."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exception, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not exception
    return excluded


@functools.cache
def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    path = ROOT / ".dockerignore"
    assert path.is_file(), ".dockerignore is missing: the build context would be the whole tree"
    return ignore_rules(path.read_text())


# COPY sources whose files git does not track: the repository's own history (the api image's
# builder resolves a registered version from its tags) and models/, where the model files lie
# (.dockerignore keeps those alone); each may hold nothing a test can list.
FOLDERS_NOT_IN_GIT = (".git", "models")


def _working_tree_files(folder: str) -> list[str]:
    """Files under ``folder`` in a clone: tracked, plus untracked ones git doesn't ignore."""
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", folder],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if (ROOT / line).exists()]


@functools.cache
def dvc_outputs() -> set[str]:
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    outs = set()
    for stage in pipeline["stages"].values():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            outs.add(out if isinstance(out, str) else next(iter(out)))
    return outs


# ---- running the CLIs -------------------------------------------------------------------------


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed here: python -m pip install -e '.[dev]'")
    return path


@functools.cache
def _help(program: str, *subcommands: str) -> str:
    """``program subcommands... --help``; fails the test if that is not a command."""
    result = subprocess.run(
        [str(_tool(program)), *subcommands, "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, f"{program} {' '.join(subcommands)}: {result.stderr}"
    return result.stdout


def check_command(argv: list[str]) -> None:
    """``argv`` (program, subcommands, options) names a real subcommand and real options:
    ``program sub... --help`` succeeds and lists every option used."""
    program, *rest = argv
    assert program in ("dvc", "visiontune"), f"unexpected program in an image: {argv}"
    subcommands = []
    for word in rest:
        if word.startswith("-"):
            break
        subcommands.append(word)
    assert subcommands, f"no subcommand in {argv}"
    listing = _help(program)
    # A command is listed as `name  help` or, with an alias, as `name (alias)`.
    listed = rf"^\s+(?:[\w-]+ \()?{re.escape(subcommands[0])}\b"
    assert re.search(listed, listing, re.M), (
        f"`{program} --help` lists no `{subcommands[0]}` command:\n{listing}"
    )
    usage = _help(program, *subcommands)
    for word in rest:
        if word.startswith("-"):
            option = word.split("=")[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}\b", usage), (
                f"`{program} {' '.join(subcommands)}` has no {option} option:\n{usage}"
            )


def image_command(name: str) -> list[str]:
    """What the final stage runs: ENTRYPOINT + CMD, unwrapped from ``sh -c 'exec ...'``."""
    final = dockerfile(name).final
    argv = [
        arg
        for i in final.all("ENTRYPOINT")[-1:] + final.all("CMD")[-1:]
        for arg in exec_form(i.args)
    ]
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2].removeprefix("exec "))
    return argv


def header_comment(name: str) -> str:
    text = DOCKERFILES[name].read_text()
    return "\n".join(line[1:] for line in text.splitlines() if line.startswith("#"))


def documented_run_commands(name: str) -> list[list[str]]:
    """Per ``docker run`` example of the header, the command after the image name (empty
    where the example runs the image's own command)."""
    commands = []
    for example in re.findall(
        r"^\s*(docker run (?:[^\n]*\\\n)*[^\n]*)$", header_comment(name), re.M
    ):
        words = shlex.split(example.replace("\\\n", " "))
        image = next(i for i, w in enumerate(words) if w.startswith(f"visiontune-{name}"))
        commands.append(words[image + 1 :])
    return commands


# ---- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_hadolint_finds_nothing_at_warning_or_above(name: str, tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")  # not a user's own config, which might ignore rules
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    result = subprocess.run(
        [
            str(_tool("hadolint")),
            "--config",
            str(config),
            "--format",
            "json",
            "--no-color",
            "--failure-threshold",
            "warning",
            str(DOCKERFILES[name]),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    findings = json.loads(result.stdout or "null")
    assert isinstance(findings, list), result.stdout + result.stderr
    serious = [f for f in findings if f["level"] in ("error", "warning")]
    assert serious == [], "\n".join(
        f"{name}.Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in serious
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", NAMES)
def test_every_hadolint_ignore_gives_a_reason(name: str) -> None:
    lines = DOCKERFILES[name].read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[number - 1].strip() if number else ""
            assert before.startswith("#") and "hadolint" not in before, (
                f"{name}.Dockerfile:{number + 1}: say why the rule is ignored in the comment above"
            )


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = ignore_rules("data\n/build\n**/__pycache__\n*.md\nmodels/*\n!models/*.pt\n")
    assert is_excluded("data", rules)
    assert is_excluded("data/raw/arrays.npz", rules)  # a folder's contents go with it
    assert not is_excluded("src/visiontune/data.py", rules)  # patterns start at the root
    assert not is_excluded("src/data/x", rules)
    assert is_excluded("build/lib/x.py", rules)  # a leading / changes nothing
    assert is_excluded("__pycache__/a.pyc", rules)  # **/ also matches no folder
    assert is_excluded("src/visiontune/__pycache__/cli.cpython-311.pyc", rules)
    assert is_excluded("README.md", rules)
    assert not is_excluded("docs/guide.md", rules)  # * stays within one segment
    assert is_excluded("models/notes.txt", rules)
    assert not is_excluded("models/model.pt", rules)  # brought back by the ! pattern
    assert not is_excluded("models", rules)
    assert is_excluded("x.pyc", ignore_rules("*.py[cod]"))
    assert not is_excluded("x.pyc", ignore_rules("*.py[!c]"))


def test_dockerignore_leaves_out_heavy_cached_and_secret_paths() -> None:
    rules = dockerignore()
    left_out = [
        ".venv/bin/python",
        "data/raw/arrays.npz",
        "data/prepared/train-images.npy",
        ".dvc/cache/files/md5/00/abc",
        ".dvc/tmp/exps/run",
        ".dvc/config.local",  # `dvc remote modify --local` credentials
        "__pycache__/x.cpython-311.pyc",
        "src/visiontune/__pycache__/cli.cpython-311.pyc",
        "src/visiontune/__pycache__",
        "src/visiontune.egg-info/PKG-INFO",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        ".optuna/studies.db",
        "plots/train/plots/metrics/val/acc.tsv",
        "metrics/train.json",
        "models/notes.txt",
        "tests/test_docker.py",
    ]
    kept = [
        "pyproject.toml",
        "README.md",  # pyproject.toml's readme: the package does not build without it
        "src/visiontune/cli.py",
        "stages/train.py",
        "dvc.yaml",
        "dvc.lock",
        ".gto",
        ".git/HEAD",  # the api image's builder reads the registry's tags
        ".git/refs/tags/classifier@v1.0.0",
        "params.yaml",
        ".dvc/config",
        ".dvc/plots/heatmap.json",
        "models/model.pt",
        "models/model.onnx",  # `visiontune export` files, servable by the api image
        "models/model.int8.onnx",
    ]
    assert [p for p in left_out if not is_excluded(p, rules)] == []
    assert [p for p in kept if is_excluded(p, rules)] == []


@pytest.mark.parametrize("name", NAMES)
def test_copy_sources_are_in_the_build_context(name: str) -> None:
    rules = dockerignore()
    checked = 0
    for stage in dockerfile(name).stages:
        for copy in copies(stage):
            if copy.from_stage:
                assert copy.from_stage in [s.name for s in dockerfile(name).stages], copy
                continue
            for source in copy.sources:
                assert "$" not in source, f"unexpanded variable in COPY {source}"
                relative = posixpath.normpath(source).lstrip("/")
                path = ROOT / relative
                if relative in FOLDERS_NOT_IN_GIT:  # copied as a whole, filled outside git
                    assert not is_excluded(relative, rules), f"COPY {source}: in .dockerignore"
                elif path.is_dir():
                    files = _working_tree_files(relative)
                    assert files, f"COPY {source}: nothing in it"
                    dropped = [f for f in files if is_excluded(f, rules)]
                    assert not is_excluded(relative, rules), f"COPY {source}: in .dockerignore"
                    assert dropped == [], f"COPY {source}: .dockerignore leaves out {dropped}"
                else:
                    assert path.is_file() or relative in dvc_outputs(), (
                        f"COPY {source}: not in the repository and not a dvc.yaml output"
                    )
                    assert not is_excluded(relative, rules), f"COPY {source}: in .dockerignore"
                checked += 1
    assert checked >= 3


def test_api_image_keeps_the_resolved_model_and_no_data_or_history() -> None:
    image = dockerfile("api")
    final = image.final
    assert [s for c in copies(final) if not c.from_stage for s in c.sources] == []
    from_builder = [(c.sources, c.dest) for c in copies(final) if c.from_stage == "builder"]
    assert from_builder == [(["/opt/venv"], "/opt/venv"), (["/app/models/"], "/app/models/")]
    assert final.env()["VISIONTUNE_MODEL"] == "/app/models/model.pt"
    builder = image.stages[0]
    assert builder.args()["MODEL"] == "classifier@prod"
    resolve = " ".join(i.args for i in builder.all("RUN") if "fetch-model" in i.args)
    assert 'visiontune fetch-model "$MODEL" --repo /repo --out models' in resolve
    assert "models/model.pt" in dvc_outputs()


@pytest.mark.parametrize("name", NAMES)
def test_the_image_command_exists(name: str) -> None:
    check_command(image_command(name))


@pytest.mark.parametrize("name", NAMES)
def test_documented_docker_run_commands_exist(name: str) -> None:
    examples = documented_run_commands(name)
    assert examples, f"{name}: no docker run example in the Dockerfile's header"
    assert len(examples) == header_comment(name).count("docker run"), "an example not parsed"
    for command in examples:
        if command:
            check_command(command)
    if name == "train":  # it documents running dvc and visiontune commands in the image
        assert [command[0] for command in examples if command] == ["dvc", "visiontune"]


@pytest.mark.parametrize("name", NAMES)
def test_final_image_runs_as_a_created_non_root_user(name: str) -> None:
    final = dockerfile(name).final
    users = final.all("USER")
    assert users, f"{name}: no USER in the final stage: the container would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), users[-1]
    created = " ".join(i.args for i in final.all("RUN") if "useradd" in i.args)
    if user.isdigit():
        assert re.search(rf"--uid {user}\b", created), f"no useradd --uid {user} in {name}"
    else:
        assert re.search(rf"\b{user}\b", created), f"no useradd of {user} in {name}"


@pytest.mark.parametrize("name", NAMES)
def test_multi_stage_slim_image_with_cpu_torch(name: str) -> None:
    image = dockerfile(name)
    assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim-[a-z]+", image.final.base), image.final.base
    assert len(image.stages) >= 2 and image.stages[0].name == "builder"
    assert {stage.base for stage in image.stages} == {image.final.base}  # the venv fits

    builder_runs = " ".join(i.args for i in image.stages[0].all("RUN"))
    torch = re.search(rf"--(extra-)?index-url {re.escape(CPU_INDEX)}\b.*\btorch==", builder_runs)
    assert torch, f"{name}: torch is not installed from the CPU wheel index"
    for stage in image.stages:
        for run in stage.all("RUN"):
            if "pip install" in run.args:
                assert run.args.count("pip install") == run.args.count("--no-cache-dir"), run
    assert not any("pip install" in i.args for i in image.final.all("RUN"))
    venv = [c for c in copies(image.final) if c.from_stage == "builder"]
    assert (["/opt/venv"], "/opt/venv") in [(c.sources, c.dest) for c in venv]

    env = image.final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_torch_pins_agree_and_satisfy_pyproject() -> None:
    pins = {name: dockerfile(name).stages[0].args() for name in NAMES}
    assert pins["train"]["TORCH_VERSION"] == pins["api"]["TORCH_VERSION"]
    assert pins["train"]["TORCHVISION_VERSION"] == pins["api"]["TORCHVISION_VERSION"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    wanted = {
        Requirement(r).name: Requirement(r).specifier
        for r in re.findall(r'"((?:torch|torchvision)\b[^"]*)"', pyproject)
    }
    assert Version(pins["train"]["TORCH_VERSION"]) in wanted["torch"]
    assert Version(pins["train"]["TORCHVISION_VERSION"]) in wanted["torchvision"]


def test_train_image_snapshot_can_run_the_whole_pipeline() -> None:
    final = dockerfile("train").final
    assert image_command("train") == ["dvc", "repro"]
    assert final.all("WORKDIR")[-1].args == "/work"
    assert final.env()["PYTHONPATH"] == "/work/src"  # the code that dvc.yaml's deps hash
    runs = " ".join(i.args for i in final.all("RUN"))
    assert "dvc config --local core.no_scm true" in runs  # the snapshot has no .git
    assert re.search(r"apt-get install .*\bgit\b", runs)  # dvc exp, tune and report use git

    copied = [s.rstrip("/") for c in copies(final) if not c.from_stage for s in c.sources]
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    needed = {"dvc.yaml", "params.yaml"}
    for stage in pipeline["stages"].values():
        needed.update(dep for dep in stage.get("deps", []) if dep not in dvc_outputs())
    missing = [
        dep
        for dep in sorted(needed)
        if not any(dep == c or dep.startswith(c + "/") for c in copied)
    ]
    assert missing == [], f"the train image's project copy lacks {missing}"


def test_api_image_exposes_health_checked_port_and_revision() -> None:
    final = dockerfile("api").final
    assert [i.args for i in final.all("EXPOSE")] == ["8000"]
    assert final.args()["GIT_REVISION"] == ""
    assert final.env()["VISIONTUNE_REVISION"] == ""  # /metadata: no revision unless given
    assert re.search(
        r"VISIONTUNE_REVISION=\$\{?GIT_REVISION\}?", " ".join(i.args for i in final.all("ENV"))
    )
    (check,) = final.all("HEALTHCHECK")
    argv = exec_form(check.args[check.args.index("CMD") + 3 :].strip())
    assert argv[0] == "python" and "/health" in argv[-1]  # no curl in the slim image


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    healthy = True

    def do_GET(self) -> None:
        ok = self.path == "/health" and self.healthy
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}' if ok else b"{}")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def health_server() -> Iterator[tuple[http.server.HTTPServer, type[_HealthHandler]]]:
    handler = type("Handler", (_HealthHandler,), {"healthy": True})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_api_healthcheck_passes_only_on_a_healthy_server(health_server) -> None:
    server, handler = health_server
    (check,) = dockerfile("api").final.all("HEALTHCHECK")
    argv = exec_form(check.args[check.args.index("CMD") + 3 :].strip())
    env = {**os.environ, "PORT": str(server.server_address[1]), "no_proxy": "*"}
    command = [sys.executable, *argv[1:]]
    assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0
    handler.healthy = False
    assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode != 0


def test_api_cmd_expands_to_the_serve_command(tmp_path: Path) -> None:
    # Run CMD's shell line with a stand-in `visiontune` that prints its arguments.
    stub = tmp_path / "visiontune"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    final = dockerfile("api").final
    argv = exec_form(final.all("CMD")[-1].args)
    assert argv[:2] == ["sh", "-c"] and argv[2].startswith("exec ")
    env = {**final.env(), "PATH": f"{tmp_path}:/usr/bin:/bin"}
    env.pop("PORT", None)  # a runtime without it still serves on 8000
    expected = ["serve", "--model", "/app/models/model.pt", "--host", "0.0.0.0", "--port", "8000"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.stdout.split("\n")[:-1] == expected, result.stderr
    env["PORT"] = "8080"  # e.g. Cloud Run
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.stdout.split("\n")[:-1] == [*expected[:-1], "8080"], result.stderr
