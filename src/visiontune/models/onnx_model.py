"""ONNX export, int8 quantization and onnxruntime inference of a visiontune checkpoint.

The ONNX graph takes the raw uint8 batch (N, C, S, S) as stored, N dynamic, gives it the
evaluation view and standardises it exactly as ``model_input.ModelInput`` does, and outputs
logits (N, K);
``OnnxModel.probabilities`` applies the softmax in float32 (so int8 quantization never
rounds probabilities). The checkpoint's :class:`ModelMeta`, with how it was exported
(:class:`ExportMeta`), is stored as JSON in the model's ``metadata_props`` under
"visiontune". torch, onnx and onnxruntime are imported only by the functions that need
them, so importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.log_levels import log_level
from visiontune.models.meta import ModelMeta

if TYPE_CHECKING:
    import onnx
    import torch

    from visiontune.models.scoring import TrainedModel

META_KEY = "visiontune"
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
CALIBRATION_BATCH = 32
_HINT = "export it with `visiontune export --format onnx`"


@dataclass(frozen=True)
class ExportMeta:
    """What an ONNX export stores under META_KEY: the model's meta, whether the export is
    int8, and DVC's md5 of the checkpoint it came from (as dvc.lock records it)."""

    model: ModelMeta
    quantized: bool
    source_md5: str | None

    def to_json(self) -> str:
        """The meta's dict with ``quantized`` and ``source_md5`` added, as JSON."""
        return json.dumps(
            {**self.model.to_dict(), "quantized": self.quantized, "source_md5": self.source_md5}
        )

    @classmethod
    def from_json(cls, text: str | None, path: Path) -> ExportMeta:
        """The metadata JSON of the file at ``path``; VisiontuneError if absent or unusable."""
        if text is None:
            raise VisiontuneError(f"{path} has no visiontune metadata; {_HINT}")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise VisiontuneError(
                f"{path} has corrupt visiontune metadata ({exc}); {_HINT}"
            ) from None
        try:
            model = ModelMeta.from_dict(data, path, extra_keys=("quantized",))
        except VisiontuneError as exc:
            raise VisiontuneError(f"{exc}; {_HINT}") from None
        return cls(model, quantized=data["quantized"], source_md5=data.get("source_md5"))


def export_onnx(model_path: Path, out_path: Path) -> None:
    """Export the checkpoint at ``model_path`` to a single-file ONNX model at ``out_path``.

    Uses the torch.export-based exporter (``dynamo=True``, the maintained one since
    torch 2.9) with the weights inside the file. The network is converted to contiguous
    memory format first: channels_last makes torch.export lower ``flatten`` to an
    ``as_strided`` gather. Per-node debug metadata (stack traces with local paths) is
    dropped. The file is written atomically.
    """
    import torch

    from visiontune.models.checkpoint import file_digest
    from visiontune.models.scoring import load_trained

    trained = load_trained(Path(model_path))
    trained.network.to(memory_format=torch.contiguous_format)
    wrapped = with_normalisation(trained)
    meta = trained.meta
    size, channels = meta.image_size, meta.channels
    example = torch.zeros((2, channels, size, size), dtype=torch.uint8)
    try:
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            verbose=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    except Exception as exc:  # the exporter's errors span torch.export, onnxscript and onnx
        raise VisiontuneError(
            f"cannot export {model_path} ({meta.params.model.name}) to ONNX: "
            f"{reason(exc, innermost=True)}"
        ) from None
    proto = program.model_proto
    for node in proto.graph.node:
        del node.metadata_props[:]
    exported = ExportMeta(meta, quantized=False, source_md5=file_digest(model_path, "md5"))
    _save_atomic(proto, exported, Path(out_path))


def with_normalisation(trained: TrainedModel) -> torch.nn.Module:
    """The trained network preceded by its input (evaluation view and standardisation), one
    module: stored uint8 images in, logits out (on the model's device; the exporter's is
    the CPU)."""
    import torch

    from visiontune.data.model_input import ModelInput

    view = trained.input

    class RawImageModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = trained.network
            self.register_buffer("scale", view.scale)
            self.register_buffer("shift", view.shift)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.model(ModelInput(self.scale, self.shift, view.crop, view.size)(images))

    return RawImageModel().eval()


def quantize_onnx(onnx_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    """Quantize a float export to int8 (static, QDQ format); write it atomically.

    The graph is first pre-processed as onnxruntime advises (shape inference,
    optimisation); activation ranges are then calibrated (min/max) on ``calibration``,
    uint8 images (N, C, S, S) such as a few hundred train images. Weights are int8 per
    output channel, activations uint8 (the pair onnxruntime's x86 kernels run fastest).
    Dynamic quantization, measured on digits too, kept the accuracy and gave a slightly
    smaller file but ran 5-10x slower than float (ConvInteger kernels, activations
    re-quantized on every call).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    exported = _file_meta(Path(onnx_path))
    if len(calibration) == 0:
        raise VisiontuneError("int8 quantization needs at least one calibration image")
    batches = iter(np.array_split(calibration, max(1, len(calibration) // CALIBRATION_BATCH)))

    class Batches(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    # onnxruntime.quantization logs its advice as root-logger warnings, one per tensor.
    with tempfile.TemporaryDirectory() as tmp, log_level("", logging.ERROR):
        prepared, quantized = Path(tmp) / "model.pre.onnx", Path(tmp) / "model.int8.onnx"
        quant_pre_process(str(onnx_path), str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        proto = onnx.load(str(quantized))
    _save_atomic(proto, dataclasses.replace(exported, quantized=True), Path(out_path))


class OnnxModel:
    """An exported model run by onnxruntime on the CPU, with its visiontune metadata:
    ``meta`` (the checkpoint's), ``quantized`` and ``source_md5`` (see :class:`ExportMeta`).
    """

    format = "onnx"

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise VisiontuneError(f"{path} not found: run `visiontune export --format onnx`")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads > 0:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            raise VisiontuneError(
                f"{path} is not an ONNX model ({reason(exc, innermost=True)})"
            ) from None
        text = self._session.get_modelmeta().custom_metadata_map.get(META_KEY)
        exported = ExportMeta.from_json(text, path)
        self.meta, self.quantized = exported.model, exported.quantized
        self.source_md5 = exported.source_md5

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, K) float32 of uint8 images (N, C, S, S)."""
        expected = (self.meta.channels, self.meta.image_size, self.meta.image_size)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise VisiontuneError(
                f"expected uint8 images of shape (N, {', '.join(map(str, expected))}), "
                f"got {images.dtype} {images.shape}"
            )
        (logits,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: images})
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def _file_meta(path: Path) -> ExportMeta:
    """The visiontune metadata of an ONNX file, read with onnx (weights not loaded)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise VisiontuneError(f"{path} not found") from None
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors
        raise VisiontuneError(
            f"{path} is not an ONNX model ({reason(exc, innermost=True)})"
        ) from None
    props = {prop.key: prop.value for prop in proto.metadata_props}
    return ExportMeta.from_json(props.get(META_KEY), path)


def _save_atomic(proto: onnx.ModelProto, exported: ExportMeta, path: Path) -> None:
    """Write ``proto`` with ``exported`` under META_KEY to a temporary file, then rename it."""
    import onnx

    props = {prop.key: prop.value for prop in proto.metadata_props}
    onnx.helper.set_model_props(proto, props | {META_KEY: exported.to_json()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        onnx.save_model(proto, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
