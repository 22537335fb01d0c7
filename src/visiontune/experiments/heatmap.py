"""Heatmaps of a metric over two params: the sweep stage's grid and ``visiontune heatmap``.

Rows (dicts holding the two params and the metric) are grouped into cells; repeated cells
(the same params run with several seeds, say) are averaged and counted. The grid is written
as an interactive plotly HTML page and printed as a text table. ``visiontune heatmap``
averages equals only (see :mod:`visiontune.experiments.comparable_runs`); the sweep stage's
cells are equals by construction, one row each.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from visiontune.config.errors import VisiontuneError
from visiontune.config.pages import write_plotly_page

if TYPE_CHECKING:
    from visiontune.experiments.listing import Experiment


@dataclass(frozen=True)
class Cell:
    """The mean of a metric over the runs that share one (x, y) pair, and their count."""

    mean: float
    count: int

    def label(self, *, always_count: bool = False) -> str:
        """``0.981``, or ``0.981 (n=2)`` when averaged (or always, if asked)."""
        text = f"{self.mean:.3f}"
        return f"{text} (n={self.count})" if always_count or self.count > 1 else text


@dataclass(frozen=True)
class Grid:
    """A metric over two params; the axes keep the order in which values first appeared.

    ``over`` names the other params whose values differ within cells: a marginal view.
    """

    x: str
    y: str
    metric: str
    xs: list[Any]
    ys: list[Any]
    cells: dict[tuple[Any, Any], Cell]
    over: tuple[str, ...] = ()

    def with_view(self, text: str) -> str:
        """``text``, then ``, marginal over model.width`` if this is a marginal view."""
        return f"{text}, marginal over {', '.join(self.over)}" if self.over else text

    def table(self) -> str:
        """The grid as aligned text: one row per y value, one column per x value."""
        head = [f"{self.y} \\ {self.x}", *map(str, self.xs)]
        body = [[str(vy), *(self._label(vx, vy) for vx in self.xs)] for vy in self.ys]
        widths = [max(map(len, column)) for column in zip(head, *body, strict=True)]
        aligns = ["<", *">" * len(self.xs)]
        lines = [
            "  ".join(f"{text:{a}{w}}" for text, a, w in zip(row, aligns, widths, strict=True))
            for row in [head, *body]
        ]
        return self.with_view(f"{self.metric}: mean (n=runs) per cell") + "\n" + "\n".join(lines)

    def _label(self, vx: Any, vy: Any) -> str:
        cell = self.cells.get((vx, vy))
        return cell.label(always_count=True) if cell else "-"


def aggregate(rows: Iterable[Mapping[str, Any]], *, x: str, y: str, metric: str) -> Grid:
    """Group ``rows`` by their ``x`` and ``y`` values; average ``metric`` and count runs.

    A row whose metric is missing or not finite (a failed run) still puts its values on
    the axes, but leaves its cell empty.
    """
    # Objects, not a numeric dtype: the axes keep the values as typed (0 stays 0, not 0.0).
    frame = pd.DataFrame(list(rows), columns=[x, y, metric], dtype=object)
    values = pd.to_numeric(frame[metric], errors="coerce")
    values = values.where(np.isfinite(values))
    stats = values.groupby([frame[x], frame[y]], sort=False).agg(["mean", "count"])
    cells = {
        key: Cell(float(mean), int(count))
        for key, mean, count in zip(stats.index, stats["mean"], stats["count"], strict=True)
        if count
    }
    return Grid(x, y, metric, frame[x].unique().tolist(), frame[y].unique().tolist(), cells)


def write_heatmap(grid: Grid, out: Path, title: str, subtitle: str = "") -> None:
    """Write ``grid`` as an interactive plotly heatmap, a self-contained HTML page.

    ``subtitle`` lines (``<br>`` between them) show under the title."""
    import plotly.graph_objects as go

    z = [[_mean(grid, vx, vy) for vx in grid.xs] for vy in grid.ys]
    text = [[_text(grid, vx, vy) for vx in grid.xs] for vy in grid.ys]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(v) for v in grid.xs],
            y=[str(v) for v in grid.ys],
            text=text,
            texttemplate="%{text}",
            hoverongaps=False,
            colorscale="Viridis",
            colorbar={"title": {"text": grid.metric}},
            hovertemplate=f"{grid.x}=%{{x}}<br>{grid.y}=%{{y}}<br>{grid.metric} %{{text}}"
            "<extra></extra>",
        )
    )
    figure.update_layout(
        title={"text": title, "subtitle": {"text": subtitle}},
        xaxis={"title": {"text": grid.x}, "type": "category"},
        yaxis={"title": {"text": grid.y}, "type": "category"},
    )
    # A fixed div id keeps the file identical for identical grids (plotly picks a random one).
    write_plotly_page(figure, out, div_id="heatmap")


def _mean(grid: Grid, vx: Any, vy: Any) -> float | None:
    cell = grid.cells.get((vx, vy))
    return cell.mean if cell else None


def _text(grid: Grid, vx: Any, vy: Any) -> str:
    cell = grid.cells.get((vx, vy))
    return cell.label() if cell else ""


def heatmap_from_experiments(
    repo: Path,
    *,
    x: str,
    y: str,
    metric: str,
    out: Path,
    epochs: int | None = None,
    marginal: bool = False,
) -> Grid:
    """Heatmap of ``metric`` over params ``x`` and ``y`` across the repo's dvc experiments.

    Uses the finished experiments that ``dvc exp show`` lists, not the workspace or the
    baseline commit (an experiment with the baseline's params would repeat its run and
    count twice), nor queued, running or failed ones; of those, only equals (see
    :func:`~visiontune.experiments.comparable_runs.select_comparable`, which ``epochs``,
    ``marginal`` and the baseline's data are passed to). Writes the HTML to ``out`` and
    prints the grid, then what was left out.
    """
    from visiontune.experiments.comparable_runs import data_identity, select_comparable
    from visiontune.experiments.listing import list_experiments

    listed = list_experiments(repo)
    runs = _finished_runs(listed)
    _check_names(runs, x=x, y=y, metric=metric)
    usable = [e for e in runs if x in e.params and y in e.params and metric in e.metrics]
    if not usable:
        raise VisiontuneError(f"no experiment has all of {x}, {y} and {metric}")
    baseline = next((data_identity(e) for e in listed if e.kind == "baseline"), "")
    chosen = select_comparable(
        usable, x=x, y=y, epochs=epochs, marginal=marginal, reference=baseline
    )
    rows = [{x: e.params[x], y: e.params[y], metric: e.metrics[metric]} for e in chosen.runs]
    rows.sort(key=lambda row: (_order(row[x]), _order(row[y])))
    grid = replace(aggregate(rows, x=x, y=y, metric=metric), over=chosen.over)
    what = grid.with_view(f"{metric} by {x} and {y}")
    title = f"{what} ({len(rows)} experiments, {chosen.epochs} epochs each)"
    notes = chosen.notes()
    write_heatmap(grid, out, title, "<br>".join(notes))
    print(grid.table())
    for line in notes:
        print(line)
    print(f"wrote {out}")
    return grid


def _finished_runs(listed: list[Experiment]) -> list[Experiment]:
    """The experiments among ``listed`` that finished (not the baseline); raises if there
    are none."""
    experiments = [e for e in listed if not e.baseline]
    if not experiments:
        raise VisiontuneError(
            "no dvc experiments found; run some with `dvc exp run --queue -S ...` "
            "and `dvc queue start`"
        )
    runs = [e for e in experiments if e.state == "success"]
    if not runs:
        raise VisiontuneError(
            f"none of the {len(experiments)} dvc experiments has finished; see `dvc queue status`"
        )
    return runs


def _check_names(runs: list[Experiment], *, x: str, y: str, metric: str) -> None:
    """Raise, with a hint, if ``metric`` or the ``x``/``y`` param is in no run."""
    metrics = sorted({name for e in runs for name in e.metrics})
    if metric not in metrics:
        raise VisiontuneError(
            f"unknown metric {metric!r}; the experiments have {', '.join(metrics)}"
        )
    params = {name for e in runs for name, value in e.params.items() if not isinstance(value, list)}
    for axis, key in (("--x", x), ("--y", y)):
        if key not in params:
            close = difflib.get_close_matches(key, params, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise VisiontuneError(f"{axis} {key} is not a param of any experiment{hint}")


def _order(value: Any) -> tuple[bool, Any]:
    """Sort key for param values: numbers by value first, then anything else as text."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (not number, value if number else str(value))
