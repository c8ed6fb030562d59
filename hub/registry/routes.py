"""The Confluent Schema Registry REST API over a :class:`RegistryService`.

Paths, bodies, status codes and error bodies (``{"error_code": 40401, "message": ...}``) follow Confluent's,
so ``confluent_kafka``'s ``SchemaRegistryClient`` and Avro serializers, kcat and curl scripts written for
Confluent work unchanged. Request bodies are parsed here from raw bytes, so malformed JSON or a wrong
content type gets a Confluent 4xx rather than FastAPI's default; every parameter is read as text and
checked here too. Writes call ``authorize_write(request, subject)`` first when one is given.
"""

from __future__ import annotations

import http
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.registry.service import RegistryService
from hub.registry.state import (
    AVRO,
    EMPTY_SCHEMA_MESSAGE,
    INVALID_COMPATIBILITY_LEVEL,
    INVALID_MODE,
    INVALID_SCHEMA,
    OPERATION_NOT_PERMITTED,
    SUBJECT_NOT_FOUND,
    References,
    RegistryHTTPError,
    SchemaVersion,
    invalid_level,
    parse_references,
    parse_version,
    schema_not_found,
)

log = logging.getLogger("hub.registry")

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPTED_CONTENT_TYPES = frozenset({
    MEDIA_TYPE, "application/vnd.schemaregistry+json", "application/json", "application/octet-stream", "",
})
MAX_BODY_BYTES = 8 * 1024 * 1024
INVALID_PARAMETER = 422
NOT_FOUND_MESSAGE = "HTTP 404 Not Found"  # Jersey's answer when no resource matches
REGISTRY_ROOTS = frozenset(
    {"subjects", "schemas", "config", "mode", "compatibility", "associations", "contexts"}
)
_SCOPE_MARK = "hub.registry"
MODES = ("READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT")
INVALID_MODE_MESSAGE = "Invalid mode. Valid values are READWRITE, READONLY, and IMPORT."

AuthorizeWrite = Callable[[Request, str | None], Awaitable[Any]]
T = TypeVar("T")


