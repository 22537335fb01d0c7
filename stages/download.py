"""download stage: fetch ``data.source`` into data/raw."""

from visiontune.config.params import Params
from visiontune.config.paths import RAW
from visiontune.data.download import download
from visiontune.stage import run_stage


def main(params: Params) -> None:
    info = download(params.data.source, RAW)
    print(f"{RAW}: {info['count']} images of {len(info['classes'])} classes ({info['format']})")


if __name__ == "__main__":
    run_stage(main)
