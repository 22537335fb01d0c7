"""Smoke test of a served registered version (the deploy workflow's last step): wait for
``/health``, check that ``/metadata`` reports the version and stage deployed, and classify one
image of the size the model takes. Exits non-zero with one line on the first failure.

    python docker/smoke_test.py http://127.0.0.1:8000 --version v1.2.0 --stage prod
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

from PIL import Image

# The API's own address, never through a proxy the environment may name.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> dict:
    with OPENER.open(url, timeout=10) as response:
        return json.load(response)


def wait_for_health(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(f"{base}/health").get("status") == "ok":
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"smoke test: {base}/health not ok after {timeout:g} s")
        time.sleep(1)


def predict_one(base: str, channels: int, size: int) -> dict:
    """POST one grey image of the model's input size to /predict as multipart form data."""
    image = Image.new("L" if channels == 1 else "RGB", (size, size), color=128)
    png = io.BytesIO()
    image.save(png, format="PNG")
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="grey.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{base}/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with OPENER.open(request, timeout=30) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the API's base URL")
    parser.add_argument("--version", required=True, help="the registered version deployed")
    parser.add_argument("--stage", help="the stage it was deployed for")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for /health")
    args = parser.parse_args()
    base = args.url.rstrip("/")
    try:
        wait_for_health(base, args.timeout)
        metadata = get(f"{base}/metadata")
        registry = metadata.get("registry") or {}
        if registry.get("version") != args.version:
            raise SystemExit(f"smoke test: serves {registry.get('version')}, not {args.version}")
        if args.stage and args.stage not in registry.get("stages", []):
            raise SystemExit(f"smoke test: {args.version} is not in stage {args.stage}")
        prediction = predict_one(base, metadata["channels"], metadata["image_size"])
    except urllib.error.URLError as exc:
        raise SystemExit(f"smoke test: {exc}") from None
    if prediction.get("label") not in metadata["classes"]:
        raise SystemExit(f"smoke test: /predict answered {prediction}")
    print(
        f"smoke test passed: {registry['artifact']} {args.version} at {registry['rev'][:7]}, "
        f"/predict -> {prediction['label']} ({prediction['probability']:.3f})"
    )


if __name__ == "__main__":
    sys.exit(main())
