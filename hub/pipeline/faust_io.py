"""Small adapters the Faust shells share: Faust messages to RawRecords, awaiting send futures, schema files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from hub.pipeline.core import RawRecord
from hub.settings import REPO_ROOT


async def gather_all(futures: Sequence[Any]) -> list[Any]:
    """Await every send future (the broker's acks); an empty list costs nothing."""
    return list(await asyncio.gather(*futures)) if futures else []


def raw_record(message: Any) -> RawRecord:
    """The plain-data view of a Faust message the pure cores work on."""
    headers = message.headers or ()
    if isinstance(headers, dict):
        headers = list(headers.items())
    return RawRecord(
        topic=message.topic, partition=message.partition, offset=message.offset, key=message.key,
        value=message.value, headers=headers, timestamp_ms=int((message.timestamp or 0) * 1000),
    )


def schema_text(relative: str) -> str:
    """A schema file of the repository as compact JSON text (what the registry is sent)."""
    return json.dumps(json.loads((REPO_ROOT / relative).read_text(encoding="utf-8")))
