"""`visiontune serve`: a real server on 127.0.0.1, started by the tests, spoken to over HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from helpers.servers import api_server, free_port
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from visiontune.config.errors import VisiontuneError
from visiontune.data.batches import read_split
from visiontune.data.input_stats import MIN_IMAGES, MOVED
from visiontune.models.scoring import load_trained
from visiontune.serving.predictors import TorchPredictor, load_predictor
from visiontune.serving.provenance import Provenance, provenance

MAX_BYTES = 1_000_000
MAX_PIXELS = 1_000_000
REVISION = "0123abc-test"
DRIFT_WINDOW = 48  # fewer than the test split's 60 images: one batch fills the window


@dataclass(frozen=True)
class Server:
    """A running `visiontune serve` and an HTTP client for it."""

    client: httpx.Client
    model: Path


@contextlib.contextmanager
def _serve(model: Path, log: Path, *args: str) -> Iterator[Server]:
    """Run `visiontune serve` on a free loopback port until the block ends."""
    env = {**os.environ, "VISIONTUNE_REVISION": REVISION}
    with api_server(["--model", str(model), *args], log, env) as client:
        yield Server(client, model)


@pytest.fixture(scope="module")
def server(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    limits = ["--max-bytes", str(MAX_BYTES), "--max-pixels", str(MAX_PIXELS), "--threads", "1"]
    with _serve(trained_model, log, *limits, "--drift-window", str(DRIFT_WINDOW)) as running:
        yield running


@pytest.fixture(scope="module")
def held_out(prepared: Path) -> tuple[torch.Tensor, torch.Tensor]:
    return read_split(prepared, "test")


@pytest.fixture(scope="module")
def expected_labels(trained_model: Path, held_out) -> list[str]:
    """The class names evaluate predicts for the test split (the same code path)."""
    trained = load_trained(trained_model)
    result = trained.evaluate(*held_out, batch_size=512)
    return [trained.meta.classes[i] for i in result.predictions.tolist()]


def _png(image: Image.Image | np.ndarray, fmt: str = "PNG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _tensor_png(image: torch.Tensor) -> bytes:
    """A uint8 (C, S, S) tensor as a PNG file (grayscale or RGB)."""
    return _png(image.permute(1, 2, 0).squeeze(-1).numpy())


def _bomb_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: a few kB on disk, ``width * height`` pixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _predict(server: Server, content: bytes, name: str = "image.png", **params) -> httpx.Response:
    return server.client.post("/predict", files={"file": (name, content)}, params=params)


def _metrics(server: Server) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    response = server.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


# --- the endpoints ---------------------------------------------------------------------


def test_health(server: Server) -> None:
    response = server.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_api_predicts_what_evaluate_predicts(server: Server, held_out, expected_labels) -> None:
    images, _ = held_out
    pngs = [_tensor_png(image) for image in images]
    single = []
    for png in pngs:
        response = _predict(server, png)
        assert response.status_code == 200, response.text
        single.append(response.json()["label"])
    assert single == expected_labels
    assert _predict_batch(server, pngs) == expected_labels


def _predict_batch(server: Server, pngs: list[bytes]) -> list[str]:
    """The labels /predict/batch gives ``pngs`` (at most 64), in order."""
    files = [("files", (f"{i}.png", png)) for i, png in enumerate(pngs)]
    response = server.client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    return [prediction["label"] for prediction in response.json()["predictions"]]


def test_predict_top_k(server: Server, held_out) -> None:
    png = _tensor_png(held_out[0][0])
    default = _predict(server, png).json()
    assert len(default["top_k"]) == 3
    assert default["top_k"][0] == {"label": default["label"], "probability": default["probability"]}

    every = _predict(server, png, top_k=10).json()["top_k"]
    assert sorted(p["label"] for p in every) == [str(d) for d in range(10)]
    probabilities = [p["probability"] for p in every]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert every[:3] == default["top_k"]

    for bad in (0, 11, -1, "three"):
        response = _predict(server, png, top_k=bad)
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["query", "top_k"]


def test_batch_limits(server: Server, held_out) -> None:
    png = _tensor_png(held_out[0][0])
    too_many = [("files", (f"{i}.png", png)) for i in range(65)]
    response = server.client.post("/predict/batch", files=too_many)
    assert response.status_code == 413
    assert response.json() == {"detail": "too many files: 65, limit 64"}

    response = server.client.post("/predict/batch", files=[("other", ("a.png", png))])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "files"]

    mixed = [("files", ("good.png", png)), ("files", ("notes.txt", b"not an image"))]
    response = server.client.post("/predict/batch", files=mixed)
    assert response.status_code == 415
    assert response.json()["detail"].startswith("files[1] (notes.txt): not an image")


def test_metadata(server: Server) -> None:
    response = server.client.get("/metadata")
    assert response.status_code == 200
    metadata = response.json()
    checkpoint = torch.load(server.model, weights_only=True)
    assert metadata["classes"] == checkpoint["classes"]
    assert metadata["model_name"] == checkpoint["params"]["model"]["name"] == "cnn"
    assert metadata["image_size"] == checkpoint["image_size"] == 8
    assert metadata["channels"] == checkpoint["channels"] == 1
    assert metadata["mean"] == checkpoint["mean"]
    assert metadata["std"] == checkpoint["std"]
    assert metadata["format"] == "torch"
    assert metadata["params"] == json.loads(json.dumps(checkpoint["params"]))  # tuples: lists
    assert metadata["sha256"] == hashlib.sha256(server.model.read_bytes()).hexdigest()
    assert metadata["revision"] == REVISION
    assert metadata["revision_note"] == "given by $VISIONTUNE_REVISION when the image was built"
    assert metadata["registry"] is None  # a file, not a registered version
    assert metadata["limits"] == {"max_bytes": MAX_BYTES, "max_files": 64, "max_pixels": MAX_PIXELS}
    assert checkpoint["reference"]["sizes"] == {"5-8px": checkpoint["reference"]["count"]}
    assert metadata["reference"] == {
        "split": "train",
        **checkpoint["reference"],
        "window": DRIFT_WINDOW,
        "min_images": MIN_IMAGES,
    }


def test_metrics_count_requests_latency_and_predictions(server: Server, held_out) -> None:
    images, _ = held_out
    before = _metrics(server)
    labels = [_predict(server, _tensor_png(image)).json()["label"] for image in images[:5]]
    assert _predict(server, b"plain text", "a.txt").status_code == 415
    assert _predict(server, bytes(MAX_BYTES + 1)).status_code == 413
    server.client.get("/health")
    server.client.get("/no-such-page")
    after = _metrics(server)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("visiontune_requests_total", endpoint="/predict", status="200") == 5
    assert delta("visiontune_requests_total", endpoint="/predict", status="415") == 1
    assert delta("visiontune_requests_total", endpoint="/predict", status="413") == 1
    assert delta("visiontune_requests_total", endpoint="/health", status="200") == 1
    assert delta("visiontune_requests_total", endpoint="other", status="404") == 1
    assert delta("visiontune_request_duration_seconds_count", endpoint="/predict") == 7
    assert delta("visiontune_request_duration_seconds_bucket", endpoint="/predict", le="+Inf") == 7
    assert delta("visiontune_request_duration_seconds_sum", endpoint="/predict") > 0
    for label in set(labels):
        assert delta("visiontune_predictions_total", label=label) == labels.count(label)
    assert ("visiontune_predictions_total", (("label", "9"),)) in after  # all classes, from 0


def _drift_score(server: Server) -> float:
    metrics = _metrics(server)
    assert metrics[("visiontune_input_drift_window_images", ())] == DRIFT_WINDOW
    return metrics[("visiontune_input_drift_score", ())]


def test_metrics_confidence_and_rolling_input_drift(server: Server, held_out) -> None:
    images = held_out[0][:DRIFT_WINDOW]
    before = _metrics(server)
    files = [("files", (f"{i}.png", _tensor_png(image))) for i, image in enumerate(images)]
    predictions = server.client.post("/predict/batch", files=files).json()["predictions"]
    after = _metrics(server)
    count = ("visiontune_prediction_confidence_count", ())
    assert after[count] - before[count] == DRIFT_WINDOW
    total = ("visiontune_prediction_confidence_sum", ())
    confidence = sum(p["probability"] for p in predictions)
    assert after[total] - before[total] == pytest.approx(confidence, abs=1e-4)
    above_half = ("visiontune_prediction_confidence_bucket", (("le", "0.5"),))
    low = sum(p["probability"] <= 0.5 for p in predictions)
    assert after[above_half] - before[above_half] == low
    held_out_score = _drift_score(server)
    assert 0 <= held_out_score < MOVED

    inverted = [("files", (f"{i}.png", _tensor_png(255 - image))) for i, image in enumerate(images)]
    assert server.client.post("/predict/batch", files=inverted).status_code == 200
    assert _drift_score(server) > 3 * MOVED  # the pixel mean moved by about one std


def test_docs_and_openapi(server: Server) -> None:
    docs = server.client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    schema = server.client.get("/openapi.json").json()
    assert schema["info"]["title"] == "visiontune image classifier"
    assert schema["info"]["version"] == "0.1.0"
    assert "10 classes" in schema["info"]["description"]
    paths = {"/predict", "/predict/batch", "/health", "/metadata", "/metrics"}
    assert paths <= set(schema["paths"])
    top_k = schema["paths"]["/predict"]["post"]["parameters"][0]
    assert top_k["name"] == "top_k"
    assert (top_k["schema"]["minimum"], top_k["schema"]["maximum"]) == (1, 10)
    assert {"400", "413", "415", "422"} <= set(schema["paths"]["/predict"]["post"]["responses"])


# --- bad input -------------------------------------------------------------------------


def test_body_over_the_limit_is_refused_by_content_length(server: Server) -> None:
    response = _predict(server, bytes(MAX_BYTES + 1))
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body too large: limit {MAX_BYTES} bytes"}


def test_chunked_body_over_the_limit_is_refused_while_read(server: Server) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(4):
            yield bytes(MAX_BYTES // 2)
        yield b"\r\n--B--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=B"}
    response = server.client.post("/predict", content=body(), headers=headers)
    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body too large")


@pytest.mark.parametrize(
    ("content", "status", "detail"),
    [
        (b"", 400, "x.png: empty file"),
        (b"just some text", 415, "x.png: not an image in a supported format"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", 415, "x.png: not an image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), 415, "x.png: not an image"),
    ],
    ids=["empty", "text", "eps", "png-signature-only"],
)
def test_not_an_image(server: Server, content: bytes, status: int, detail: str) -> None:
    response = _predict(server, content, "x.png")
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)


def test_truncated_png(server: Server, held_out) -> None:
    png = _tensor_png(held_out[0][0])
    response = _predict(server, png[: len(png) // 2], "cut.png")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "cut.png: corrupt or truncated image: image file is truncated"
    }


@pytest.mark.parametrize(
    ("width", "height", "detail"),
    [
        (1500, 1000, "image too large: 1500x1000 = 1500000 pixels, limit 1000000"),
        (10_000, 10_000, "image refused as a decompression bomb"),  # Pillow's warning
        (20_000, 20_000, "image refused as a decompression bomb"),  # Pillow's error
    ],
)
def test_decompression_bomb(server: Server, width: int, height: int, detail: str) -> None:
    bomb = _bomb_png(width, height)
    assert len(bomb) < MAX_BYTES // 10
    response = _predict(server, bomb, "bomb.png")
    assert response.status_code == 413
    assert response.json()["detail"].startswith(f"bomb.png: {detail}")


def test_missing_file_field(server: Server, held_out) -> None:
    png = _tensor_png(held_out[0][0])
    for response in (
        server.client.post("/predict", files={"image": ("a.png", png)}),
        server.client.post("/predict", data={"file": "a.png"}),
        server.client.post("/predict", json={"file": "a.png"}),
    ):
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "file"]


def _image_variants(gray: np.ndarray) -> dict[str, bytes]:
    """One grayscale uint8 image in many modes and formats."""
    image = Image.fromarray(gray)
    palette = image.convert("RGB").quantize(256, method=Image.Quantize.MAXCOVERAGE)
    return {
        "L": _png(image),
        "RGB": _png(image.convert("RGB")),
        "RGBA": _png(image.convert("RGBA")),
        "LA": _png(image.convert("LA")),
        "P": _png(palette),
        "I;16": _png(gray.astype(np.uint16) << 8),
        "1": _png(image.convert("1")),
        "RGB-JPEG": _png(image.convert("RGB"), "JPEG", quality=95),
        "CMYK-JPEG": _png(image.convert("CMYK"), "JPEG"),
        "GIF": _png(image, "GIF"),
        "BMP": _png(image, "BMP"),
        "TIFF-16": _png(gray.astype(np.uint16) << 8, "TIFF"),
        "WEBP": _png(image.convert("RGB"), "WEBP", lossless=True),
        "large-JPEG": _png(image.resize((512, 512)).convert("RGB"), "JPEG"),
    }


def test_image_modes_and_formats_are_converted(server: Server, held_out) -> None:
    gray = held_out[0][0][0].numpy()
    reference = _predict(server, _tensor_png(held_out[0][0])).json()
    lossless = {"L", "RGB", "RGBA", "LA", "P", "I;16", "GIF", "BMP", "TIFF-16", "WEBP"}
    for name, content in _image_variants(gray).items():
        response = _predict(server, content, f"image-{name}")
        assert response.status_code == 200, (name, response.text)
        if name in lossless:  # the same pixels reach the model
            assert response.json() == reference, name


def test_bad_requests_do_not_affect_the_next(server: Server, held_out) -> None:
    png = _tensor_png(held_out[0][0])
    reference = _predict(server, png).json()
    bad_requests = [
        lambda: _predict(server, png[:30]),
        lambda: _predict(server, _bomb_png(20_000, 20_000)),
        lambda: _predict(server, bytes(MAX_BYTES + 1)),
        lambda: _predict(server, b"text"),
        lambda: server.client.post("/predict/batch", files=[("files", ("a", b"x"))] * 65),
    ]
    for send_bad in bad_requests:
        assert send_bad().status_code >= 400
        assert _predict(server, png).json() == reference


def test_concurrent_load(server: Server, held_out, expected_labels) -> None:
    """200 requests from 8 threads: every one answered, each with its image's label."""
    images, _ = held_out
    pngs = [_tensor_png(image) for image in images]
    jobs = [i % len(pngs) for i in range(200)]
    limits = httpx.Limits(max_connections=8)
    with (
        httpx.Client(
            base_url=server.client.base_url, timeout=60, limits=limits, trust_env=False
        ) as client,
        ThreadPoolExecutor(8) as pool,
    ):

        def send(index: int) -> tuple[int, str]:
            response = client.post("/predict", files={"file": ("a.png", pngs[index])})
            return response.status_code, response.json().get("label", "")

        results = list(pool.map(send, jobs, timeout=300))
    assert [status for status, _ in results] == [200] * 200
    assert [label for _, label in results] == [expected_labels[i] for i in jobs]


