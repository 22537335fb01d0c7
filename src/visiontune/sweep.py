"""The sweep stage: train every cell of a two-param grid the same way, keep the table.

Every cell trains in this process for ``sweep.epochs`` epochs with no early stopping and
the same seed, so cells differ only in the two swept params. A cell whose training
diverges is recorded as failed (null metrics), not a crash.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from visiontune.heatmap import aggregate, write_heatmap
from visiontune.params import OBJECTIVES, Params, with_overrides
from visiontune.training import TrainingDiverged, fit

# Metrics kept per cell. grid.json rows hold the cell's params as "x" and "y", sweep.metric
# as "value" (the heatmap colour) and these with "_" for "." (vega-lite reads "." as a path).
METRICS = ("val.acc", "val.loss", "train.acc", "train.loss")


def run_sweep(params: Params, prepared_dir: Path, out_dir: Path, metrics_path: Path) -> dict:
    """Train the grid; write ``grid.json`` and ``heatmap.html`` to ``out_dir``, the summary
    (best cell, cells, failed) to ``metrics_path``, and return that summary."""
    sweep = params.sweep
    cells = list(itertools.product(sweep.x_values, sweep.y_values))
    rows = []
    for number, (vx, vy) in enumerate(tqdm(cells, desc="sweep", unit="cell", disable=None), 1):
        overrides = {sweep.x: vx, sweep.y: vy, "train.epochs": sweep.epochs, "train.patience": 0}
        metrics, outcome = _train_cell(with_overrides(params, overrides), prepared_dir)
        row = {"x": vx, "y": vy, "value": metrics[sweep.metric], **_columns(metrics)}
        rows.append(row)
        tqdm.write(f"cell {number}/{len(cells)} {sweep.x}={vx} {sweep.y}={vy}: {outcome}")

    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ",\n".join(f"  {json.dumps(row)}" for row in rows)
    (out_dir / "grid.json").write_text(f"[\n{lines}\n]\n")
    grid = aggregate(
        ({sweep.x: r["x"], sweep.y: r["y"], sweep.metric: r["value"]} for r in rows),
        x=sweep.x,
        y=sweep.y,
        metric=sweep.metric,
    )
    title = f"sweep: {sweep.metric} by {sweep.x} and {sweep.y} (sweep.epochs={sweep.epochs})"
    write_heatmap(grid, out_dir / "heatmap.html", title)

    summary = {"sweep": _summary(params, rows)}
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _train_cell(params: Params, prepared_dir: Path) -> tuple[dict[str, float | None], str]:
    """The cell's last-epoch metrics (None each if training diverged) and a progress note."""
    try:
        # Silence fit's per-epoch lines and batch bars: progress is one line (and bar) per cell.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            summary = fit(params, prepared_dir).summary()
    except TrainingDiverged as exc:
        return dict.fromkeys(METRICS), f"failed, {exc}"
    metrics: dict[str, float | None] = {}
    for name in METRICS:
        group, _, key = name.partition(".")
        metrics[name] = summary[group][key]
    metric = params.sweep.metric
    return metrics, f"{metric} {metrics[metric]:.4f}"


def _columns(metrics: dict[str, float | None]) -> dict[str, float | None]:
    return {name.replace(".", "_"): value for name, value in metrics.items()}


def _summary(params: Params, rows: list[dict[str, Any]]) -> dict[str, Any]:
    sweep = params.sweep
    done = [row for row in rows if row["value"] is not None]
    pick = max if OBJECTIVES[sweep.metric] == "maximize" else min
    best = None
    if done:
        top = pick(done, key=lambda row: row["value"])
        best = {sweep.x: top["x"], sweep.y: top["y"], sweep.metric: top["value"]}
    return {
        "best": best,
        "cells": len(rows),
        "failed": len(rows) - len(done),
    }
