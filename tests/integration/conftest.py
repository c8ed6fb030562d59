"""Integration fixtures: one real ``hub up`` process for the session, on the session's Kafka broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hub.broker.manager import free_port

from .hubproc import HubProcess, start_hub


@pytest.fixture(scope="session")
def hub(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """The hub (worker + API) as a user runs it: ``hub up --bootstrap`` in a child process."""
    state = tmp_path_factory.mktemp("hub-up")
    proc = start_hub(kafka_bootstrap, state, free_port(), f"hub-it-{uuid.uuid4().hex[:6]}")
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"hub up did not stop cleanly (exit {code}):\n{proc.log_file.read_text()[-3000:]}"
