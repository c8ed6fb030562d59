"""The hub workers' only way to the schema registry: the Confluent REST protocol, with a client-side cache.

It speaks only endpoints every Confluent-compatible registry has (Confluent's own, the hub's, Apicurio's
``/apis/ccompat/v7``), so ``HUB_REGISTRY_URL`` can point the hub at any of them. Schemas by id are cached
forever (ids are immutable); a subject's ids are cached until asked to refresh.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from hub.registry.framing import inline_references, named_types, parse_schema

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
_RETRIABLE = frozenset({408, 429, 500, 502, 503, 504})


class RegistryClientError(Exception):
    """The registry refused a request (``status`` 0: unreachable), with Confluent's code and message."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(f"{status} ({error_code}): {message}")
        self.status = status
        self.error_code = error_code
        self.message = message


class SchemaNotFound(RegistryClientError):
    """404: no such subject (40401), version (40402) or schema id (40403)."""


@dataclass(frozen=True)
class RegisteredSchema:
    """A schema by its global id: the text as the registry serves it and its fastavro-parsed form.

    ``references`` are its Confluent references (``{name, subject, version}``); ``parsed`` knows the named
    types they define.
    """

    id: int
    schema_str: str
    parsed: Any = field(compare=False, repr=False)
    references: tuple[tuple[str, str, int], ...] = ()


