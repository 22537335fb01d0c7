"""The train stage: fit the model, then write its outputs: the checkpoint, the DVCLive
series of every epoch and the summary of the saved model's epoch (metrics/train.json).

Among several processes only the one that writes (rank 0 on one machine:
:attr:`Group.writes`) logs to DVCLive and saves; the others train and write nothing, so
a run leaves the files, keys and DVCLive steps of a single-process one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontune.config.params import Params
from visiontune.config.paths import write_json
from visiontune.models.checkpoint import save_checkpoint
from visiontune.training.distributed import SINGLE, Group
from visiontune.training.fit import EpochCallback, EpochResult, fit


def train(
    params: Params,
    prepared_dir: Path,
    model_path: Path,
    live_dir: Path,
    summary_path: Path,
    on_epoch: EpochCallback | None = None,
    group: Group = SINGLE,
) -> dict[str, Any]:
    """The train stage: :func:`fit`, then save the model, the series and the summary.

    Writes the checkpoint to ``model_path``, per-epoch series under ``live_dir`` (DVCLive)
    and the summary (of the saved model's epoch) to ``summary_path``, and returns it.
    ``on_epoch`` (a tuner's trial, say) is called after each epoch's metrics are logged, as
    :func:`fit` calls it. ``group``: the processes training together; one that does not
    write only trains.
    """
    if not group.writes:
        return fit(params, prepared_dir, on_epoch, group).summary()
    from dvclive import Live

    live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False)

    def log(result: EpochResult) -> str | None:
        live.step = result.epoch  # series count epochs from 1, as the log lines do
        for name, value in result.metrics().items():
            live.log_metric(name, value)
        live.next_step()
        return on_epoch(result) if on_epoch is not None else None

    try:
        fitted = fit(params, prepared_dir, log, group)
    finally:
        _end(live)
        # The summary below describes the saved model; DVCLive's last-epoch one would not.
        Path(live.metrics_file).unlink(missing_ok=True)
    save_checkpoint(model_path, fitted.model, fitted.meta)
    summary = fitted.summary()
    write_json(summary_path, summary)
    return summary


def _end(live: Any) -> None:
    """``live.end()``, safe from a race of DVCLive's: experiments that the queue runs at once
    share one ``.dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED`` (a VS Code signal), which each
    one's end checks for and then removes; the loser's FileNotFoundError, raised after
    everything is saved, must not fail its experiment."""
    try:
        live.end()
    except FileNotFoundError as exc:
        if Path(exc.filename or "").name != "DVCLIVE_STEP_COMPLETED":
            raise
