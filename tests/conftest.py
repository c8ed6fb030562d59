"""Shared fixtures. Integration tests share one real Kafka broker per session (or ``HUB_BOOTSTRAP``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.broker.manager import LocalBroker, free_port
from hub.settings import Settings


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a real Kafka broker: ``HUB_BOOTSTRAP`` if set, else a local KRaft broker for the session.

    The broker is started by the same code as ``hub broker start``, tied to this process (it dies with
    pytest even on a hard crash) and stopped at the end of the session.
    """
    existing = os.environ.get("HUB_BOOTSTRAP")
    if existing:
        yield existing
        return
    state = tmp_path_factory.mktemp("hub-state")
    settings = Settings(state_dir=state)
    broker = LocalBroker(settings)
    info, _ = broker.start(port=free_port(), controller_port=free_port(), owned=True)
    try:
        yield info.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def unique_id() -> str:
    """A short unique suffix so topics, groups and nodes of different tests never collide."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def hub_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker, with a private state dir and a free API port."""
    return Settings(
        bootstrap=kafka_bootstrap,
        state_dir=tmp_path / "state",
        api_port=free_port(),
        app_id=f"hub-test-{uuid.uuid4().hex[:8]}",
    )
