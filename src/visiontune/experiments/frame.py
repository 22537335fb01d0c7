"""The repository's experiments as one pandas DataFrame: a row per run, params and metrics
apart.

    >>> frame = experiments_frame(".")
    >>> frame.metrics["val.acc"].nlargest(3)  # the three best runs

Columns are two-level: ``run`` (``rev``, ``kind``: workspace, baseline, branch or
experiment; ``base``, the baseline it was run from; ``state``: success, queued, running or
failed; ``pruned``; ``data``, the prepared data it trained on, see
:func:`~visiontune.experiments.comparable_runs.data_identity`), ``params`` (params.yaml,
dotted keys as typed with ``-S``) and ``metrics`` (every metrics file, dotted: ``val.acc``,
``test.acc``). The index is the run's name. Only a successful run has metrics and data: a
queued, running or failed one has none of its own (``dvc exp show`` repeats its
baseline's), so its row is empty there.

Never imported by a stage: pandas is for reading results, not for producing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from visiontune.experiments.comparable_runs import data_identity
from visiontune.experiments.listing import Experiment, is_pruned, list_experiments


def experiments_frame(
    repo: Path | str = ".", *, workspace: bool = True, all_branches: bool = False
) -> pd.DataFrame:
    """The experiments of the dvc repository at ``repo``: the workspace (unless not asked),
    HEAD's commit and its experiments, and with ``all_branches`` every other branch's tip
    and experiments; one ``dvc exp show --json`` call."""
    runs = list_experiments(Path(repo), workspace=workspace, all_branches=all_branches)
    return to_frame(runs)


def to_frame(runs: Sequence[Experiment]) -> pd.DataFrame:
    """``runs`` as the DataFrame :func:`experiments_frame` describes, in their order."""
    own = [run.metrics if run.state == "success" else {} for run in runs]
    sections = {
        "run": pd.DataFrame(
            {
                "rev": [run.rev for run in runs],
                "kind": [run.kind for run in runs],
                "base": [run.base for run in runs],
                "state": [run.state for run in runs],
                "pruned": [is_pruned(metrics) for metrics in own],
                "data": [data_identity(run) for run in runs],
            }
        ),
        "params": pd.DataFrame([run.params for run in runs], index=range(len(runs))),
        "metrics": pd.DataFrame(own, index=range(len(runs)), dtype=float),
    }
    frame = pd.concat(sections, axis=1)
    frame.index = pd.Index([run.name for run in runs], name="experiment")
    return frame


def section(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The ``params`` or ``metrics`` columns of ``frame``; no columns, rather than a
    KeyError, when no run has any."""
    if name in frame.columns.get_level_values(0):
        return frame[name]
    return pd.DataFrame(index=frame.index)
