"""Every HTML page the project makes draws with no network: `dvc plots show` and
`dvc plots diff` (through the committed template .dvc/plots/page.html, which inlines the
vega bundles dvc_render would load from a CDN) and visiontune's plotly pages (tune history
and importances, heatmap, LR range test), opened in headless Chromium with every request
but file:, data: and blob: refused."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import optuna
import pytest
import yaml
from helpers.browser import ARGS, NOT_FOUND, Visit, chromium_binary, visit_offline
from helpers.dvc_repo import ROOT, DvcRepo

from visiontune.config.params import parse_params
from visiontune.config.paths import TUNE_PLOTS
from visiontune.experiments.heatmap import aggregate, write_heatmap
from visiontune.training.finders import lr_find
from visiontune.tuning.summary import write_summary

TEMPLATE = ROOT / ".dvc" / "plots" / "page.html"
# DVC's plot pages: one div per plot straight under <body>, vega-embed draws into it.
DVC_PLOT, VEGA_MARKS = "body > div[id]", "canvas.marks, svg.marks"
PLOTLY_PLOT, PLOTLY_MARKS = ".plotly-graph-div", ".main-svg"


def test_the_template_inlines_the_bundles_dvc_render_links() -> None:
    """The bundles named in the template's comment are the versions the installed
    dvc_render links from the CDN, and each inlined script has the digest listed."""
    from dvc_render.vega import VegaRenderer

    linked = re.findall(r"cdn\.jsdelivr\.net/npm/([\w-]+)@([\w.-]+)", VegaRenderer.SCRIPTS)
    text = TEMPLATE.read_bytes().decode("utf8")  # no newline translation: digests are exact
    listed = re.findall(r"^ +([\w-]+)@(\S+) build/\1\.min\.js sha256 ([0-9a-f]{64})$", text, re.M)
    scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
    assert len(linked) == 3, VegaRenderer.SCRIPTS
    assert [(name, version) for name, version, _ in listed] == linked, (
        "dvc_render links other vega bundles than .dvc/plots/page.html inlines: regenerate "
        "the template (docs/reports-and-ci.md, Viewing results offline)"
    )
    digests = [hashlib.sha256(script.encode("utf8")).hexdigest() for script in scripts]
    assert digests == [digest for *_, digest in listed]
    assert text.count("{plot_divs}") == 1 and text.count("{refresh_tag}") == 1
    assert "{scripts}" not in text  # dvc_render's CDN <script src> tags would go there
    assert "<script src" not in text


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the module's pages; skips without a Chromium binary."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip(NOT_FOUND)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=binary, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> DvcRepo:
    """The repository's tracked files (the plots files among them), committed in a new repo."""
    return DvcRepo.copy_of_project(tmp_path_factory.mktemp("pages") / "repo", overrides={})


def dvc_yaml_plots(repo: DvcRepo) -> int:
    """How many plots dvc.yaml defines: top-level ones and the stages' plot outputs."""
    spec = yaml.safe_load((repo.path / "dvc.yaml").read_text())
    stages = spec["stages"].values()
    return len(spec.get("plots", [])) + sum(len(s.get("plots", [])) for s in stages)


def assert_drawn_offline(visit: Visit, expected: int) -> None:
    assert visit.refused == [] and visit.failed == [], (visit.refused, visit.failed)
    assert visit.errors == []
    assert expected > 0
    assert (visit.containers, visit.drawn) == (expected, expected)


def test_dvc_plots_show_draws_every_plot_offline(browser, project, tmp_path) -> None:
    out = tmp_path / "show"
    project.dvc("plots", "show", "-o", str(out))
    page = out / "index.html"
    assert "<script src" not in page.read_text()
    expected = dvc_yaml_plots(project)
    assert_drawn_offline(visit_offline(browser, page, DVC_PLOT, VEGA_MARKS, expected), expected)


def test_dvc_plots_diff_draws_every_plot_offline(browser, project, tmp_path) -> None:
    series = project.path / "plots/train/plots/metrics/val/loss.tsv"
    header, *rows = series.read_text().splitlines()
    assert header.split("\t")[:2] == ["step", "loss"], header
    step, loss, *rest = rows[-1].split("\t")
    rows[-1] = "\t".join([step, f"{float(loss) * 1.25:.6f}", *rest])
    series.write_text("\n".join([header, *rows]) + "\n")
    project.commit("val/loss: a higher last epoch")
    out = tmp_path / "diff"
    project.dvc("plots", "diff", "HEAD~1", "HEAD", "-o", str(out))
    page = out / "index.html"
    html = page.read_text()
    assert "<script src" not in html and "HEAD~1" in html
    expected = dvc_yaml_plots(project)
    assert_drawn_offline(visit_offline(browser, page, DVC_PLOT, VEGA_MARKS, expected), expected)


def test_the_tune_pages_draw_offline(browser, tmp_path) -> None:
    study = optuna.create_study(  # in memory: a SQLite storage adds a second of set-up
        study_name="pages", direction="maximize", sampler=optuna.samplers.TPESampler(seed=0)
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("model.lr", 1e-3, 1e-1, log=True)
        dropout = trial.suggest_float("model.dropout", 0.0, 0.5)
        return 1.0 - abs(lr - 0.01) - 0.1 * dropout

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=5)
    assert write_summary(study, "val.acc", tmp_path, applicable=False)
    for name in ("history.html", "importances.html"):
        page = tmp_path / TUNE_PLOTS / name
        assert_drawn_offline(visit_offline(browser, page, PLOTLY_PLOT, PLOTLY_MARKS, 1), 1)


def test_the_heatmap_page_draws_offline(browser, tmp_path) -> None:
    rows = [
        {"lr": lr, "width": width, "acc": 0.5 + lr + width / 100}
        for lr in (0.1, 0.01)
        for width in (8, 16)
    ]
    page = tmp_path / "plots" / "heatmap.html"
    write_heatmap(aggregate(rows, x="lr", y="width", metric="acc"), page, "acc by lr")
    assert_drawn_offline(visit_offline(browser, page, PLOTLY_PLOT, PLOTLY_MARKS, 1), 1)


def test_the_lr_finder_page_draws_offline(browser, prepared, tmp_path) -> None:
    params = parse_params(
        {"model": {"width": 8, "blocks": 2}, "train": {"threads": 1, "device": "cpu"}}
    )
    page = tmp_path / "plots" / "lr_find.html"
    lr_find(params, prepared, out=page, min_lr=1e-4, max_lr=1.0, steps=30)
    assert_drawn_offline(visit_offline(browser, page, PLOTLY_PLOT, PLOTLY_MARKS, 1), 1)


def test_the_pages_are_kept_out_of_git(project) -> None:
    """A page inlines its scripts (1 to 5 MB): `git add -A` must not commit one."""
    pages = ["dvc_plots/index.html", "plots/heatmap.html", "plots/lr_find.html"]
    pages += [(TUNE_PLOTS / name).as_posix() for name in ("history.html", "importances.html")]
    ignored = project.git("check-ignore", *pages).stdout.split()
    assert ignored == pages
