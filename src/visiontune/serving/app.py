"""``visiontune serve``: an HTTP API (FastAPI on uvicorn) that classifies uploaded images.

``POST /predict`` (one image), ``POST /predict/batch`` (several), ``GET /health``,
``GET /metadata``, ``GET /metrics`` (Prometheus, with the confidence of predictions and the
rolling input-drift score of the last images); OpenAPI docs at ``/docs``. Uploads go
through the preprocess stage's ``image_to_tensor``, so the model sees the same pixels as in
training and evaluation.
"""

import threading
from collections.abc import Sequence
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from visiontune.config.errors import VisiontuneError
from visiontune.data.images import Loaded
from visiontune.data.input_stats import MIN_IMAGES, REFERENCE_SPLIT
from visiontune.models.checkpoint import file_digest
from visiontune.models.meta import ModelMeta
from visiontune.registry.fetch import Registered
from visiontune.serving.metrics import MetricsMiddleware, ServingMetrics
from visiontune.serving.predictors import Predictor, load_predictor
from visiontune.serving.provenance import Provenance, provenance
from visiontune.serving.uploads import (
    FORMATS,
    BodySizeLimit,
    decode_image,
    refuse_decompression_bombs,
)

DEFAULT_MAX_BYTES = 10 * 2**20
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_DRIFT_WINDOW = 1000
MAX_FILES = 64


class ScoredLabel(BaseModel):
    label: str
    probability: float


class Prediction(ScoredLabel):
    """The most probable class and the ``top_k`` most probable ones, best first."""

    top_k: list[ScoredLabel]


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class Health(BaseModel):
    status: str


class Limits(BaseModel):
    max_bytes: int
    max_files: int
    max_pixels: int


class DriftReference(BaseModel):
    """What the input-drift score compares against: the statistics of the split the model
    was trained on (per-channel pixel mean/std on a 0..1 scale, source size buckets and
    modes), and the window of last images it is computed over."""

    split: str
    count: int
    mean: list[float]
    std: list[float]
    sizes: dict[str, int]
    modes: dict[str, int]
    window: int
    min_images: int


class RegistryRecord(BaseModel):
    """The registered version served (None when a file was served that no registry record
    accompanies): read from the git tags and the version's dvc.yaml, never typed by hand."""

    reference: str  # as asked for: classifier@prod, classifier@v1.0.0
    artifact: str
    version: str
    stages: list[str]  # the stages this version is in now
    rev: str  # the commit the version's tag points at
    path: str
    repo: str
    description: str | None
    labels: list[str]
    meta: dict[str, Any]  # the artifact's meta in that commit's dvc.yaml


class Metadata(BaseModel):
    """The served model: what it classifies, how it was trained, which file and revision."""

    model_name: str
    format: str
    classes: list[str]
    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    params: dict[str, Any]
    sha256: str
    revision: str | None  # the commit it was trained at; None: not committed, or unknown
    revision_note: str  # how the revision is known, or why there is none
    limits: Limits
    reference: DriftReference | None  # None: a model trained before it was recorded
    registry: RegistryRecord | None  # None: not a registered version's file


class ErrorDetail(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail, "description": "empty, corrupt or truncated image"},
    413: {"model": ErrorDetail, "description": "body, image or file count over the limit"},
    415: {"model": ErrorDetail, "description": "not an image in a supported format"},
}


class Classifier:
    """Decodes uploads and runs the predictor, one request at a time.

    Serialising the work bounds memory (one decoded image at a time) and gives each forward
    pass all the inference threads; HTTP I/O and body parsing stay concurrent.
    """

    def __init__(self, predictor: Predictor, max_pixels: int, metrics: ServingMetrics) -> None:
        self.predictor = predictor
        self.classes = list(predictor.meta.classes)
        self.max_pixels = max_pixels
        self.metrics = metrics
        self._lock = threading.Lock()

    def classify(self, files: Sequence[tuple[str, bytes]], top_k: int) -> list[Prediction]:
        """Predictions for ``(name, content)`` files, in order; HTTPException naming a bad one."""
        with self._lock:
            decoded = [self._decode(name, content) for name, content in files]
            images = np.stack([image.tensor.numpy() for image in decoded])
            probabilities = self.predictor.probabilities(images)
        predictions = [self._prediction(row, top_k) for row in probabilities]
        self.metrics.observe(
            [p.label for p in predictions],
            probabilities.max(axis=1).tolist(),
            images,
            [image.size for image in decoded],
            [image.mode for image in decoded],
        )
        return predictions

    def _decode(self, name: str, content: bytes) -> Loaded:
        meta = self.predictor.meta
        try:
            return decode_image(content, meta.channels, meta.image_size, self.max_pixels)
        except HTTPException as exc:
            raise HTTPException(exc.status_code, f"{name}: {exc.detail}") from None

    def _prediction(self, row: np.ndarray, top_k: int) -> Prediction:
        best = np.argsort(-row, kind="stable")[:top_k]  # ties: lowest index, as argmax
        top = [
            ScoredLabel(label=self.classes[i], probability=round(float(row[i]), 6)) for i in best
        ]
        return Prediction(label=top[0].label, probability=top[0].probability, top_k=top)


