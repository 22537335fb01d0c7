"""The ``visiontune`` command."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from visiontune.errors import VisiontuneError
from visiontune.params import load_params


def _params(args: argparse.Namespace) -> None:
    """Validate params.yaml and print every key with its effective value."""
    params = load_params(args.file)
    print(yaml.safe_dump(dataclasses.asdict(params), sort_keys=False), end="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visiontune", description="Image-classification experiments driven by DVC."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("params", help="validate params.yaml and print the values used")
    check.add_argument("--file", type=Path, default=Path("params.yaml"), help="params file")
    check.set_defaults(func=_params)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command; user errors print one line and exit 1."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except VisiontuneError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
