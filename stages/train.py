"""train stage: fit the model on data/prepared; write models/model.pt and DVCLive metrics.

When a tuner runs this stage as a trial's experiment, the trial's link reports every epoch
to its study, whose pruner may stop training early."""

from visiontune.config.params import Params
from visiontune.config.paths import MODEL, PREPARED, TRAIN_LIVE, TRAIN_METRICS
from visiontune.stage import run_stage
from visiontune.training.train_stage import train
from visiontune.tuning.trial_link import link_from_environment


def main(params: Params) -> None:
    link = link_from_environment()  # None unless a tuner runs this stage as a trial
    summary = train(
        params,
        prepared_dir=PREPARED,
        model_path=MODEL,
        live_dir=TRAIN_LIVE,
        summary_path=TRAIN_METRICS,
        on_epoch=link.after_epoch if link else None,
    )
    pruned = " (pruned)" if "pruned" in summary else ""
    print(f"{MODEL}: val/acc {summary['val']['acc']:.4f} after {summary['epochs']} epochs{pruned}")


if __name__ == "__main__":
    run_stage(main)
