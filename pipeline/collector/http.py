"""HTTP details of the Tracking API: answers, write keys, bodies, CORS (DESIGN section 13)."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

# Segment's limit: a request over 500 KiB is refused whole (413), before or after gunzip.
MAX_REQUEST_BYTES = 500 * 1024
OK_BODY = b'{"success":true}'
JSON = "application/json"
# Browsers send cross-origin: every answer carries CORS headers, so an SDK can read a 429's
# Retry-After as well as a 200. Write keys are public in a web page anyway: any origin.
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
DEFAULT_ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization, AnonymousId"


class Refusal(Exception):
    """An answer other than 200, raised where the request is found wanting."""

    def __init__(self, status: int, error: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.headers = headers

    def response(self) -> web.Response:
        return answer(self.status, self.error, self.headers)


def answer(
    status: int = 200, error: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``{"success": true}``, or ``{"success": false, "error": ...}``."""
    body = OK_BODY if error is None else orjson.dumps({"success": False, "error": error})
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


def basic_key(header: str | None) -> str | None:
    """The write key of ``Authorization: Basic base64(key:)``, or None without one.

    Any other scheme is ignored (the key may be in the body); a Basic header that does not
    decode is refused, 401.
    """
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Refusal(401, "the Basic Authorization header does not decode") from None
    return decoded.partition(":")[0] or None


def body_key(body: dict[str, Any], calls: list[Any]) -> str | None:
    """``writeKey`` of the body, else of the first call (browser SDKs put it there)."""
    key = body.get("writeKey")
    if key is None and calls and isinstance(calls[0], dict) and calls[0] is not body:
        key = calls[0].get("writeKey")
    return key if isinstance(key, str) and key else None


def decode_body(raw: bytes, encoding: str | None) -> tuple[Any, int]:
    """The JSON of a request body (gzip or not; any Content-Type: browsers send text/plain),
    and its size in bytes once decompressed."""
    coding = (encoding or "identity").strip().lower()
    if coding in ("gzip", "x-gzip", "deflate"):
        raw = inflate(raw)
    elif coding not in ("identity", ""):
        raise Refusal(400, "unsupported Content-Encoding: use gzip or none")
    if not raw.strip():
        raise Refusal(400, "the body is empty")
    try:
        return orjson.loads(raw), len(raw)
    except orjson.JSONDecodeError:
        raise Refusal(400, "the body is not JSON") from None


def inflate(raw: bytes) -> bytes:
    """Decompressed gzip (or zlib/raw deflate), refused past ``MAX_REQUEST_BYTES``: a small
    compressed body must not expand into a memory problem."""
    for wbits in (47, -15):  # 47: gzip or zlib header, detected; -15: raw deflate
        inflater = zlib.decompressobj(wbits=wbits)
        try:
            data = inflater.decompress(raw, MAX_REQUEST_BYTES + 1)
        except zlib.error:
            continue
        if len(data) > MAX_REQUEST_BYTES:
            raise Refusal(413, "the request is over 500 KiB once decompressed")
        if not inflater.eof:
            raise Refusal(400, "the compressed body is cut short")
        return data
    raise Refusal(400, "the body is not valid gzip")


async def add_cors(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CORS headers on every answer, errors included."""
    origin = request.headers.get("Origin")
    headers = response.headers
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
        headers["Vary"] = "Origin"
    else:
        headers["Access-Control-Allow-Origin"] = "*"
    headers["Access-Control-Expose-Headers"] = "Retry-After"


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight (``OPTIONS``): any origin, the headers the browser asks for."""
    asked = request.headers.get("Access-Control-Request-Headers")
    headers = {
        **PREFLIGHT_HEADERS,
        "Access-Control-Allow-Headers": asked or DEFAULT_ALLOWED_HEADERS,
    }
    return web.Response(status=204, headers=headers)
