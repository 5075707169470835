"""The HTTP server under `llmql serve`: uvicorn's httptools protocol with a deadline for a request's headers.

uvicorn bounds the wait between requests (keep-alive) but not a request whose headers never finish: 5
connections that sent half a request were open and unanswered after 100 s. Here each request's headers must
arrive within `request_timeout_s` of its first byte (or of the connection, for the first request), else the
client gets a 408 and the connection is closed. The body's deadline is the app's (`middleware.BodyLimit`), which
answers in the route family's shape; before the headers there is no route, so this 408 is llmql's own shape.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def timeout_response(seconds: float) -> bytes:
    body = json.dumps({"detail": f"request headers not received within {seconds:g} s"}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def header_deadline_protocol(seconds: float, on_timeout=None) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn takes as `http=`, with this deadline for each request's headers;
    `on_timeout()` is called for each connection closed by it (the service counts them)."""

    class HeaderDeadline(HttpToolsProtocol):
        _deadline = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            idle = self.cycle is None or self.cycle.response_complete  # read before uvicorn starts the new cycle
            super().on_message_begin()
            self._in_headers = True
            if idle:  # a request pipelined behind one still being answered: its deadline starts after that one
                self._arm()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if getattr(self, "_in_headers", False):
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(seconds, self._late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _late(self) -> None:
            self._deadline = None
            answering = self.cycle is not None and not self.cycle.response_complete
            if not answering and not self.transport.is_closing():  # never cut into an answer still owed
                self.transport.write(timeout_response(seconds))
                self.transport.close()
                if on_timeout is not None:
                    on_timeout()

    return HeaderDeadline
