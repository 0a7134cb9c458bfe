"""``POST /predict`` as a bare ASGI endpoint, in front of the FastAPI app that answers everything else.

FastAPI's path to an endpoint (its middleware, routing, dependency solving, request and response
objects) cost about 0.14 ms of CPU per request here, as much as decoding a one-row body; the
endpoint needs none of it: it reads the body from the ASGI messages, answers with orjson's bytes,
and turns a ``RequestError`` into its 4xx and anything else into a 500 for that request alone.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson

from deepfm.serving.rows import RequestError

DRAIN_BYTES = 1 << 30  # a refused body is read to its end up to this size, so that its sender reads the 413
JSON_HEADERS = [(b"content-type", b"application/json")]

Answer = Callable[[bytes], Awaitable[Any]]  # body -> the JSON-ready answer, or RequestError


class ClientGone(Exception):
    """The client disconnected before its body was read: nobody to answer."""


class PredictEndpoint:
    """ASGI: ``POST /predict`` answered by ``answer`` (bodies up to ``max_bytes``), the rest by ``app``."""

    def __init__(self, app: Any, answer: Answer, max_bytes: int, path: str = "/predict"):
        self.app, self.answer, self.max_bytes, self.path = app, answer, max_bytes, path
        self.state = app.state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            return await respond(send, 405, b'{"error":"use POST"}', ((b"allow", b"POST"),))
        try:
            status, content = 200, await self.answer(await read_body(scope, receive, self.max_bytes))
        except ClientGone:
            return
        except RequestError as error:
            status, content = error.status, {"error": error.message}
        except Exception as error:  # noqa: BLE001 - a 500 for this request alone; the server keeps serving
            status, content = 500, {"error": f"internal error: {type(error).__name__}: {error}"}
        await respond(send, status, orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY))


async def respond(send: Callable, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(scope: dict, receive: Callable, max_bytes: int) -> bytes:
    """The body, or a 413 once it is known to be longer than ``max_bytes`` (declared or not).

    A refused body is still read to its end (and thrown away, up to ``DRAIN_BYTES``) before the
    413 goes out: a client that sends its whole body before reading, or asks to close the
    connection, would otherwise get a connection reset instead of the answer."""
    declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
    too_long = None
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        too_long = f"the body has {declared.decode()} bytes; the limit is {max_bytes}"
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk, more = message.get("body", b""), message.get("more_body", False)
        size += len(chunk)
        if too_long is None and size > max_bytes:
            too_long, chunks = f"the body has over {max_bytes} bytes; the limit is {max_bytes}", []
        if too_long is None:
            chunks.append(chunk)
        elif size > DRAIN_BYTES:
            break  # not worth reading on: the connection is closed instead
    if too_long is not None:
        raise RequestError(413, too_long)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
