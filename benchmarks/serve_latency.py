"""Serving latency and throughput as ratios to the bare model, measured in one run.

Starts `visiontune serve` on a loopback port and sends --requests POST /predict requests (one
PNG each) from --clients client threads; reports p50/p99 latency and throughput. Each is
divided by the bare model's time for one image (the predictor's ``probabilities`` on a ready
uint8 array, in this process): latency / bare is how many bare forwards a request costs,
throughput x bare is the fraction of the bare single-image rate the server reaches. Measures
the torch checkpoint and its ONNX export. Clients and server share this machine's cores.

Usage: python benchmarks/serve_latency.py [--model models/model.pt] [--requests 200]
                                         [--clients 8] [--threads 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from visiontune.models.onnx_model import export_onnx
from visiontune.serving.predictors import Predictor, load_predictor

WARM_UP = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument(
        "--threads", type=int, default=0, help="inference threads, as `serve --threads`"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model if args.model.is_file() else _train_quick_model(Path(tmp))
        onnx = Path(tmp, "model.onnx")
        export_onnx(model, onnx)
        meta = load_predictor(model, args.threads).meta
        rows = [row for path in (model, onnx) for row in _measure(path, args)]
    print(
        f"model={model} ({meta.params.model.name}, {meta.channels}x"
        f"{meta.image_size}x{meta.image_size} input), {args.requests} requests per row, "
        f"{os.cpu_count()} CPU cores shared by clients and server, --threads {args.threads}"
    )
    print(
        f"{'format':8s}{'clients':>8s}{'bare 1 image':>14s}{'p50':>10s}{'p99':>10s}"
        f"{'throughput':>14s}{'p50/bare':>10s}{'p99/bare':>10s}{'thr x bare':>12s}"
    )
    for name, clients, bare, p50, p99, rate in rows:
        print(
            f"{name:8s}{clients:8d}{bare * 1e3:11.3f} ms{p50 * 1e3:7.2f} ms{p99 * 1e3:7.2f} ms"
            f"{rate:9.0f} req/s{p50 / bare:10.1f}{p99 / bare:10.1f}{rate * bare:12.3f}"
        )


def _measure(model: Path, args: argparse.Namespace) -> list[tuple]:
    """Rows (format, clients, bare s per image, p50 s, p99 s, requests/s), 1 then --clients."""
    predictor = load_predictor(model, args.threads)
    image = _random_image(predictor)
    bare = _bare_seconds(predictor, image)
    png = _png(image[0])
    rows = []
    with _server(model, args.threads) as client:
        for _ in range(WARM_UP):
            _post(client, png)
        for clients in (1, args.clients):
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                latencies = list(pool.map(lambda _: _post(client, png), range(args.requests)))
            rate = args.requests / (time.perf_counter() - start)
            p50, p99 = np.percentile(latencies, [50, 99])
            rows.append((predictor.format, clients, bare, p50, p99, rate))
    return rows


def _bare_seconds(predictor: Predictor, image: np.ndarray, repeats: int = 500) -> float:
    """Median time of the predictor on one ready image, after a warm-up."""
    for _ in range(WARM_UP):
        predictor.probabilities(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.probabilities(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _post(client: httpx.Client, png: bytes) -> float:
    start = time.perf_counter()
    response = client.post("/predict", files={"file": ("image.png", png)})
    seconds = time.perf_counter() - start
    response.raise_for_status()
    return seconds


@contextlib.contextmanager
def _server(model: Path, threads: int) -> Iterator[httpx.Client]:
    """`visiontune serve` on a free loopback port; a client for it, once /health answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "visiontune", "serve", "--model", str(model)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--threads", str(threads)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # TCP_NODELAY, as curl and browsers set it: without it Nagle's algorithm holds the
    # multipart body back until the headers are acknowledged (tens of ms on loopback).
    transport = httpx.HTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        limits=httpx.Limits(max_connections=64),
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=60, transport=transport, trust_env=False
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health").status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"`{' '.join(command)}` did not start")
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)


def _random_image(predictor: Predictor) -> np.ndarray:
    """One seeded random uint8 image (1, C, S, S) of the model's input shape."""
    meta = predictor.meta
    shape = (1, meta.channels, meta.image_size, meta.image_size)
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    """A (C, S, S) uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image.transpose(1, 2, 0).squeeze(-1)).save(buffer, "PNG")
    return buffer.getvalue()


def _train_quick_model(tmp: Path) -> Path:
    """No models/model.pt here: train the default model for 3 epochs on digits."""
    from visiontune.config.params import parse_params
    from visiontune.data.download import download
    from visiontune.data.preprocess import prepare
    from visiontune.models.checkpoint import save_checkpoint
    from visiontune.training.fit import fit

    params = parse_params({"train": {"epochs": 3}})
    download(params.data.source, tmp / "raw")
    prepare(tmp / "raw", tmp / "prepared", params.data)
    fitted = fit(params, tmp / "prepared")
    path = tmp / "model.pt"
    save_checkpoint(path, fitted.model, fitted.meta)
    return path


if __name__ == "__main__":
    main()
