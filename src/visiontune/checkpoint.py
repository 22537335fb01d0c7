"""models/model.pt: weights plus everything needed to rebuild and feed the model.

The file holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch

from visiontune.errors import VisiontuneError, first_line
from visiontune.models import build_model
from visiontune.params import ModelParams, Params

KEYS = ("state_dict", "params", "classes", "channels", "image_size", "mean", "std")


def save_checkpoint(
    path: Path, model: torch.nn.Module, params: Params, meta: dict[str, Any]
) -> None:
    """Save weights, the params they were trained with, classes and normalisation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {
            "state_dict": state,
            "params": dataclasses.asdict(params),
            "classes": list(meta["classes"]),
            "channels": int(meta["channels"]),
            "image_size": int(meta["image_size"]),
            "mean": [float(m) for m in meta["mean"]],
            "std": [float(s) for s in meta["std"]],
        },
        path,
    )


def load_checkpoint(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint; return it (eval mode) and the checkpoint dict."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise VisiontuneError(f"{path} not found: run `dvc repro train` first") from None
    except Exception as exc:
        raise VisiontuneError(f"{path} is not a visiontune model file ({_reason(exc)})") from None
    missing = [key for key in KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise VisiontuneError(f"{path} is not a visiontune model file (no {', '.join(missing)})")
    # Weights come from the file: never fetch pretrained ones again.
    model_params = ModelParams(**{**ckpt["params"]["model"], "pretrained": False})
    model = build_model(
        model_params,
        num_classes=len(ckpt["classes"]),
        channels=ckpt["channels"],
        image_size=ckpt["image_size"],
    )
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file (``md5`` is DVC's: it is how dvc.lock records outputs)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(exc: Exception) -> str:
    """One line of why torch.load failed; its weights-only refusals bury it in advice."""
    reason = first_line(exc)
    if reason.startswith("Weights only load failed"):
        advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = [line for line in lines if not line.startswith(advice)]
        return "weights-only loading refused it: " + (detail[0] if detail else "unsafe content")
    return reason
