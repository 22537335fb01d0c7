"""download stage: fetch ``data.source`` into data/raw."""

from pathlib import Path

from visiontune.params import Params
from visiontune.sources import download
from visiontune.stage import run_stage


def main(params: Params) -> None:
    info = download(params.data.source, Path("data/raw"))
    print(f"data/raw: {info['count']} images of {len(info['classes'])} classes ({info['format']})")


if __name__ == "__main__":
    run_stage(main)
