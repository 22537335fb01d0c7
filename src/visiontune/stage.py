"""Shared entry point of the stage scripts in stages/: params in, one-line errors out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from visiontune.config.errors import USER_ERROR_EXIT, one_line_errors
from visiontune.config.params import Params, load_params


def run_stage(main: Callable[[Params], None], params_path: Path = Path("params.yaml")) -> None:
    """Load and validate params, run ``main``; a user error is one line on stderr and exit
    status USER_ERROR_EXIT, which the tuner reads as "do not retry"."""
    with one_line_errors(USER_ERROR_EXIT):
        main(load_params(params_path))
