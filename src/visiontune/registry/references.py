"""``NAME@VERSION`` and ``NAME@STAGE``: a registered model as users type it (``--model``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

ARTIFACT = "classifier"  # the model, as dvc.yaml's artifacts: section names it
# GTO's artifact names and semantic versions with a leading "v" (gto.constants, simplified).
_REFERENCE = re.compile(r"^(?P<name>[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?)@(?P<at>[A-Za-z0-9._+-]+)$")
_VERSION = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+][0-9A-Za-z.+-]+)?$")


@dataclass(frozen=True)
class Reference:
    """An artifact's version (``classifier@v1.0.0``) or what a stage holds (``classifier@prod``)."""

    name: str
    version: str | None = None
    stage: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.version or self.stage}"


def parse_reference(text: str) -> Reference | None:
    """The reference ``text`` names, or None if it names none (then it is a file path)."""
    match = _REFERENCE.match(text)
    if match is None:
        return None
    at = match["at"]
    if _VERSION.match(at):
        return Reference(match["name"], version=at)
    return Reference(match["name"], stage=at)
