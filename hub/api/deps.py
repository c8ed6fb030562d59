"""What every ``/v1`` route depends on: a running control plane and an authenticated caller."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from hub.api.auth import Authenticator, Principal
from hub.control.topicstore import StoreUnavailable
from hub.control.view import ControlView


def caller_dependency(control: ControlView, auth: Authenticator) -> Callable[[Request], Principal]:
    """A dependency giving the authenticated caller (401 without valid credentials, 503 while starting)."""

    def caller(request: Request) -> Principal:
        if not control.ready:
            raise StoreUnavailable("the control plane is still loading its topics")
        return auth.require(request)

    return caller
