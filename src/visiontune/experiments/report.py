"""``visiontune report``: a markdown table of all runs plus PNG plots, offline.

One row per run (the workspace, the baseline commit, every dvc experiment), with only
the params that differ between the rows shown (not the tuner's own plumbing), sorted by
``tune.metric`` (val.acc unless params.yaml says val.loss; best first; pruned runs after
the finished ones; failed and metric-less runs last). Only runs on one data are ranked:
the workspace's (:func:`by_data`); runs trained on other data follow in tables of their
own, one per data, never ranked against them. Plots (matplotlib, no browser):
val/loss and val/acc per epoch of the ranked runs shown (the best few highlighted, the rest
faded), the sweep stage's heatmap, the robustness stage's accuracy against severity, and
the Optuna study's history, parallel coordinates
and param importances when there is one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.params import OBJECTIVES
from visiontune.config.paths import (
    DEFAULT_STORAGE,
    ROBUSTNESS_CURVES,
    SWEEP_GRID,
    TRAIN_SERIES,
    engine_url,
)
from visiontune.config.tune_settings import load_settings
from visiontune.experiments.comparable_runs import FROM_PARAMS, NEUTRAL_PARAMS, data_label
from visiontune.experiments.dvc_git import files_at
from visiontune.experiments.frame import experiments_frame, section

DEFAULT_METRIC = "val.acc"  # what runs are ranked by unless tune.metric says otherwise
METRICS = {
    "val acc": ("val.acc", ".4f"),
    "test acc": ("test.acc", ".4f"),
    "epochs": ("epochs", "g"),
}
HIGHLIGHTED = 5  # the best runs drawn in colour and named in a curve plot's legend
OPTUNA_PLOTS = (  # title, optuna.visualization.matplotlib function, PNG, complete trials needed
    ("parallel coordinates", "plot_parallel_coordinate", "tune_parallel.png", 1),
    ("param importances", "plot_param_importances", "tune_importance.png", 2),
)


@dataclass(frozen=True)
class Table:
    """The rows shown (best first; a frame as :mod:`~visiontune.experiments.frame` makes),
    the params that differ among them, and how many more runs there are. Rows of a table
    that is not ``ranked`` (runs on other data) are in the same order, but none is best."""

    rows: pd.DataFrame
    params: list[str]
    more: int
    metric: str = DEFAULT_METRIC
    ranked: bool = True

    @property
    def best(self) -> str | None:
        """The top row's name if the table is ranked and it has a value of the metric of its
        own."""
        values = objective(self.rows, self.metric)
        top = self.ranked and len(values) and pd.notna(values.iloc[0])
        return str(self.rows.index[0]) if top else None


@dataclass(frozen=True)
class DataGroups:
    """The runs ranked together, on one data, and apart from them each other data's runs
    under what tells that data apart (``data.source=/photos/cats``)."""

    ranked: pd.DataFrame
    apart: list[tuple[str, pd.DataFrame]]

    def note(self) -> str | None:
        """``2 runs trained on other data are listed apart, not ranked: ...``, or None."""
        if not self.apart:
            return None
        count = sum(len(rows) for _, rows in self.apart)
        runs = (
            f"{count} runs trained on other data are"
            if count > 1
            else "1 run trained on other data is"
        )
        sizes = len(self.apart) > 1
        what = "; ".join(
            f"`{label}`" + (f" ({len(rows)})" if sizes else "") for label, rows in self.apart
        )
        return f"{runs} listed apart, not ranked: {what}."


def by_data(frame: pd.DataFrame) -> DataGroups:
    """``frame``'s runs by the data they trained on (``run.data``): those on
    :func:`reference_data` to rank, with the runs that have no data of their own (queued,
    running, failed: never ranked), and apart those of each other data, in the order listed."""
    data = frame.run.data
    reference = reference_data(frame)
    together = (data == reference) | (data == "")
    first = _params(frame, data.eq(reference).to_numpy().argmax())
    apart = []
    for identity in data[~together].unique():
        mine = data.eq(identity).to_numpy()
        label = data_label(_params(frame, mine.argmax()), identity, first)
        apart.append((label, frame[mine]))
    return DataGroups(frame[together.to_numpy()], apart)


def reference_data(frame: pd.DataFrame) -> str:
    """The data runs are ranked on: the workspace's, else the baseline commit's (where DVC
    recorded one), else the data most runs trained on (the first listed on a tie); "" if no
    run has data of its own."""
    data = frame.run.data
    recorded = (data != "") & ~data.str.startswith(FROM_PARAMS)
    for kind in ("workspace", "baseline"):
        own = data[(frame.run.kind == kind) & recorded]
        if len(own):
            return str(own.iloc[0])
    counts = Counter(identity for identity in data if identity)
    return max(counts, key=counts.__getitem__, default="")


def _params(frame: pd.DataFrame, position: int) -> dict[str, Any]:
    """The params of the run at ``position`` in ``frame``, those it has."""
    return section(frame, "params").iloc[position].dropna().to_dict()


def measured(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's own finite ``metric``, NaN where it has none (queued, running, failed)."""
    metrics = section(frame, "metrics")
    if metric not in metrics:
        return pd.Series(math.nan, index=frame.index)
    values = metrics[metric]
    return values.where(np.isfinite(values))


