"""Untrusted input for the server: a request body limit and hardened image decoding."""

from __future__ import annotations

import io
import struct
import warnings

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visiontune.data.images import Loaded, convert

# Formats Pillow may open: common raster formats only (EPS, for one, would run Ghostscript).
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
# What Pillow raises while decoding a corrupt or truncated file.
_CORRUPT = (OSError, ValueError, SyntaxError, EOFError, struct.error)


def refuse_decompression_bombs() -> None:
    """Make Pillow's decompression-bomb warning an error in this process.

    A process-wide filter: ``warnings.catch_warnings`` is not thread-safe, and requests are
    decoded in worker threads.
    """
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def decode_image(data: bytes, channels: int, size: int, max_pixels: int) -> Loaded:
    """An uploaded file -> uint8 tensor (channels, size, size), as the preprocess stage
    converts it, with the upload's size bucket and mode.

    Raises HTTPException: 400 empty, corrupt or truncated; 413 more than ``max_pixels``
    pixels (checked on the header, before decoding); 415 not an image in ``FORMATS``.
    """
    if not data:
        raise HTTPException(400, "empty file")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise HTTPException(413, _too_many_pixels(width, height, max_pixels))
            return convert(image, channels, size)
    except UnidentifiedImageError:
        raise HTTPException(
            415, f"not an image in a supported format ({', '.join(FORMATS)})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise HTTPException(413, f"image refused as a decompression bomb: {exc}") from None
    except _CORRUPT as exc:
        raise HTTPException(400, f"corrupt or truncated image: {exc}") from None


def _too_many_pixels(width: int, height: int, limit: int) -> str:
    return f"image too large: {width}x{height} = {width * height} pixels, limit {limit}"


class BodySizeLimit:
    """ASGI middleware: answer 413 to a request body over ``max_bytes``, before reading it all.

    A declared Content-Length over the limit is refused without reading the body; a body sent
    without one (chunked) is counted as it arrives and refused once it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._detail()}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self) -> str:
        return f"request body too large: limit {self.max_bytes} bytes"
