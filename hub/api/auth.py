"""Who is calling: ``Authorization: Bearer <token>`` or HTTP Basic (node id + token), checked per request.

The operator node ``hub`` authenticates with the operator token (``hub status`` names its file); every other
node with the token issued when it was registered (or rotated), checked against the salted hash on
``hub.nodes``. A node acts only as itself: the routes compare the caller with the node an operation is for.

Registry writes go through :meth:`Authenticator.authorize_registry_write`: a token is needed; subjects bound
to a catalogue entry are writable only by its provider and the operator; the hub's own subjects (``hub.*``,
``_*``) and the global config only by the operator. Registry reads stay open (Confluent's default). A
registration of a schema the subject already holds changes nothing and answers exactly what the open
lookup ``POST /subjects/{subject}`` answers, so it is treated as that read and needs no token (this is what
Confluent serializers with ``auto.register.schemas`` send before every first produce).

Failed authentication (a wrong, rotated or malformed credential; not a request without any) is counted per
client address and per claimed node (the Basic user, or the node owning the bearer token's id; ``hub`` for
an operator-token guess) in a sliding window: after ``auth_failure_limit`` failures within
``auth_failure_window`` seconds, requests from that client or for that node get 429 with ``Retry-After``
before any credential is checked. Every failure is audited on the control audit log (``auth_failure``: the
claimed node, the address, the endpoint and why; never the secret presented), a rate-limited refusal once
per client and window; requests refused with 403 are audited as ``forbidden``. Tokens are 256-bit random
secrets, so the limit is not what keeps them from being guessed: it keeps floods of wrong credentials from
costing hashes and audit records. The per-node limit also slows down the node whose id an attacker keeps
claiming: short windows keep that bounded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import HTTPException, Request

from hub.audit.control_log import AuditSink, auth_failure_audit, forbidden_audit, now_ms
from hub.contract import OPERATOR
from hub.control import tokens
from hub.control.errors import ControlError, TooManyRequests, Unauthorized
from hub.control.state import ControlState
from hub.registry.routes import AuthorizeWrite
from hub.registry.service import RegistryService
from hub.registry.state import AVRO, parse_references

CHALLENGE = 'Bearer realm="hub", Basic realm="hub"'
AUDIT_TIMEOUT = 5.0  # seconds an audit write may hold up the answer to a refused request

log = logging.getLogger("hub.api")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a node id (``hub`` is the operator)."""

    node_id: str

    @property
    def is_operator(self) -> bool:
        return self.node_id == OPERATOR


