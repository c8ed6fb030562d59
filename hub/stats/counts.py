"""Exact exchange counts, derived from audit records by one pure function.

The worker, ``hub audit reconcile`` and ``/v1/stats`` all count with ``count_key``, so the durable counters
and a recount from the audit log can only differ if records were lost or counted twice.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))

# day, action, from_tier, to_tier, direction, resource, decision, reason
CountKey = tuple[str, str, str, str, str, str, str, str]

COUNTED_ACTIONS = frozenset({"publish", "deliver", "quarantine", "call", "deny"})


def day_of(ts_ms: int | datetime) -> str:
    """The statistics day (China Standard Time) of a timestamp."""
    moment = ts_ms if isinstance(ts_ms, datetime) else datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.astimezone(CHINA_STANDARD_TIME).date().isoformat()


def count_key(audit: Mapping[str, Any]) -> CountKey | None:
    """The counter an audit record adds one to, or None for records that are not exchange events."""
    action = audit["action"]
    if action not in COUNTED_ACTIONS:
        return None
    return (
        day_of(audit["ts"]), action, audit.get("from_tier") or "", audit.get("to_tier") or "",
        audit.get("direction") or "", audit.get("resource") or "", audit.get("decision") or "",
        audit.get("reason") or "",
    )


class CountTable:
    """Counts per CountKey, mergeable and serialisable (snapshots on the ``hub.counts`` topic)."""

    def __init__(self, counts: Mapping[CountKey, int] | None = None) -> None:
        self.counts: Counter[CountKey] = Counter(counts or {})

    def add(self, audits: Iterable[Mapping[str, Any]]) -> None:
        counts = self.counts
        for audit in audits:
            key = count_key(audit)
            if key is not None:
                counts[key] += 1

    def merge(self, other: CountTable) -> None:
        self.counts.update(other.counts)

    def to_json(self) -> list[list[Any]]:
        return [[*key, n] for key, n in sorted(self.counts.items())]

    @classmethod
    def from_json(cls, rows: Iterable[list[Any]]) -> CountTable:
        return cls({tuple(row[:-1]): int(row[-1]) for row in rows})  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountTable) and +self.counts == +other.counts


def encode_snapshot(audit_offset: int, table: CountTable, chain_head: str | None) -> bytes:
    """One partition's counts as of an audit offset (everything before it is counted), zlib-compressed.

    Snapshots hold every counter since the start (~114 bytes each as JSON, ~8x less compressed); with
    ``hub.counts`` accepting 16 MiB messages that is about a million counters per partition.
    """
    text = json.dumps({"audit_offset": audit_offset, "chain_head": chain_head, "counts": table.to_json()},
                      separators=(",", ":")).encode()
    return zlib.compress(text, 1)


def decode_snapshot(value: bytes) -> tuple[int, CountTable, str | None]:
    data = json.loads(value if value[:1] == b"{" else zlib.decompress(value))  # plain JSON: older snapshots
    return int(data["audit_offset"]), CountTable.from_json(data["counts"]), data.get("chain_head")
