"""Errors of control-plane operations, each carrying the HTTP status and a machine-readable code.

The operations in :mod:`hub.control.operations` are pure and raise these; the HTTP layer turns them into
``{"code": ..., "message": ...}`` bodies with their status, and the CLI prints the message.
"""

from __future__ import annotations


class ControlError(Exception):
    """A refused control-plane request: ``status`` (4xx, set by each subclass: ``class X(ControlError, status=...)``),
    ``code`` (bounded, machine-readable), message."""

    status = 400

    def __init_subclass__(cls, *, status: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class Invalid(ControlError, status=422):
    """The request is well-formed JSON but breaks a rule (unknown field, missing legal basis, ...)."""


class Forbidden(ControlError, status=403):
    """The caller may not do this (a node acts only as itself; operator-only endpoints)."""


class NotFound(ControlError, status=404):
    """No such node, scenario or catalogue entry."""


class Conflict(ControlError, status=409):
    """The entity already exists, is retired, or changed concurrently."""


class Unauthorized(ControlError, status=401):
    """No credentials, or credentials that match no live node (answered with a WWW-Authenticate challenge)."""


class UnsupportedMediaType(ControlError, status=415):
    """A request body that is not JSON."""


class BadRequest(ControlError, status=400):
    """A request body that cannot be parsed at all (malformed JSON, not UTF-8)."""


class TooManyRequests(ControlError, status=429):
    """Too many failed authentications from this client or for this node (answered with ``Retry-After`` seconds)."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after
