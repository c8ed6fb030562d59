"""Errors of control-plane operations, each carrying the HTTP status and a machine-readable code.

The operations in :mod:`hub.control.operations` are pure and raise these; the HTTP layer turns them into
``{"code": ..., "message": ...}`` bodies with their status, and the CLI prints the message.
"""

from __future__ import annotations


class ControlError(Exception):
    """A refused control-plane request: ``status`` (4xx), ``code`` (bounded, machine-readable), message."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class Invalid(ControlError):
    """The request is well-formed JSON but breaks a rule (unknown field, missing legal basis, ...): 422."""

    status = 422


class Forbidden(ControlError):
    """The caller may not do this (a node acts only as itself; operator-only endpoints): 403."""

    status = 403


class NotFound(ControlError):
    """No such node, scenario or catalogue entry: 404."""

    status = 404


class Conflict(ControlError):
    """The entity already exists, is retired, or changed concurrently: 409."""

    status = 409


class Unauthorized(ControlError):
    """No credentials, or credentials that match no live node: 401 (with a WWW-Authenticate challenge)."""

    status = 401


class UnsupportedMediaType(ControlError):
    """A request body that is not JSON: 415."""

    status = 415


class BadRequest(ControlError):
    """A request body that cannot be parsed at all (malformed JSON, not UTF-8): 400."""

    status = 400


class TooManyRequests(ControlError):
    """Too many failed authentications from this client or for this node: 429 with ``Retry-After`` seconds."""

    status = 429

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after
