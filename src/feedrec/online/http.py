"""HTTP guards in front of the routes: body limits and timeouts, request arrival times, counting.

``Guard`` (plain ASGI: it costs microseconds per request) reads a request's whole body before the
app sees it, so the size limit holds however the body is sent (``Content-Length`` or chunked: a
chunked body is refused as soon as it passes the limit, not after it is buffered), and a client
that stops sending half-way is answered 408 after ``body_timeout_s``. It stamps each request with
its arrival time (``scope["state"]["arrived"]``, monotonic seconds), which admin actions and event
batches use as their deadline, and counts requests by route and status.

``TimedHttpToolsProtocol`` closes connections whose request line and headers do not arrive within
``header_timeout_s`` (uvicorn has no such timeout: a half-sent request held its connection open
forever).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_s: float,
        count: Callable[[Scope, int], None] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["arrived"] = time.monotonic()
        status = 500

        async def send_and_count(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = _declared_too_large(scope, self.max_body_bytes)
            if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
                body, refusal = await self._read_body(receive)
                if refusal is None:
                    receive = _replay(body, receive)
            if refusal is not None:
                code, detail = refusal
                await JSONResponse(status_code=code, content={"detail": detail})(scope, receive, send_and_count)
                return
            await self.app(scope, receive, send_and_count)
        finally:
            if self.count is not None:
                self.count(scope, status)

    async def _read_body(self, receive: Receive) -> tuple[bytes, tuple[int, str] | None]:
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return b"", (408, f"the request body did not arrive within {self.body_timeout_s:g} s")
            if message["type"] == "http.disconnect":
                return b"", (400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", (413, f"request body over the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _declared_too_large(scope: Scope, limit: int) -> tuple[int, str] | None:
    length = dict(scope["headers"]).get(b"content-length")
    if length is None:
        return None
    try:
        declared = int(length)
    except ValueError:
        return 400, "Content-Length is not a number"
    if declared > limit:
        return 413, f"request body of {declared} bytes is over the limit of {limit}"
    return None


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a timeout on the request line and headers."""

    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._arm()  # a kept-alive connection starting its next request
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._awaiting_headers = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True  # the next request on this connection (the keep-alive timer covers idling)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