def objective(frame: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.Series:
    """:func:`measured`, but NaN for a pruned run: it stopped early, so it does not compete."""
    return measured(frame, metric).mask(frame.run.pruned)


def ranked(frame: pd.DataFrame, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Best ``metric`` first (highest, or lowest for a loss), then pruned runs by the same
    order; runs without the metric last, in their original order."""
    values = measured(frame, metric)
    sign = -1 if OBJECTIVES[metric] == "maximize" else 1
    group = np.where(values.isna(), 2, frame.run.pruned.astype(int))
    return frame.iloc[np.lexsort((sign * values.fillna(0).to_numpy(), group))]


def differing_params(frame: pd.DataFrame) -> list[str]:
    """Param keys whose values (or presence) differ between the runs, in column order;
    params that cannot change a result (``NEUTRAL_PARAMS``: threads, device, ...) are left out."""
    params = section(frame, "params").drop(columns=list(NEUTRAL_PARAMS), errors="ignore")
    return [key for key in params if params[key].map(repr).nunique() > 1]


def build_table(
    frame: pd.DataFrame, top: int, metric: str = DEFAULT_METRIC, *, rank: bool = True
) -> Table:
    """The ``top`` best runs by ``metric`` and the params that differ among them; with
    ``rank`` false, in the same order but with none marked best."""
    shown = ranked(frame, metric).iloc[:top]
    return Table(shown, differing_params(shown), len(frame) - len(shown), metric, rank)


def markdown_table(table: Table) -> str:
    """The table as GitHub markdown; the best run's name is bold and starred."""
    head = ["experiment", *table.params, *METRICS, "state"]
    lines = [_row(head), _row(["---"] * len(head))]
    for position, (name, run) in enumerate(table.rows.iterrows()):
        label = f"**{name}** ★ best" if position == 0 and table.best else str(name)
        params = [_cell(run["params", key]) for key in table.params]
        metrics = [_cell(_cell_value(run, key), spec) for key, spec in METRICS.values()]
        lines.append(_row([label, *params, *metrics, state(run)]))
    if table.more:
        lines.append(f"\n… and {table.more} more experiments")
    return "\n".join(lines)


def state(run: pd.Series) -> str:
    """The state shown: dvc's, or ``pruned`` for a successful run the tuner stopped early."""
    return "pruned" if run["run", "pruned"] else run["run", "state"]


def _cell_value(run: pd.Series, key: str) -> float | None:
    """A table cell's number; a pruned run without ``epochs`` shows the epoch it stopped at."""
    metrics = run.get("metrics", pd.Series(dtype=float))
    if key == "epochs" and pd.isna(metrics.get(key)):
        return metrics.get("pruned.epoch")
    return metrics.get(key)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(value: Any, number: str = "g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:{number}}"
    return str(value).replace("|", "\\|")


def write_report(
    repo: Path,
    out: Path,
    top: int = 20,
    storage: str | None = None,
    study: str | None = None,
) -> Path:
    """Write the markdown report to ``out`` and its PNGs to ``<out stem>_plots/``."""
    if not (repo / ".dvc").is_dir():
        raise VisiontuneError(f"{repo} is not a dvc repository (no .dvc folder)")
    if top < 1:
        raise VisiontuneError(f"--top must be >= 1, got {top}")
    with ThreadPoolExecutor(1) as pool:  # matplotlib loads while dvc lists the experiments
        listing = pool.submit(experiments_frame, repo)
        import matplotlib.figure  # noqa: F401

        frame = listing.result()
    workspace = section(frame, "params").iloc[0].dropna().to_dict()  # the first row
    metric = load_settings(repo).metric
    groups = by_data(frame)
    table = build_table(groups.ranked, top, metric)
    plots = out.parent / f"{out.stem}_plots"
    plots.mkdir(parents=True, exist_ok=True)
    figures = [
        *_curves(repo, table, plots),
        _sweep_heatmap(repo, workspace, plots),
        _robustness(repo, plots),
        *study_figures(repo, plots, storage, study),
    ]
    sections = [_summary(frame, table)]
    if note := groups.note():
        sections.append(note)
    sections += [markdown_table(table), *other_data_tables(groups, top, metric)]
    sections += [f"![{title}]({plots.name}/{path.name})" for title, path in figures if path]
    out.write_text("# Experiment report\n\n" + "\n\n".join(sections) + "\n")
    return out


def other_data_tables(groups: DataGroups, top: int, metric: str) -> list[str]:
    """A markdown table, headed by what tells its data apart, for each data apart from the
    ranked runs': its runs in the same order as the ranked ones, none marked best."""
    return [
        f"## Trained on other data: `{label}`\n\n"
        + markdown_table(build_table(rows, top, metric, rank=False))
        for label, rows in groups.apart
    ]


def _summary(frame: pd.DataFrame, table: Table) -> str:
    count = int((frame.run.kind == "experiment").sum())
    if not count:
        return (
            "No dvc experiments yet: the table shows the workspace and the baseline commit. "
            "Run some with `dvc exp run -S model.lr=0.02` or `visiontune tune`."
        )
    best = f"best: **{table.best}**" if table.best else f"no run has a {table.metric} yet"
    return f"{count} experiments, the workspace and the baseline; sorted by {table.metric}, {best}."


def read_series(repo: Path, revs: Sequence[str], name: str) -> list[tuple[list[int], list[float]]]:
    """A DVCLive series (``val/acc``) at each of ``revs``: a commit, or ``workspace`` for
    the working tree; the commits' files in one git call. Empty where there is none."""
    path = TRAIN_SERIES.format(name)
    texts = iter(files_at(repo, [f"{rev}:{path}" for rev in revs if rev != "workspace"]))
    column = name.rpartition("/")[2]
    series = []
    for rev in revs:
        if rev == "workspace":
            text = (repo / path).read_text() if (repo / path).is_file() else ""
        else:
            text = next(texts) or ""
        rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
        series.append(([int(row["step"]) for row in rows], [float(row[column]) for row in rows]))
    return series


def _curves(repo: Path, table: Table, plots: Path) -> list[tuple[str, Path]]:
    """``val_loss.png`` and ``val_acc.png``: one line per successful run shown with the
    series, the ``HIGHLIGHTED`` best by the table's metric in colour."""
    best = list(objective(table.rows, table.metric).dropna().index[:HIGHLIGHTED])
    finished = table.rows[table.rows.run.state == "success"]
    figures = []
    for name in ("val/loss", "val/acc"):
        series = read_series(repo, list(finished.run.rev), name)
        lines = {label: xy for label, xy in zip(finished.index, series, strict=True) if xy[0]}
        if lines:
            path = plots / f"{name.replace('/', '_')}.png"
            line_figure(lines, best, name, table.metric).savefig(path)
            figures.append((name, path))
    return figures


def _figure(title: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # Agg canvas by default: no display, no pyplot

    figure = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.xaxis.get_major_locator().set_params(integer=True)  # epochs, trial numbers
    return figure, axes


def line_figure(
    lines: dict[str, tuple[list[int], list[float]]], best: Sequence[str], series: str, metric: str
) -> Any:
    """``series`` per epoch, one line per run: the ``best`` runs (by ``metric``) in colour
    and named in a legend beside the axes, the others thin and light, counted in one entry."""
    figure, axes = _figure(f"{series} per epoch")
    faded = [label for label in lines if label not in best]
    for label, (steps, values) in lines.items():
        if label in best:
            axes.plot(steps, values, marker="o", markersize=4, label=label, zorder=3)
        else:
            name = f"{len(faded)} other runs" if label == faded[0] else "_faded"
            axes.plot(steps, values, color="0.7", linewidth=0.8, alpha=0.6, label=name, zorder=2)
    axes.set_xlabel("epoch")
    axes.set_ylabel(series)
    axes.grid(alpha=0.3)
    title = f"best by {metric}" if any(label in best for label in lines) else None
    axes.legend(
        title=title,
        fontsize="small",
        title_fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.02, 1),
        borderaxespad=0,
    )
    return figure


def _sweep_heatmap(repo: Path, params: dict[str, Any], plots: Path) -> tuple[str, Path | None]:
    """``sweep_heatmap.png`` from the sweep stage's grid.json, if the workspace has one.

    Its cells are equals already (one row each, all trained ``sweep.epochs`` epochs with no
    early stopping and the same other params), so nothing is left out.
    """
    from visiontune.experiments.heatmap import aggregate

    title = "sweep heatmap"
    if not (repo / SWEEP_GRID).is_file():
        return title, None
    grid = aggregate(json.loads((repo / SWEEP_GRID).read_text()), x="x", y="y", metric="value")
    figure, axes = _figure(f"sweep {params.get('sweep.metric', 'value')}")
    values = [[_mean(grid.cells.get((x, y))) for x in grid.xs] for y in grid.ys]
    image = axes.imshow(values, cmap="viridis", aspect="auto", origin="lower")
    for row, y in enumerate(grid.ys):
        for column, x in enumerate(grid.xs):
            if cell := grid.cells.get((x, y)):
                axes.text(column, row, cell.label(), ha="center", va="center", color="w")
    axes.set_xticks(range(len(grid.xs)), [str(x) for x in grid.xs])
    axes.set_yticks(range(len(grid.ys)), [str(y) for y in grid.ys])
    axes.set_xlabel(params.get("sweep.x", "x"))
    axes.set_ylabel(params.get("sweep.y", "y"))
    figure.colorbar(image, ax=axes)
    figure.savefig(plots / "sweep_heatmap.png")
    return title, plots / "sweep_heatmap.png"


def _robustness(repo: Path, plots: Path) -> tuple[str, Path | None]:
    """``robustness.png`` from the robustness stage's curves.json, if the workspace has one."""
    title = "robustness"
    if not (repo / ROBUSTNESS_CURVES).is_file():
        return title, None
    robustness_figure(json.loads((repo / ROBUSTNESS_CURVES).read_text())).savefig(
        plots / "robustness.png"
    )
    return title, plots / "robustness.png"


def robustness_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Test accuracy against severity (0 = clean), one line per corruption."""
    figure, axes = _figure("test accuracy under corruption")
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        severities, accs = curves.setdefault(row["corruption"], ([], []))
        severities.append(row["severity"])
        accs.append(row["acc"])
    for name, (severities, accs) in curves.items():
        axes.plot(severities, accs, marker="o", markersize=4, label=name)
    axes.set_xlabel("severity (0 = clean)")
    axes.set_ylabel("test acc")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return figure


def _mean(cell: Any) -> float:
    return cell.mean if cell else math.nan


def study_figures(
    repo: Path, plots: Path, storage: str | None, study: str | None
) -> list[tuple[str, Path | None]]:
    """The Optuna study's ``tune_history.png`` and, once trials have params,
    ``tune_parallel.png`` and ``tune_importance.png`` (which needs two), if the study
    exists and has complete trials.

    An explicit ``storage`` or ``study`` must load; the default one is skipped when absent.
    """
    required = storage is not None or study is not None
    if not required and not (repo / DEFAULT_STORAGE.removeprefix("sqlite:///")).is_file():
        return []
    name = study or load_settings(repo).study
    loaded = _load_study(storage or DEFAULT_STORAGE, name, required=required)
    trials = _complete_trials(loaded) if loaded else []
    if not trials:
        return []
    target = loaded.user_attrs.get("metric", "value")
    figures = [("tuning history", _tune_history(loaded, trials, name, target, plots))]
    if any(trial.params for trial in trials):
        import matplotlib

        matplotlib.use("Agg")  # Optuna draws with pyplot: never a window
        from optuna.visualization import matplotlib as optuna_plots

        figures += [
            (title, optuna_plot(getattr(optuna_plots, function), loaded, target, plots / png))
            for title, function, png, needs in OPTUNA_PLOTS
            if len(trials) >= needs
        ]
    return figures


def _tune_history(study: Any, trials: list[Any], name: str, target: str, plots: Path) -> Path:
    """``tune_history.png``: each complete trial's value and the best so far."""
    direction = study.direction.name.lower()
    best = max if direction == "maximize" else min
    numbers = [trial.number for trial in trials]
    values = [trial.value for trial in trials]
    running = [best(values[: i + 1]) for i in range(len(values))]
    figure, axes = _figure(f"{name}: optimisation history ({direction})")
    axes.plot(numbers, values, "o", label="trial")
    axes.step(numbers, running, where="post", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(target)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(plots / "tune_history.png")
    return plots / "tune_history.png"


def optuna_plot(plot: Callable[..., Any], study: Any, target: str, path: Path) -> Path | None:
    """One of Optuna's matplotlib plots of the study, saved at ``path`` at the size of the
    other PNGs; None when Optuna cannot compute it (importances of a single distinct value)."""
    from matplotlib import pyplot
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        # The plots are experimental, and warn about flat axes and few trials.
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            figure = plot(study, target_name=target).figure
        except (RuntimeError, ValueError, ZeroDivisionError):
            return None
        figure.set_size_inches(7, 4.5)
        figure.tight_layout()  # room for Optuna's long and rotated param names
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def _load_study(url: str, name: str, *, required: bool) -> Any:
    """The Optuna study, or None if it does not exist and is not required."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=engine_url(url))
    except KeyError:
        if required:
            raise VisiontuneError(f"no Optuna study {name!r} in {url}") from None
        return None
    except Exception as exc:  # a bad URL or an unreachable database: one line
        raise VisiontuneError(f"cannot open Optuna storage {url}: {reason(exc)}") from None


def _complete_trials(study: Any) -> list[Any]:
    """The study's complete trials (Optuna's ``FrozenTrial``), in trial order."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
