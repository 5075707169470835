"""The service's ASGI middleware: what every request passes through before and after its route.

`RequestContext` (outermost) gives each request an id (the client's `X-Request-ID`, else a new one), returns it
on every answer, and turns an error no handler knows into a 500 in the route family's shape, logged once with
its traceback and the id: never Starlette's plain-text `Internal Server Error`. `BodyLimit` bounds every body
(its size, its deadline, its type) before any of it is parsed.
"""

from __future__ import annotations

import logging
import time
import uuid

from llmql.plugin.http_errors import error_response
from llmql.plugin.service_logs import access, route_of

log = logging.getLogger(__name__)
REQUEST_ID = "x-request-id"
MAX_REQUEST_ID = 128  # a longer or non-printable client id is replaced, not echoed


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's request id when it is a short printable ASCII string, else a new one."""
    sent = dict(headers).get(REQUEST_ID.encode(), b"")
    try:
        text = sent.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return text if 0 < len(text) <= MAX_REQUEST_ID and text.isprintable() else uuid.uuid4().hex


class RequestContext:
    """Request id, the 500 mapping, and per request one access line and the metrics (`metrics`: a
    `ServiceMetrics`, or None)."""

    def __init__(self, app, metrics=None):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = request_id_of(scope.get("headers", []))
        scope.setdefault("state", {})["request_id"] = rid
        begun, status, started = time.perf_counter(), 500, False

        async def tagged(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (REQUEST_ID.encode(), rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        except Exception:
            log.exception(
                "unexpected error in %s %s (request %s)",
                scope.get("method"),
                scope.get("path"),
                rid,
                extra={"request_id": rid},
            )
            if started:  # the answer is half sent: nothing can be said in its place
                raise
            message = f"internal error (request {rid}); the service logged it"
            await error_response(scope.get("path", ""), 500, message)(scope, receive, tagged)
        finally:
            seconds = time.perf_counter() - begun
            access(rid, scope, status, seconds)
            if self.metrics is not None and scope.get("path") != "/metrics":
                self.metrics.observe_request(route_of(scope), status, seconds)


JSON_TYPES = (b"application/json", b"+json")  # application/json, application/problem+json, ...


def is_json(content_type: bytes | None) -> bool:
    media = (content_type or b"").split(b";")[0].strip().lower()
    return media == JSON_TYPES[0] or media.endswith(JSON_TYPES[1])


class BodyLimit:
    """ASGI middleware: every request body is read here, whole, before its route sees it, and bounded: over
    `limit` bytes is a 413 (declared in Content-Length or streamed in chunks without one: no more is ever
    buffered), not all there within `deadline_s` a 408, and a body that is not declared JSON a 415 (routes take
    JSON only; FastAPI would otherwise parse a body of any declared type, or of none, as JSON)."""

    def __init__(self, app, limit: int, deadline_s: float = 30.0):
        self.app = app
        self.limit = limit
        self.deadline_s = deadline_s

    async def __call__(self, scope, receive, send):
        import anyio

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and not declared.strip().isdigit():
            return await self._refuse(scope, receive, send, 400, "invalid Content-Length header")
        if declared is not None and int(declared) > self.limit:
            return await self._refuse(scope, receive, send, 413, f"request body over {self.limit} bytes")
        has_body = (declared is not None and int(declared) > 0) or b"transfer-encoding" in headers
        if has_body and not is_json(headers.get(b"content-type")):
            sent = (headers.get(b"content-type") or b"none").decode("latin-1")
            return await self._refuse(
                scope, receive, send, 415, f"the body must be JSON (Content-Type: application/json), not {sent}"
            )
        messages, size = [], 0
        try:
            with anyio.fail_after(self.deadline_s):
                while True:
                    message = await receive()
                    messages.append(message)
                    if message["type"] != "http.request":
                        break
                    size += len(message.get("body", b""))
                    if size > self.limit:
                        return await self._refuse(scope, receive, send, 413, f"request body over {self.limit} bytes")
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = f"request body not received within {self.deadline_s:g} s"
            return await self._refuse(scope, receive, send, 408, detail)

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, detail: str) -> None:
        await error_response(scope.get("path", ""), status, detail)(scope, receive, send)
