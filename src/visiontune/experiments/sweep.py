"""The sweep stage: train every cell of a two-param grid the same way, keep the table.

Every cell trains in this process for ``sweep.epochs`` epochs with no early stopping and
the same seed, so cells differ only in the two swept params. A cell whose training
diverges is recorded as failed (null metrics), not a crash. With a :class:`CellStore`, a
cell whose result is stored (same effective params, data, code and device) is not
trained again: changing ``model.lr`` when the sweep's x axis is ``model.lr`` re-trains
nothing, changing ``model.dropout`` re-trains every cell.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from visiontune.config.params import OBJECTIVES, Params, with_overrides
from visiontune.experiments.sweep_cache import CellStore

# Metrics kept per cell. grid.json rows hold the cell's params as "x" and "y", sweep.metric
# as "value" (the heatmap colour), these with "_" for "." (vega-lite reads "." as a path),
# and "best" (true on the best cell only).
METRICS = ("val.acc", "val.loss", "train.acc", "train.loss")


def run_sweep(
    params: Params, prepared_dir: Path, out_dir: Path, store: CellStore | None = None
) -> dict[str, Any]:
    """Train the grid (reusing cells found in ``store``); write ``grid.json`` to ``out_dir``
    (`dvc plots show` draws it as a heatmap); return the summary (best cell, cells, failed,
    reused)."""
    sweep = params.sweep
    cells = list(itertools.product(sweep.x_values, sweep.y_values))
    rows = []
    reused = 0
    for number, (vx, vy) in enumerate(tqdm(cells, desc="sweep", unit="cell", disable=None), 1):
        overrides = {sweep.x: vx, sweep.y: vy, "train.epochs": sweep.epochs, "train.patience": 0}
        cell = with_overrides(params, overrides)
        key = store.key(cell) if store else None
        stored = store.get(key) if key else None
        if stored is None:
            metrics, outcome = _train_cell(cell, prepared_dir)
            if key:
                store.put(key, {"metrics": metrics, "outcome": outcome})
        else:
            metrics, outcome = stored["metrics"], f"{stored['outcome']} (stored)"
            reused += 1
        row = {"x": vx, "y": vy, "value": metrics[sweep.metric], **_columns(metrics)}
        rows.append(row)
        tqdm.write(f"cell {number}/{len(cells)} {sweep.x}={vx} {sweep.y}={vy}: {outcome}")

    best = _best(params, rows)
    for row in rows:
        row["best"] = row is best
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ",\n".join(f"  {json.dumps(row)}" for row in rows)
    (out_dir / "grid.json").write_text(f"[\n{lines}\n]\n")
    return {
        "best": best and {sweep.x: best["x"], sweep.y: best["y"], sweep.metric: best["value"]},
        "cells": len(rows),
        "failed": sum(row["value"] is None for row in rows),
        "reused": reused,
    }


def _train_cell(params: Params, prepared_dir: Path) -> tuple[dict[str, float | None], str]:
    """The cell's last-epoch metrics (None each if training diverged) and a progress note."""
    from visiontune.training.fit import TrainingDiverged, fit  # torch: only when a cell trains

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
    return {name.replace(".", "_"): metrics[name] for name in METRICS}


def _best(params: Params, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the best ``sweep.metric`` among cells that did not fail."""
    done = [row for row in rows if row["value"] is not None]
    pick = max if OBJECTIVES[params.sweep.metric] == "maximize" else min
    return pick(done, key=lambda row: row["value"]) if done else None
