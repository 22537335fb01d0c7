"""train stage: fit the model on data/prepared; write models/model.pt and DVCLive metrics."""

from visiontune.config.params import Params
from visiontune.config.paths import MODEL, PREPARED, TRAIN_LIVE, TRAIN_METRICS
from visiontune.stage import run_stage
from visiontune.training.fit import train


def main(params: Params) -> None:
    summary = train(
        params,
        prepared_dir=PREPARED,
        model_path=MODEL,
        live_dir=TRAIN_LIVE,
        summary_path=TRAIN_METRICS,
    )
    pruned = " (pruned)" if "pruned" in summary else ""
    print(f"{MODEL}: val/acc {summary['val']['acc']:.4f} after {summary['epochs']} epochs{pruned}")


if __name__ == "__main__":
    run_stage(main)