class RegistryResponse(JSONResponse):
    """JSON with Confluent's media type, as every Confluent registry response has."""

    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:  # an unpaired surrogate echoed from the request: escape it
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _error(status: int, error_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error_code": error_code, "message": message}
    return RegistryResponse(body, status_code=status, headers=headers)


# ---------------------------------------------------------------- request parsing

def _flag(request: Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter in any case (Python clients send ``normalize=False``)."""
    raw = request.query_params.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise RegistryHTTPError(
        422, INVALID_PARAMETER, f"Query parameter '{name}' must be true or false, not '{raw[:40]}'"
    )


def _int_param(request: Request, name: str, default: int, minimum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise RegistryHTTPError(
            422, INVALID_PARAMETER,
            f"Query parameter '{name}' must be an integer >= {minimum}, not '{raw[:40]}'",
        )
    return value


def _page(request: Request, items: Sequence[T]) -> list[T]:
    """Confluent pagination: ``offset`` (default 0) and ``limit`` (-1 or absent: all)."""
    offset = _int_param(request, "offset", 0, 0)
    limit = _int_param(request, "limit", -1, -1)
    page = list(items)[offset:]
    return page[:limit] if limit > 0 else page


def _prefix(request: Request) -> str:
    prefix = request.query_params.get("subjectPrefix", "")
    return "" if prefix == ":*:" else prefix


_JAVA_INT = re.compile(r"[+-]?[0-9]+")


def _schema_id(text: str) -> int:
    """A path's schema id. As Confluent (a Java ``Integer`` path parameter): a 32-bit integer that is no
    id answers 40403 ``Schema <n> not found``; anything else is no route, a plain ``HTTP 404 Not Found``."""
    if not _JAVA_INT.fullmatch(text) or not -(2**31) <= int(text) <= 2**31 - 1:
        raise RegistryHTTPError(404, 404, NOT_FOUND_MESSAGE)
    value = int(text)
    if value < 1:
        raise schema_not_found(value)
    return value


async def _json_body(request: Request, error_code: int) -> dict[str, Any]:
    """The body as a JSON object, or a Confluent 415/413/422 saying what is wrong with it."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in ACCEPTED_CONTENT_TYPES:
        raise RegistryHTTPError(415, 415, "HTTP 415 Unsupported Media Type")  # Confluent's (Jersey's) text
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise RegistryHTTPError(413, 413, f"The request body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise RegistryHTTPError(422, error_code, "The request body is empty: send a JSON object")
    try:
        document = json.loads(raw)
    except RecursionError as exc:
        raise RegistryHTTPError(422, error_code, "The request body is nested too deeply") from exc
    except ValueError as exc:
        raise RegistryHTTPError(422, error_code, f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise RegistryHTTPError(
            422, error_code, f"The request body must be a JSON object, not a JSON {type(document).__name__}"
        )
    return document


def _schema_request(document: dict[str, Any]) -> tuple[str, str, int | None, References]:
    """(schema text, schema type, requested id, references) of a Confluent schema request body."""
    if "schema" not in document or document["schema"] is None:
        raise RegistryHTTPError(422, INVALID_SCHEMA, EMPTY_SCHEMA_MESSAGE)
    schema = document["schema"]
    if not isinstance(schema, str):
        raise RegistryHTTPError(
            422, INVALID_SCHEMA,
            f"'schema' must be a string holding the schema's JSON (JSON-encode it), not a JSON "
            f"{type(schema).__name__}",
        )
    schema_type = document.get("schemaType") or AVRO
    if not isinstance(schema_type, str):
        raise RegistryHTTPError(422, INVALID_SCHEMA, "'schemaType' must be a string such as \"AVRO\"")
    references = parse_references(document.get("references"))
    for unsupported in ("metadata", "ruleSet"):
        if document.get(unsupported):
            raise RegistryHTTPError(
                422, INVALID_SCHEMA, f"'{unsupported}' (data contracts) is not supported by this registry"
            )
    requested = document.get("id")
    if requested is not None and (
        not isinstance(requested, int) or isinstance(requested, bool) or requested < 1
    ):
        raise RegistryHTTPError(422, INVALID_SCHEMA, "'id' must be a positive integer")
    return schema, schema_type.upper(), requested, references


def _level_of(document: dict[str, Any]) -> object:
    if "compatibility" in document:
        return document["compatibility"]
    if "compatibilityLevel" in document:
        return document["compatibilityLevel"]
    raise invalid_level()  # Confluent: a missing level is an invalid one


def _version_body(entry: SchemaVersion) -> dict[str, Any]:
    return entry.response()


def _mark(request: Request) -> None:
    """Router dependency: tag the request so error handlers answer it with Confluent bodies."""
    request.scope[_SCOPE_MARK] = True


# ---------------------------------------------------------------- router

def registry_router(service: RegistryService, *, authorize_write: AuthorizeWrite | None = None) -> APIRouter:
    """Every Confluent Schema Registry endpoint the hub serves, over ``service``.

    ``authorize_write(request, subject)`` (subject None for global config/mode) is awaited before each
    write and denies by raising (e.g. ``HTTPException(401)`` or ``RegistryHTTPError``); reads stay open.
    """
    router = APIRouter(
        tags=["schema registry"], default_response_class=RegistryResponse, dependencies=[Depends(_mark)]
    )

    async def authorize(request: Request, subject: str | None) -> None:
        if authorize_write is not None:
            await authorize_write(request, subject)

    @router.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------ subjects

    @router.get("/subjects")
    async def list_subjects(request: Request) -> list[str]:
        """Subjects with a live version (``deleted``, ``deleted_only``, ``subjectPrefix``, paging)."""
        names = service.state.subject_names(
            deleted=_flag(request, "deleted"),
            deleted_only=_flag(request, "deleted_only") or _flag(request, "deletedOnly"),
            prefix=_prefix(request),
        )
        return _page(request, names)

    @router.post("/subjects/{subject:path}/versions")
    async def register(request: Request, subject: str) -> dict[str, Any]:
        """Register a schema under a subject (or return the existing version): ``{"id", "version"}``."""
        await authorize(request, subject)
        schema, schema_type, requested, references = _schema_request(await _json_body(request, INVALID_SCHEMA))
        normalize = _flag(request, "normalize")
        result = await service.register(
            subject, schema, schema_type=schema_type, normalize=normalize, schema_id=requested,
            references=references,
        )
        return {"id": result.id, "version": result.version}

    @router.get("/subjects/{subject:path}/versions")
    async def list_versions(request: Request, subject: str) -> list[int]:
        versions = service.state.versions(
            subject, deleted=_flag(request, "deleted"),
            deleted_only=_flag(request, "deleted_only") or _flag(request, "deletedOnly"),
        )
        return _page(request, versions)

    @router.get("/subjects/{subject:path}/versions/{version}/schema")
    async def version_schema(request: Request, subject: str, version: str) -> Response:
        """Only the schema text of one version, as raw JSON."""
        entry = service.state.get_version(subject, parse_version(version), deleted=_flag(request, "deleted"))
        return Response(entry.schema, media_type=MEDIA_TYPE)

    @router.get("/subjects/{subject:path}/versions/{version}/referencedby")
    async def referenced_by(request: Request, subject: str, version: str) -> list[int]:
        """Ids of the schemas referencing this version."""
        entry = service.state.get_version(subject, parse_version(version), deleted=True)
        return _page(request, service.state.referenced_by(subject, entry.version))

    @router.get("/subjects/{subject:path}/versions/{version}")
    async def get_version(request: Request, subject: str, version: str) -> dict[str, Any]:
        entry = service.state.get_version(subject, parse_version(version), deleted=_flag(request, "deleted"))
        return _version_body(entry)

    @router.delete("/subjects/{subject:path}/versions/{version}")
    async def delete_version(request: Request, subject: str, version: str) -> int:
        """Soft-delete a version; with ``permanent=true``, purge one that is soft-deleted."""
        await authorize(request, subject)
        spec = parse_version(version)
        return await service.delete_version(subject, spec, permanent=_flag(request, "permanent"))

    @router.get("/subjects/{subject:path}/metadata")
    async def latest_with_metadata(request: Request, subject: str) -> dict[str, Any]:
        """Latest version whose metadata matches ``key``/``value``: schemas here carry none."""
        entry = service.state.get_version(subject, "latest", deleted=_flag(request, "deleted"))
        if request.query_params.getlist("key"):
            raise schema_not_found()
        return _version_body(entry)

    @router.post("/subjects/{subject:path}")
    async def lookup(request: Request, subject: str) -> dict[str, Any]:
        """Which version of the subject holds this schema (40401 unknown subject, 40403 not there)."""
        schema, schema_type, _, references = _schema_request(await _json_body(request, INVALID_SCHEMA))
        deleted = _flag(request, "deleted")
        entry = service.state.lookup(
            subject, schema, schema_type=schema_type, deleted=deleted, references=references
        )
        return _version_body(entry)

    @router.delete("/subjects/{subject:path}")
    async def delete_subject(request: Request, subject: str) -> list[int]:
        """Soft-delete a subject; with ``permanent=true``, purge one that is soft-deleted."""
        await authorize(request, subject)
        return await service.delete_subject(subject, permanent=_flag(request, "permanent"))

    # ------------------------------------------------------------ schemas by id

    @router.get("/schemas")
    async def list_schemas(request: Request) -> list[dict[str, Any]]:
        """Every subject version (``subjectPrefix``, ``deleted``, ``latestOnly``, ``offset``/``limit``)."""
        state = service.state
        deleted, latest_only = _flag(request, "deleted"), _flag(request, "latestOnly")
        found: list[dict[str, Any]] = []
        for subject in state.subject_names(deleted=deleted, prefix=_prefix(request)):
            entries = [e for e in state.subjects.get(subject, {}).values() if deleted or not e.deleted]
            entries.sort(key=lambda e: e.version)
            found += [_version_body(e) for e in (entries[-1:] if latest_only else entries)]
        return _page(request, found)

    @router.get("/schemas/types")
    async def schema_types() -> list[str]:
        return [AVRO]

    @router.get("/schemas/ids/{schema_id}")
    async def schema_by_id(schema_id: str) -> dict[str, Any]:
        stored = service.state.schema_by_id(_schema_id(schema_id))
        body: dict[str, Any] = {"schema": stored.schema}
        if stored.schema_type != AVRO:
            body["schemaType"] = stored.schema_type
        if stored.references:
            body["references"] = [r.body() for r in stored.references]
        return body

    @router.get("/schemas/ids/{schema_id}/schema")
    async def raw_schema_by_id(schema_id: str) -> Response:
        return Response(service.state.schema_by_id(_schema_id(schema_id)).schema, media_type=MEDIA_TYPE)

    @router.get("/schemas/ids/{schema_id}/versions")
    async def id_versions(request: Request, schema_id: str) -> list[dict[str, Any]]:
        entries = service.state.id_versions(_schema_id(schema_id), deleted=_flag(request, "deleted"))
        return _page(request, [{"subject": e.subject, "version": e.version} for e in entries])

    @router.get("/schemas/ids/{schema_id}/subjects")
    async def id_subjects(request: Request, schema_id: str) -> list[str]:
        subjects = service.state.id_subjects(_schema_id(schema_id), deleted=_flag(request, "deleted"))
        wanted = request.query_params.get("subject")
        return _page(request, [s for s in subjects if wanted is None or s == wanted])

    @router.get("/schemas/guids/{guid}")
    async def schema_by_guid(guid: str) -> dict[str, Any]:
        raise schema_not_found(guid)  # this registry names schemas by id only

    # ------------------------------------------------------------ compatibility

    async def _test(request: Request, subject: str, version: str | None) -> dict[str, Any]:
        spec = parse_version(version) if version is not None else None
        schema, schema_type, _, references = _schema_request(await _json_body(request, INVALID_SCHEMA))
        result = service.state.check_compatibility(
            subject, schema, spec, schema_type=schema_type, references=references
        )
        body: dict[str, Any] = {"is_compatible": result.compatible}
        if _flag(request, "verbose"):
            body["messages"] = list(result.messages)
        return body

    @router.post("/compatibility/subjects/{subject:path}/versions/{version}")
    async def test_compatibility(request: Request, subject: str, version: str) -> dict[str, Any]:
        """Would this schema pass the subject's level against that version (``latest``: as registering)?"""
        return await _test(request, subject, version)

    @router.post("/compatibility/subjects/{subject:path}/versions")
    async def test_compatibility_all(request: Request, subject: str) -> dict[str, Any]:
        """Would this schema pass the subject's level against its versions, as registering would?"""
        return await _test(request, subject, None)

    # ------------------------------------------------------------ config

    @router.get("/config")
    async def get_global_config() -> dict[str, Any]:
        return {"compatibilityLevel": service.state.effective_level(None)}

    @router.put("/config")
    async def put_global_config(request: Request) -> dict[str, Any]:
        await authorize(request, None)
        level = _level_of(await _json_body(request, INVALID_COMPATIBILITY_LEVEL))
        return {"compatibility": await service.set_config(None, level)}

    @router.delete("/config")
    async def delete_global_config(request: Request) -> dict[str, Any]:
        await authorize(request, None)
        return {"compatibilityLevel": await service.delete_config(None)}

    @router.get("/config/{subject:path}")
    async def get_subject_config(request: Request, subject: str) -> dict[str, Any]:
        """A subject's own level; 40408 if it has none, unless ``defaultToGlobal=true``."""
        level = service.state.subject_level(subject, default_to_global=_flag(request, "defaultToGlobal"))
        return {"compatibilityLevel": level}

    @router.put("/config/{subject:path}")
    async def put_subject_config(request: Request, subject: str) -> dict[str, Any]:
        await authorize(request, subject)
        level = _level_of(await _json_body(request, INVALID_COMPATIBILITY_LEVEL))
        return {"compatibility": await service.set_config(subject, level)}

    @router.delete("/config/{subject:path}")
    async def delete_subject_config(request: Request, subject: str) -> dict[str, Any]:
        await authorize(request, subject)
        return {"compatibilityLevel": await service.delete_config(subject)}

    # ------------------------------------------------------------ mode (always READWRITE)

    async def _put_mode(request: Request, subject: str | None) -> dict[str, Any]:
        await authorize(request, subject)
        document = await _json_body(request, INVALID_MODE)
        mode = document.get("mode")
        name = mode.strip().upper() if isinstance(mode, str) else None
        if name not in MODES:
            raise RegistryHTTPError(422, INVALID_MODE, INVALID_MODE_MESSAGE)
        if name != "READWRITE":
            raise RegistryHTTPError(
                422, OPERATION_NOT_PERMITTED, f"Mode {name} is not supported: this registry is READWRITE"
            )
        return {"mode": name}

    @router.get("/mode")
    async def get_mode() -> dict[str, Any]:
        return {"mode": "READWRITE"}

    @router.put("/mode")
    async def put_mode(request: Request) -> dict[str, Any]:
        return await _put_mode(request, None)

    @router.get("/mode/{subject:path}")
    async def get_subject_mode(subject: str) -> dict[str, Any]:
        return {"mode": "READWRITE"}

    @router.put("/mode/{subject:path}")
    async def put_subject_mode(request: Request, subject: str) -> dict[str, Any]:
        return await _put_mode(request, subject)

    @router.delete("/mode/{subject:path}")
    async def delete_subject_mode(request: Request, subject: str) -> dict[str, Any]:
        await authorize(request, subject)
        return {"mode": "READWRITE"}

    # ------------------------------------------------------------ contexts, associations

    @router.get("/contexts")
    async def contexts() -> list[str]:
        return ["."]

    @router.api_route("/associations", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
    @router.api_route(
        "/associations/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False
    )
    async def associations() -> Response:
        """No topic-subject associations here: 404 makes Confluent serializers use their fallback strategy."""
        return _error(
            404, SUBJECT_NOT_FOUND,
            "No associations: this registry does not support associations; use the topic name strategy "
            "({topic}-value)",
        )

    return router


# ---------------------------------------------------------------- error handling

def _is_registry_request(request: Request) -> bool:
    if request.scope.get(_SCOPE_MARK):
        return True
    path = request.url.path
    root_path = request.scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    first = path.lstrip("/").split("/", 1)[0]
    return first in REGISTRY_ROOTS


async def _registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryHTTPError)
    return _error(exc.status, exc.error_code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if not _is_registry_request(request):
        return await http_exception_handler(request, exc)
    headers = dict(exc.headers) if exc.headers else None
    message = str(exc.detail)
    try:
        phrase = http.HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = None
    if message == phrase:  # the framework's own answer (no route, wrong method): Jersey's wording
        message = f"HTTP {exc.status_code} {phrase}"
    return _error(exc.status_code, exc.status_code, message, headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not _is_registry_request(request):
        return await request_validation_exception_handler(request, exc)
    return _error(422, INVALID_PARAMETER, f"Invalid request: {exc.errors()}")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
    message = f"Internal error: {type(exc).__name__}"
    if _is_registry_request(request):
        return _error(500, 50001, message)
    return JSONResponse({"detail": message}, status_code=500)


def is_registry_request(request: Request) -> bool:
    """Whether a request is for the registry (answered with Confluent error bodies)."""
    return _is_registry_request(request)


# The registry's answers to framework exceptions, for an app that installs handlers of its own for other paths.
REGISTRY_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    StarletteHTTPException: _http_error, RequestValidationError: _validation_error, Exception: _unexpected,
}


def install_registry_error_handlers(app: FastAPI) -> None:
    """Make registry errors Confluent bodies (``{"error_code", "message"}``) with their 4xx status.

    Covers :class:`RegistryHTTPError`, Starlette/FastAPI HTTP exceptions (404/405/401 raised by routing or
    ``authorize_write``, keeping their headers) and validation errors on registry paths; other paths keep
    FastAPI's default bodies. An unexpected exception is logged and answered with a JSON body.
    """
    app.add_exception_handler(RegistryHTTPError, _registry_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