# --- the command line and the predictor ----------------------------------------------------


def _serve_command(*args: str) -> subprocess.CompletedProcess:
    """`visiontune serve` expected to stop before serving (bounded, so a server fails it)."""
    command = [sys.executable, "-m", "visiontune", "serve", "--port", str(free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


class _Code:
    """Pickles as a function call: what ``weights_only`` loading must refuse to run."""

    def __reduce__(self) -> tuple:
        return (print, ("this must not run",))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.pt", None, "error: {path} not found: run `dvc repro train` first"),
        ("corrupt.pt", b"not a torch file", "error: {path} is not a visiontune model file"),
    ],
)
def test_cli_bad_model_is_one_line_error(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = _serve_command("--model", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(message.format(path=path))
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_bad_option(trained_model: Path) -> None:
    result = _serve_command("--model", str(trained_model), "--max-bytes", "0")
    assert result.returncode == 2
    assert "argument --max-bytes: must be >= 1, got 0" in result.stderr


def test_torch_predictor(trained_model: Path, held_out, expected_labels) -> None:
    predictor = load_predictor(trained_model, threads=1)
    assert isinstance(predictor, TorchPredictor)
    assert set(predictor.meta.to_dict()) == {
        "classes",
        "channels",
        "image_size",
        "mean",
        "std",
        "params",
        "reference",
    }
    assert predictor.format == "torch"
    probabilities = predictor.probabilities(held_out[0].numpy())
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (len(expected_labels), 10)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    classes = predictor.meta.classes
    assert [classes[i] for i in probabilities.argmax(1)] == expected_labels


class _Code:
    """Pickles as a function call: what ``weights_only`` loading must refuse to run."""

    def __reduce__(self) -> tuple:
        return (print, ("this must not run",))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.h5", b"", "{path}: unsupported model file, expected a .pt or .onnx file"),
        ("missing.onnx", None, "{path} not found: run `visiontune export"),
        ("corrupt.onnx", b"not an onnx file", "{path} is not an ONNX model"),
        ("weights.pt", {"weights": torch.zeros(2)}, "{path} is not a visiontune model file (no"),
        ("directory.pt", "dir", "{path} is not a visiontune model file"),
        ("notes.pt", b"# notes\n", "{path} is not a visiontune model file (weights-only loading"),
        ("code.pt", {"run": _Code()}, "{path} is not a visiontune model file (weights-only"),
    ],
)
def test_load_predictor_errors(
    tmp_path: Path, name: str, content: bytes | dict | str | None, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        torch.save(content, path)
    elif content == "dir":
        path.mkdir()
    with pytest.raises(VisiontuneError) as error:
        load_predictor(path)
    assert str(error.value).startswith(message.format(path=path))
    assert "\n" not in str(error.value)


def test_provenance_is_the_commit_whose_lock_records_the_model_as_trains_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial's commit that lists the md5 only as a stale dependency of robustness is not
    where the model came from: until a commit records it as train's output, the model is
    not committed, and /metadata says so."""
    monkeypatch.delenv("VISIONTUNE_REVISION", raising=False)
    model = tmp_path / "models" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    md5 = hashlib.md5(b"weights").hexdigest()
    assert provenance(model, md5) == Provenance(None, "unknown: not in a git repository")

    def git(*args: str) -> str:
        identity = ["-c", "user.name=test", "-c", "user.email=test@visiontune.invalid"]
        done = subprocess.run(
            ["git", *identity, *args], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    def commit(message: str, train: str, robustness: str) -> str:
        (tmp_path / "dvc.lock").write_text(
            "stages:\n"
            f"  train:\n    outs:\n    - path: models/model.pt\n      md5: {train}\n"
            f"  robustness:\n    deps:\n    - path: models/model.pt\n      md5: {robustness}\n"
        )
        git("add", "dvc.lock")
        git("commit", "-q", "-m", message)
        return git("rev-parse", "HEAD")

    git("init", "-q")
    commit("an older model", "0", "0")
    commit("a trial: train's model is its own, robustness's deps are stale", "1", md5)
    assert provenance(model, md5).revision is None  # the md5 is in a lock, not as train's
    assert provenance(model, md5).note.startswith("not committed: no commit's dvc.lock")
    trained = commit("trained this model", md5, md5)
    commit("later: another model, this one left as a stale dependency", "2", md5)
    assert provenance(model, md5).revision == trained  # not HEAD, not the trial
    monkeypatch.setenv("VISIONTUNE_REVISION", "from-docker-build")
    assert provenance(model, md5).revision == "from-docker-build"


def test_onnx_export_serves_the_same_labels(
    trained_model: Path, tmp_path: Path, held_out, expected_labels
) -> None:
    from visiontune.models.onnx_model import export_onnx

    model = tmp_path / "model.onnx"
    export_onnx(trained_model, model)
    pngs = [_tensor_png(image) for image in held_out[0]]
    with _serve(model, tmp_path / "server.log") as server:
        metadata = server.client.get("/metadata").json()
        assert (metadata["format"], metadata["model_name"]) == ("onnx", "cnn")
        assert metadata["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
        reference = torch.load(trained_model, weights_only=True)["reference"]
        assert metadata["reference"]["mean"] == reference["mean"]  # the export carries it
        assert _predict_batch(server, pngs) == expected_labels
        assert [_predict(server, png).json()["label"] for png in pngs[:10]] == expected_labels[:10]


def test_a_model_trained_before_references_serves_without_a_drift_score(
    trained_model: Path, tmp_path: Path, held_out, expected_labels
) -> None:
    checkpoint = torch.load(trained_model, weights_only=True)
    del checkpoint["reference"]
    old = tmp_path / "old.pt"
    torch.save(checkpoint, old)
    pngs = [_tensor_png(image) for image in held_out[0]]
    with _serve(old, tmp_path / "server.log") as server:
        assert server.client.get("/metadata").json()["reference"] is None
        assert _predict_batch(server, pngs) == expected_labels
        metrics = _metrics(server)
        assert metrics[("visiontune_input_drift_window_images", ())] == len(pngs)
        assert np.isnan(metrics[("visiontune_input_drift_score", ())])
