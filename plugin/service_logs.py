"""The service's logs: one JSON object a line, access and error lines alike, each carrying its request id, so a
log pipeline (Loki, Elasticsearch, CloudWatch) takes them without a parser of its own.

    {"time": "...", "level": "INFO", "logger": "llmql.access", "request_id": "...", "method": "POST",
     "path": "/search", "route": "/search", "status": 200, "duration_ms": 12.3, "client": "127.0.0.1"}
    {"time": "...", "level": "ERROR", "logger": "llmql.plugin.middleware", "request_id": "...",
     "message": "unexpected error in POST /search", "traceback": "Traceback (most recent call last): ..."}
"""

from __future__ import annotations

import json
import logging
import time

ACCESS = logging.getLogger("llmql.access")
FIELDS = ("request_id", "method", "path", "route", "status", "duration_ms", "client")


class JsonLines(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, the request's fields given as `extra`,
    and the traceback of an exception, if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_as_json_lines(level: int = logging.INFO) -> None:
    """Every log line of the process on stderr as JSON (`llmql serve`): one handler on the root logger, which
    llmql's and uvicorn's loggers propagate to (uvicorn's own access log is off: the access lines are llmql's,
    which carry the request id). Idempotent, and it leaves other handlers (a test's capture) in place."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonLines) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLines())
        root.addHandler(handler)
    for name in ("llmql", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(level)


def access(request_id: str, scope: dict, status: int, seconds: float) -> None:
    client = scope.get("client")
    ACCESS.info(
        "%s %s %d",
        scope.get("method"),
        scope.get("path"),
        status,
        extra={
            "request_id": request_id,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "route": route_of(scope),
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "client": client[0] if client else None,
        },
    )


def route_of(scope: dict) -> str:
    """The route template that served the request ("/search"), never the raw path (ids would explode the
    metric's labels); "unmatched" for a path no route has."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
