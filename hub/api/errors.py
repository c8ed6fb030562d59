"""Error bodies of the control plane: every 4xx is JSON ``{"code": ..., "message": ...}`` saying what is wrong.

Registry paths keep Confluent's bodies (``hub.registry.routes``); everything else answers here:

* :class:`hub.control.errors.ControlError` -> its status (401 with a ``WWW-Authenticate`` challenge, 429 with
  ``Retry-After``; a 403 is also audited through ``app.state.on_forbidden`` when the app sets one);
* a body that is not JSON -> 415, malformed JSON -> 400, JSON failing the request model -> 422 listing each
  field and what is wrong with it (``errors`` holds the same, machine-readable);
* unknown path -> 404, wrong method -> 405;
* the control topics unreachable -> 503 (504 on a read-back timeout).

Anything else is a bug: logged with its traceback and answered 500 with a JSON body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.api.auth import CHALLENGE
from hub.broker.topicstore import StoreError
from hub.control.errors import ControlError, TooManyRequests, UnsupportedMediaType
from hub.registry.routes import REGISTRY_HANDLERS, install_registry_error_handlers, is_registry_request

log = logging.getLogger("hub.api")

JSON_MEDIA_TYPES = ("application/json",)
_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
    429: "too_many_requests",
}


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": CHALLENGE} if status == 401 else None
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status, headers=headers)


async def _control_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControlError)
    if exc.status == 403:  # a refused act is a decision: audited (hub.api.auth.Authenticator.on_forbidden)
        on_forbidden = getattr(request.app.state, "on_forbidden", None)
        if on_forbidden is not None:
            await on_forbidden(request, exc)
    response = error_response(exc.status, exc.code, exc.message)
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _store_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreError)
    code = "timeout" if exc.status == 504 else "unavailable"
    return error_response(exc.status, code, f"{exc.message}; retry shortly")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if is_registry_request(request):
        return await REGISTRY_HANDLERS[StarletteHTTPException](request, exc)
    status = exc.status_code
    message = str(exc.detail)
    if status == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path} (the API is described at /v1/openapi.json)"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path} (see /v1/openapi.json)"
    elif status == 400 and message == "There was an error parsing the body":
        message = "the request body could not be read as JSON (is it UTF-8?)"
    response = error_response(status, _HTTP_CODES.get(status, f"http_{status}"), message)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def _where(loc: Any) -> str:
    parts = [str(p) for p in (loc or ())]
    if parts and parts[0] in ("body", "query", "path", "header"):
        head, rest = parts[0], parts[1:]
        return f"{head} {'.'.join(rest)}" if rest else head
    return ".".join(parts) or "request"


def _describe(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    loc = tuple(error.get("loc") or ())
    if kind == "missing" and loc == ("body",):
        return "the request body is missing: send a JSON object"
    if kind == "extra_forbidden":
        return f"{_where(loc)}: unknown field (not part of this request)"
    if kind == "missing":
        return f"{_where(loc)}: required field is missing"
    if kind in ("model_attributes_type", "dict_type") and loc == ("body",):
        return "the request body must be a JSON object"
    return f"{_where(loc)}: {error.get('msg', 'invalid')}"


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if is_registry_request(request):
        return await REGISTRY_HANDLERS[RequestValidationError](request, exc)
    errors = list(exc.errors())
    invalid_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if invalid_json is not None:
        ctx = invalid_json.get("ctx") or {}
        position = (invalid_json.get("loc") or ("body", "?"))[-1]
        return error_response(
            400, "invalid_json", f"the request body is not valid JSON: {ctx.get('error', 'parse error')} "
            f"(at character {position})",
        )
    details = [{"loc": [str(p) for p in e.get("loc") or ()], "message": _describe(e), "type": e.get("type")}
               for e in errors]
    message = "; ".join(d["message"] for d in details) or "invalid request"
    return error_response(422, "invalid_request", message, errors=details)


async def _unexpected(request: Request, exc: Exception) -> Response:
    if is_registry_request(request):
        return await REGISTRY_HANDLERS[Exception](request, exc)
    log.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the hub's log")


def install_api_error_handlers(app: FastAPI) -> None:
    """Registry errors as Confluent bodies, everything else as ``{"code", "message"}`` (see module doc)."""
    install_registry_error_handlers(app)
    app.add_exception_handler(ControlError, _control_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


async def require_json(request: Request) -> None:
    """Route dependency: a request that has a body must send it as JSON (415 otherwise)."""
    if request.method not in ("POST", "PUT", "PATCH") or not (await request.body()).strip():
        return
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media in JSON_MEDIA_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(
        "unsupported_media_type", "the request body must be JSON (Content-Type: application/json), not "
        f"{content_type[:80] or 'a body without a Content-Type'}",
    )
