"""The service's one error mapping: what each failure answers, in the shape its route family's clients read.

    /v1/embeddings, /v1/models   OpenAI's {"error": {"message", "type", "param", "code"}}
    /v1/rerank                   Cohere's {"message"} (the shape Cohere, Jina and their clients share)
    every other route            {"detail"} (FastAPI's own)

Statuses: a request the service refuses 4xx (422 for input the library refuses, 413 for a body over the limit),
an unreachable engine or a full model queue 503 with Retry-After, an unknown index 404, any other engine error
502; never a bare 500 with a traceback.
"""

from __future__ import annotations

from llmql.connectors.base import BackendError, BackendUnavailable, UnknownIndex
from llmql.plugin.batcher import Overloaded

OPENAI_ROUTES = ("/v1/embeddings", "/v1/models")
COHERE_ROUTES = ("/v1/rerank",)


def error_body(path: str, status: int, message: str) -> dict:
    """The error as the route's clients expect it."""
    if path.startswith(OPENAI_ROUTES):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
    if path.startswith(COHERE_ROUTES):
        return {"message": message}
    return {"detail": message}


def error_response(path: str, status: int, message: str, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(path, status, message), status_code=status, headers=headers)


def add_error_handlers(app) -> None:
    """Every failure a route can meet becomes an answer in its family's shape."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException  # FastAPI's and Starlette's own (a body that is not UTF-8)

    async def http_error(request, err: HTTPException):
        return error_response(request.url.path, err.status_code, str(err.detail), getattr(err, "headers", None))

    async def invalid(request, err: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in err.errors())
        return error_response(request.url.path, 422, problems)

    async def backend_error(request, err: BackendError):
        status = 503 if isinstance(err, BackendUnavailable) else 404 if isinstance(err, UnknownIndex) else 502
        return error_response(request.url.path, status, str(err), {"Retry-After": "5"} if status == 503 else None)

    async def refused_input(request, err: ValueError):
        return error_response(request.url.path, 422, str(err))

    async def overloaded(request, err: Overloaded):
        return error_response(request.url.path, 503, str(err), {"Retry-After": "1"})

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(BackendError, backend_error)
    app.add_exception_handler(ValueError, refused_input)
    app.add_exception_handler(Overloaded, overloaded)
