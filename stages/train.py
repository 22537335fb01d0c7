"""train stage: fit the model on data/prepared; write models/model.pt and DVCLive metrics."""

from pathlib import Path

from visiontune.params import Params
from visiontune.stage import run_stage
from visiontune.training import train


def main(params: Params) -> None:
    summary = train(
        params,
        prepared_dir=Path("data/prepared"),
        model_path=Path("models/model.pt"),
        live_dir=Path("plots/train"),
        summary_path=Path("metrics/train.json"),
    )
    print(f"models/model.pt: val/acc {summary['val']['acc']:.4f} after {summary['epochs']} epochs")


if __name__ == "__main__":
    run_stage(main)