def create_app(
    predictor: Predictor,
    model_path: Path,
    *,
    registered: Registered | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_files: int = MAX_FILES,
    drift_window: int = DEFAULT_DRIFT_WINDOW,
) -> FastAPI:
    """The API serving ``predictor`` (loaded from ``model_path``, the ``registered``
    version's file if given), with its own metrics; the input-drift score covers the last
    ``drift_window`` images classified."""
    refuse_decompression_bombs()
    meta = predictor.meta
    metrics = ServingMetrics(meta.classes, meta.reference, drift_window)
    classifier = Classifier(predictor, max_pixels, metrics)
    reference = None
    if meta.reference is not None:
        reference = DriftReference(
            split=REFERENCE_SPLIT,
            **meta.reference.to_dict(),
            window=drift_window,
            min_images=MIN_IMAGES,
        )
    if registered is not None:
        source = Provenance(registered.rev, f"the commit {registered.reference} resolved to")
    else:
        source = provenance(model_path, _trained_md5(model_path, predictor))
    metadata = Metadata(
        model_name=meta.params.model.name,
        format=predictor.format,
        **{**meta.to_dict(), "reference": reference},
        sha256=file_digest(model_path, "sha256"),
        revision=source.revision,
        revision_note=source.note,
        limits=Limits(max_bytes=max_bytes, max_files=max_files, max_pixels=max_pixels),
        registry=_registry_record(registered),
    )
    num_classes = len(classifier.classes)
    app = FastAPI(
        title="visiontune image classifier",
        version=package_version("visiontune"),
        description=(
            f"Classifies images with the {metadata.format} model `{metadata.model_name}` "
            f"({num_classes} classes, {metadata.channels}-channel "
            f"{metadata.image_size}x{metadata.image_size} input). Upload images as multipart "
            f"form data; at most {max_bytes} bytes a request, {max_pixels} pixels an image "
            f"and {max_files} files a batch. Formats: {', '.join(FORMATS)}."
        ),
    )
    top_k_query = Query(
        ge=1, le=num_classes, description="how many of the most probable classes to list"
    )
    TopK = Annotated[int, top_k_query]
    default_k = min(3, num_classes)

    @app.post("/predict", responses=ERRORS, summary="Classify one image")
    async def predict(
        file: Annotated[UploadFile, File(description="the image")], top_k: TopK = default_k
    ) -> Prediction:
        content = await file.read()
        predictions = await run_in_threadpool(
            classifier.classify, [(file.filename or "file", content)], top_k
        )
        return predictions[0]

    @app.post("/predict/batch", responses=ERRORS, summary="Classify several images")
    async def predict_batch(
        files: Annotated[list[UploadFile], File(description=f"up to {max_files} images")],
        top_k: TopK = default_k,
    ) -> BatchPrediction:
        if len(files) > max_files:
            raise HTTPException(413, f"too many files: {len(files)}, limit {max_files}")
        named = [(f"files[{i}] ({f.filename})", await f.read()) for i, f in enumerate(files)]
        predictions = await run_in_threadpool(classifier.classify, named, top_k)
        return BatchPrediction(predictions=predictions)

    @app.get("/health", summary="Liveness: ok once the model is loaded")
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/metadata", summary="The served model, its training params and its file")
    async def get_metadata() -> Metadata:
        return metadata

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def get_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)
    endpoints = [route.path for route in app.routes]
    app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=endpoints)
    return app


def serve(
    model_path: Path,
    *,
    host: str,
    port: int,
    registered: Registered | None = None,
    threads: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    drift_window: int = DEFAULT_DRIFT_WINDOW,
) -> None:
    """Load the model (VisiontuneError if unusable, or if it disagrees with the
    ``registered`` version's record it was fetched as), then serve it until interrupted."""
    import uvicorn

    predictor = load_predictor(model_path, threads)
    if registered is not None:
        check_registered_meta(registered, predictor.meta)
    app = create_app(
        predictor,
        model_path,
        registered=registered,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        drift_window=drift_window,
    )
    uvicorn.run(app, host=host, port=port)


def check_registered_meta(registered: Registered, meta: ModelMeta) -> None:
    """Refuse a registered model whose classes or input size disagree with what its
    version's dvc.yaml declares (``meta: classes, input_size``): one of them is wrong."""
    declared = registered.meta
    size = [meta.channels, meta.image_size, meta.image_size]
    actual = {"classes": list(meta.classes), "input_size": size}
    for key, value in actual.items():
        if key in declared and list(declared[key]) != value:
            raise VisiontuneError(
                f"{registered.reference}: dvc.yaml declares {key} {declared[key]} for "
                f"{registered.artifact}, its model has {value}; fix the artifact's meta"
            )


def _registry_record(registered: Registered | None) -> RegistryRecord | None:
    if registered is None:
        return None
    fields = registered.to_dict()
    fields.pop("md5")
    return RegistryRecord(**fields)


def _trained_md5(model_path: Path, predictor: Predictor) -> str | None:
    """DVC's md5 of the checkpoint: the served file itself, or the one an export came from."""
    if predictor.format == "torch":
        return file_digest(model_path, "md5")
    return predictor.source_md5
