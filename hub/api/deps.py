"""What every ``/v1`` route depends on: a running control plane and an authenticated caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from hub.api.auth import Authenticator, Principal
from hub.broker.topicstore import StoreUnavailable
from hub.control.view import ControlView


def caller_dependency(control: ControlView, auth: Authenticator) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency giving the authenticated caller (401 without valid credentials, 429 after too many failed
    ones, 503 while starting); failures are counted and audited by ``Authenticator.authenticate``."""

    async def caller(request: Request) -> Principal:
        if not control.ready:
            raise StoreUnavailable("the control plane is still loading its topics")
        principal = await auth.authenticate(request)
        assert principal is not None  # required=True raises instead
        return principal

    return caller
