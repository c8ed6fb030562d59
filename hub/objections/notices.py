"""Objection notices: every version written to ``hub.objections`` is also sent to ``objection.<node>`` of the
filer, the provider and every recipient of the record (and of the operator ``hub`` once escalated).

A notice is the objection version itself, framed with the schema ``hub.objections`` uses (registered as
``hub.objections-value``), keyed by the objection id, with headers ``hub-objection`` (its id) and
``hub-resource``. The API runs :class:`ObjectionNotifier` as a control change listener, so a notice follows
every state change whichever request made it; a failed send is logged and never undoes the change (the
state stays on ``hub.objections``, which ``GET /v1/objections`` answers from).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer

from hub.broker.clients import make_producer
from hub.contract import H_OBJECTION, H_RESOURCE, OBJECTIONS_TOPIC, objection_topic
from hub.objections.machine import notice_targets
from hub.objections.model import Objection
from hub.settings import Settings

log = logging.getLogger("hub.objections")


class Notice(NamedTuple):
    topic: str
    key: bytes
    headers: list[tuple[str, bytes]]
    objection: Objection


def notices(changes: Sequence[tuple[str, Any, Any]]) -> list[Notice]:
    """The notices of control changes ``(topic, before, after)``: one per objection version and target node."""
    out = []
    for topic, _, after in changes:
        if topic != OBJECTIONS_TOPIC or after is None:
            continue
        key = after.objection_id.encode()
        headers = [(H_OBJECTION, key), (H_RESOURCE, after.resource.encode())]
        out += [Notice(objection_topic(node), key, headers, after) for node in notice_targets(after)]
    return out


class ObjectionNotifier:
    """Sends the notices of objection changes (the control change listener ``on_change``)."""

    def __init__(self, settings: Settings, bootstrap: str, encode: Callable[[Objection], bytes]) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.encode = encode
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = make_producer(self.settings, self.bootstrap, enable_idempotence=True)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def on_change(self, changes: Sequence[tuple[str, Any, Any]]) -> None:
        due = notices(changes)
        if not due or self._producer is None:
            return
        futures = [await self._producer.send(n.topic, self.encode(n.objection), key=n.key, headers=n.headers)
                   for n in due]
        await asyncio.gather(*futures)
        log.info("objection notices sent: %s", ", ".join(sorted({n.topic for n in due})))
