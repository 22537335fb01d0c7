"""train stage: fit the model on data/prepared; write models/model.pt and DVCLive metrics.

With train.nproc > 1 this process launches that many through torchrun, each running this
script again as one rank; only the writing one prints and saves. When a tuner runs this
stage as a trial's experiment, the trial's link (rank 0's) reports every epoch to its
study, whose pruner may stop training early."""

from pathlib import Path

from visiontune.config.params import Params
from visiontune.config.paths import MODEL, PREPARED, TRAIN_LIVE, TRAIN_METRICS
from visiontune.stage import run_stage
from visiontune.training.distributed import joined
from visiontune.training.launch import launches, run_processes
from visiontune.training.train_stage import train
from visiontune.tuning.trial_link import link_from_environment


def main(params: Params) -> None:
    if launches(params.train):
        run_processes(params.train, Path(__file__))
        return
    with joined(params.train) as group:
        link = link_from_environment() if group.rank == 0 else None  # None unless a trial
        summary = train(
            params,
            prepared_dir=PREPARED,
            model_path=MODEL,
            live_dir=TRAIN_LIVE,
            summary_path=TRAIN_METRICS,
            on_epoch=link.after_epoch if link else None,
            group=group,
        )
    if group.writes:
        pruned = " (pruned)" if "pruned" in summary else ""
        epochs = summary["epochs"]
        print(f"{MODEL}: val/acc {summary['val']['acc']:.4f} after {epochs} epochs{pruned}")


if __name__ == "__main__":
    run_stage(main)