class RegistryClient:
    """Async Confluent Schema Registry client (httpx) with the caches the hot path needs."""

    def __init__(
        self, url: str, *, auth: tuple[str, str] | None = None, token: str | None = None, timeout: float = 10,
        retries: int = 2, transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``auth`` (user, password) sends HTTP Basic, as Confluent clients' ``basic.auth.user.info`` does;
        ``token`` sends ``Authorization: Bearer <token>``. The hub's registry needs either for writes
        (node id + node token, or the operator token); reads are open."""
        if auth and token:
            raise ValueError("give auth (HTTP Basic) or token (Bearer), not both")
        self.url = url.rstrip("/")
        self.retries = retries
        headers = {"Accept": f"{MEDIA_TYPE}, application/vnd.schemaregistry+json, application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.url, auth=httpx.BasicAuth(*auth) if auth else None, timeout=timeout, headers=headers,
            transport=transport,
        )
        self._by_id: dict[int, RegisteredSchema] = {}
        self._subject_ids: dict[str, frozenset[int]] = {}
        self._registered: dict[tuple[str, str], int] = {}
        self._versions: dict[tuple[str, int], dict[str, Any]] = {}

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------ HTTP

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call, retried on transient failures; Confluent error bodies become RegistryClientError."""
        content = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": MEDIA_TYPE} if body is not None else None
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, content=content, headers=headers)
            except httpx.HTTPError as exc:
                if attempt < self.retries:
                    attempt += 1
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                reason = f"cannot reach the schema registry at {self.url}: {exc}"
                raise RegistryClientError(0, -1, reason) from exc
            if response.status_code in _RETRIABLE and attempt < self.retries:
                attempt += 1
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            break
        if response.is_success:
            try:
                return response.json()
            except ValueError as exc:
                raise RegistryClientError(
                    response.status_code, -1, f"the registry answered non-JSON: {response.text[:200]}"
                ) from exc
        try:
            error = response.json()
            error_code = int(error.get("error_code", -1))
            message = str(error.get("message", response.text))
        except (ValueError, AttributeError, TypeError):
            error_code, message = -1, response.text[:500] or response.reason_phrase
        error_type = SchemaNotFound if response.status_code == 404 else RegistryClientError
        raise error_type(response.status_code, error_code, message)

    @staticmethod
    def _subject_path(subject: str) -> str:
        return quote(subject, safe="")

    async def _remember(self, schema_id: int, answer: dict[str, Any]) -> RegisteredSchema:
        """Cache a schema the registry served (``answer`` holds ``schema`` and maybe ``references``)."""
        known = self._by_id.get(schema_id)
        if known is not None:
            return known
        schema_str = str(answer["schema"])
        references = self._references(answer)
        try:
            named = named_types(await self._dependencies(references)) if references else None
            parsed = parse_schema(schema_str, named)
        except RegistryClientError:
            raise
        except Exception as exc:  # the registry served a schema fastavro cannot use
            reason = f"schema {schema_id} from the registry does not parse: {exc}"
            raise RegistryClientError(200, -1, reason) from exc
        registered = RegisteredSchema(schema_id, schema_str, parsed, references)
        self._by_id[schema_id] = registered
        return registered

    @staticmethod
    def _references(answer: dict[str, Any]) -> tuple[tuple[str, str, int], ...]:
        raw = answer.get("references") or []
        try:
            return tuple((str(r["name"]), str(r["subject"]), int(r["version"])) for r in raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryClientError(200, -1, f"the registry served malformed references: {raw!r}") from exc

    async def _version(self, subject: str, version: int) -> dict[str, Any]:
        """One subject version's answer, soft-deleted ones too (a referenced version may be soft-deleted; cached:
        a version number always names the same schema)."""
        key = (subject, version)
        known = self._versions.get(key)
        if known is None:
            path = f"/subjects/{self._subject_path(subject)}/versions/{version}?deleted=true"
            known = await self._request("GET", path)
            self._versions[key] = known
        return known

    async def _dependencies(self, references: tuple[tuple[str, str, int], ...]) -> list[str]:
        """Texts of every schema the references need, recursively, each after its own dependencies."""
        ordered: list[str] = []
        done: set[tuple[str, int]] = set()

        async def visit(refs: tuple[tuple[str, str, int], ...], path: frozenset[tuple[str, int]]) -> None:
            for _, subject, version in refs:
                key = (subject, version)
                if key in path:
                    raise RegistryClientError(200, -1, f"schema references form a cycle at {subject} {version}")
                if key in done:
                    continue
                answer = await self._version(subject, version)
                await visit(self._references(answer), path | {key})
                done.add(key)
                ordered.append(str(answer["schema"]))

        await visit(references, frozenset())
        return ordered

    # ------------------------------------------------------------ API

    async def register(self, subject: str, schema: str | dict[str, Any]) -> int:
        """Register a schema under a subject (idempotent: the existing id if it is there); returns the id."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        known = self._registered.get((subject, text))
        if known is not None:
            return known
        path = f"/subjects/{self._subject_path(subject)}/versions"
        answer = await self._request("POST", path, {"schema": text})
        schema_id = int(answer["id"])
        self._registered[(subject, text)] = schema_id
        self._subject_ids.pop(subject, None)
        return schema_id

    async def schema_by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema with this global id (cached forever); SchemaNotFound if the registry has none."""
        known = self._by_id.get(schema_id)
        if known is not None:
            return known
        answer = await self._request("GET", f"/schemas/ids/{int(schema_id)}")
        return await self._remember(schema_id, answer)

    async def resolved(self, schema_id: int) -> Any:
        """The schema's JSON document, self-contained: the named types of its references written in."""
        schema = await self.schema_by_id(schema_id)
        if not schema.references:
            return json.loads(schema.schema_str)
        return inline_references(schema.schema_str, await self._dependencies(schema.references))

    def cached(self, schema_id: int) -> RegisteredSchema | None:
        """The cached schema for an id, without I/O (the hot path), or None."""
        return self._by_id.get(schema_id)

    async def subject_ids(self, subject: str, *, refresh: bool = False) -> frozenset[int]:
        """Ids of every live version of a subject (cached; ``refresh`` refetches); SchemaNotFound if none."""
        if not refresh and subject in self._subject_ids:
            return self._subject_ids[subject]
        path = self._subject_path(subject)
        versions = await self._request("GET", f"/subjects/{path}/versions")
        ids = set()
        for version in versions:
            answer = await self._request("GET", f"/subjects/{path}/versions/{int(version)}")
            schema_id = int(answer["id"])
            if "schema" in answer:
                await self._remember(schema_id, answer)
            ids.add(schema_id)
        found = frozenset(ids)
        self._subject_ids[subject] = found
        return found

    async def latest(self, subject: str) -> tuple[int, int, str]:
        """(id, version, schema text) of the subject's latest live version."""
        answer = await self._request("GET", f"/subjects/{self._subject_path(subject)}/versions/latest")
        schema_id, schema_str = int(answer["id"]), str(answer["schema"])
        await self._remember(schema_id, answer)
        return schema_id, int(answer["version"]), schema_str