def _credentials(header: str) -> tuple[str | None, str]:
    """(user or None, token) from an Authorization header; Unauthorized if it cannot be read."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return None, value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise Unauthorized("invalid_credentials", "HTTP Basic credentials are not base64 of 'node:token'") from exc
        user, sep, token = decoded.partition(":")
        if not sep or not user or not token:
            raise Unauthorized("invalid_credentials", "HTTP Basic credentials must be '<node id>:<token>'")
        return user, token
    raise Unauthorized(
        "invalid_credentials", "Authorization must be 'Bearer <token>' or HTTP Basic with node id and token"
    )


class HasState(Protocol):
    """Anything holding the live control state (a ControlView or ControlService)."""

    state: ControlState


class FailureLimiter:
    """Failed authentications per key (client address, claimed node) in a sliding window of ``window`` seconds."""

    def __init__(self, limit: int = 10, window: float = 60.0, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[Hashable, deque[float]] = {}

    def _recent(self, key: Hashable, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, keys: Sequence[Hashable]) -> int | None:
        """Seconds until a blocked key may try again (the longest wait over ``keys``), None if none is blocked."""
        now = self.clock()
        wait: float | None = None
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.limit:
                left = times[0] + self.window - now
                wait = left if wait is None else max(wait, left)
        return None if wait is None else max(1, math.ceil(wait))

    def fail(self, keys: Sequence[Hashable]) -> None:
        """Count one failure against each key."""
        now = self.clock()
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= self.max_keys:  # forget the longest-tracked key (bounded memory)
                    del self._failures[next(iter(self._failures))]
                times = self._failures[key] = deque(maxlen=self.limit)
            times.append(now)


class Authenticator:
    """Checks credentials against the operator token and the node token hashes of the control state.

    ``audit`` receives the ``auth_failure`` and ``forbidden`` records; ``limiter`` counts failures (see the
    module doc).
    """

    def __init__(self, control: HasState, operator_token: str, *, audit: AuditSink | None = None,
                 limiter: FailureLimiter | None = None) -> None:
        self.control = control
        self.operator_token = operator_token
        self.audit = audit
        self.limiter = limiter or FailureLimiter()
        self._noted: dict[Hashable, float] = {}  # keys whose rate-limited refusal was audited, and when

    @property
    def state(self) -> ControlState:
        return self.control.state

    def identify(self, request: Request) -> Principal | None:
        """The caller, None when the request carries no credentials; Unauthorized for wrong ones."""
        header = request.headers.get("authorization")
        if header is None or not header.strip():
            return None
        user, token = _credentials(header)
        if user in (None, OPERATOR) and self.operator_token and tokens.same_secret(token, self.operator_token):
            return Principal(OPERATOR)
        parts = tokens.split(token)
        node = self.state.node_by_token_id(parts[0]) if parts else None
        if node is None or not tokens.verify(token, node.token_hash):
            raise Unauthorized("invalid_credentials", "the token is not valid (unknown, rotated, or its node removed)")
        if user is not None and user != node.id:
            raise Unauthorized("invalid_credentials", f"the token does not belong to {user}")
        return Principal(node.id)

    def require(self, request: Request) -> Principal:
        """The caller; Unauthorized when the request has no credentials."""
        principal = self.identify(request)
        if principal is None:
            raise _missing()
        return principal

    async def authenticate(self, request: Request, *, required: bool = True) -> Principal | None:
        """The caller, rate-limited and audited: 429 (TooManyRequests) while its client or claimed node is
        blocked, 401 (Unauthorized, counted and audited) for wrong credentials, 401 without any when
        ``required`` (else None). The principal is also left on ``request.state.principal``."""
        header = request.headers.get("authorization")
        if header is None or not header.strip():
            if required:
                raise _missing()
            return None
        client = request.client.host if request.client else None
        claimed = self.claimed_node(header)
        keys: list[Hashable] = [("client", client)]
        if claimed is not None:
            keys.append(("node", claimed))
        wait = self.limiter.retry_after(keys)
        if wait is not None:
            await self._note_limited(keys, claimed, client, request)
            who = f"for {claimed} or from {client}" if claimed else f"from {client}"
            raise TooManyRequests(
                "too_many_failures", f"too many failed authentications {who}: try again in {wait} s", wait,
            )
        try:
            principal = self.identify(request)
        except Unauthorized as exc:
            self.limiter.fail(keys)
            await self.write_audit(auth_failure_audit(
                now_ms(), claimed, f"{exc.code}: {exc.message}", client, request.method, request.url.path,
            ))
            raise
        request.state.principal = principal
        return principal

    def claimed_node(self, header: str) -> str | None:
        """Who a credential claims to be, without checking it: the Basic user, the node owning a bearer
        token's id, ``hub`` for a token not shaped like a node's (an operator-token guess), else None."""
        try:
            user, token = _credentials(header)
        except Unauthorized:
            return None
        if user is not None:
            return user[:200]
        parts = tokens.split(token)
        if parts is None:
            return OPERATOR
        node = self.state.node_by_token_id(parts[0])
        return node.id if node is not None else None

    async def _note_limited(
        self, keys: Sequence[Hashable], claimed: str | None, client: str | None, request: Request
    ) -> None:
        """Audit a rate-limited refusal once per blocked key and window."""
        now = time.monotonic()
        fresh = [k for k in keys if now - self._noted.get(k, -math.inf) >= self.limiter.window]
        if not fresh:
            return
        for key in fresh:
            self._noted[key] = now
        if len(self._noted) > self.limiter.max_keys:
            self._noted = {k: t for k, t in self._noted.items() if now - t < self.limiter.window}
        await self.write_audit(auth_failure_audit(
            now_ms(), claimed, f"rate_limited: more than {self.limiter.limit} failed authentications within "
            f"{self.limiter.window:g} s; refused without checking the credentials", client, request.method,
            request.url.path,
        ))

    async def write_audit(self, record: dict[str, Any]) -> None:
        """Write one audit record; a slow or failing audit log never turns a refusal into a 5xx."""
        if self.audit is None:
            return
        try:
            await asyncio.wait_for(self.audit.write([record]), AUDIT_TIMEOUT)
        except Exception as exc:
            log.error("could not write the %s audit record: %r", record.get("action"), exc)

    async def on_forbidden(self, request: Request, exc: ControlError) -> None:
        """Audit a request refused with 403 (the error handler calls this)."""
        principal = getattr(request.state, "principal", None)
        actor = principal.node_id if isinstance(principal, Principal) else "anonymous"
        params = request.path_params
        await self.write_audit(forbidden_audit(
            now_ms(), actor, exc.code, exc.message, request.client.host if request.client else None,
            request.method, request.url.path, resource=params.get("resource_id"), grant=params.get("grant_id"),
        ))

    # ------------------------------------------------------------ registry writes

    def registry_write_guard(self, registry: RegistryService) -> AuthorizeWrite:
        """The ``authorize_write`` hook for :func:`hub.registry.routes.registry_router`."""

        async def authorize_write(request: Request, subject: str | None) -> None:
            try:
                principal = await self.authenticate(request, required=False)
            except TooManyRequests as exc:
                raise HTTPException(429, exc.message, headers={"Retry-After": str(exc.retry_after)}) from exc
            except Unauthorized as exc:
                raise HTTPException(401, exc.message, headers={"WWW-Authenticate": CHALLENGE}) from exc
            if principal is None:
                if subject is not None and await _unchanged_registration(request, registry, subject):
                    return
                raise HTTPException(
                    401, "Registry writes need a token: send 'Authorization: Bearer <token>' or HTTP Basic "
                    "(node id as user, token as password)", headers={"WWW-Authenticate": CHALLENGE},
                )
            if principal.is_operator:
                return
            refusal = None
            if subject is None:
                refusal = f"{principal.node_id} cannot change the global registry config or mode: only the hub " \
                          "operator can"
            elif subject.startswith(("hub.", "_")):
                refusal = f"Subject {subject} holds the hub's own schemas: only the hub operator can write it"
            else:
                owners = self.state.subject_owners(subject)
                if owners and principal.node_id not in owners:
                    refusal = f"Subject {subject} is bound to a catalogue entry of {', '.join(sorted(owners))}: " \
                              "only its provider and the hub operator can write it"
            if refusal is not None:
                await self.on_forbidden(request, ControlError("registry_write_forbidden", refusal))
                raise HTTPException(403, refusal)

        return authorize_write


def _missing() -> Unauthorized:
    return Unauthorized(
        "missing_credentials",
        "this endpoint needs a token: send 'Authorization: Bearer <token>' or HTTP Basic (node id, token)",
    )


async def _unchanged_registration(request: Request, registry: RegistryService, subject: str) -> bool:
    """Whether this request registers a schema the subject already holds (a lookup in effect)."""
    if request.method != "POST" or not request.url.path.rstrip("/").endswith("/versions"):
        return False
    try:
        document = json.loads(await request.body())
        schema = document["schema"]
        schema_type = str(document.get("schemaType") or AVRO).upper()
        if not isinstance(schema, str) or document.get("id") is not None:
            return False
        references = parse_references(document.get("references"))  # part of the schema's identity
        registry.state.lookup(subject, schema, schema_type=schema_type, references=references)
    except Exception:  # anything else is a real write (or an error the route reports after auth)
        return False
    return True
