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
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Protocol

from fastapi import HTTPException, Request

from hub.control import tokens
from hub.control.errors import Unauthorized
from hub.control.state import OPERATOR, ControlState
from hub.registry.routes import AuthorizeWrite
from hub.registry.service import RegistryService
from hub.registry.state import AVRO

CHALLENGE = 'Bearer realm="hub", Basic realm="hub"'


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


class Authenticator:
    """Checks credentials against the operator token and the node token hashes of the control state."""

    def __init__(self, control: HasState, operator_token: str) -> None:
        self.control = control
        self.operator_token = operator_token

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
            raise Unauthorized(
                "missing_credentials",
                "this endpoint needs a token: send 'Authorization: Bearer <token>' or HTTP Basic (node id, token)",
            )
        return principal

    # ------------------------------------------------------------ registry writes

    def registry_write_guard(self, registry: RegistryService) -> AuthorizeWrite:
        """The ``authorize_write`` hook for :func:`hub.registry.routes.registry_router`."""

        async def authorize_write(request: Request, subject: str | None) -> None:
            try:
                principal = self.identify(request)
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
            if subject is None:
                raise HTTPException(403, f"{principal.node_id} cannot change the global registry config or mode: "
                                         "only the hub operator can")
            if subject.startswith(("hub.", "_")):
                raise HTTPException(403, f"Subject {subject} holds the hub's own schemas: only the hub operator "
                                         "can write it")
            owners = self.state.subject_owners(subject)
            if owners and principal.node_id not in owners:
                raise HTTPException(
                    403, f"Subject {subject} is bound to a catalogue entry of {', '.join(sorted(owners))}: only "
                    "its provider and the hub operator can write it",
                )

        return authorize_write


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
        registry.state.lookup(subject, schema, schema_type=schema_type)
    except Exception:  # anything else is a real write (or an error the route reports after auth)
        return False
    return True
