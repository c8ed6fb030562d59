"""Exact exchange counts, derived from audit records by one pure function.

The worker, ``hub audit reconcile`` and ``/v1/stats`` all count with ``count_keys``, so the durable counters
and a recount from the audit log can only differ if records were lost or counted twice.

An event has one audit record, its ``publish``, listing its deliveries and refusals; ``count_keys`` expands it
into the counters one record per act used to produce: the publish, one ``deliver`` per allowed delivery and
one ``deny`` per refused one. Logs written before (separate ``deliver``/``deny`` records) count the same.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))

# day, action, from_tier, to_tier, direction, resource, decision, reason
CountKey = tuple[str, str, str, str, str, str, str, str]

COUNTED_ACTIONS = frozenset({"publish", "deliver", "quarantine", "call", "deny"})

_DAY_MS = 86_400_000
_CST_OFFSET_MS = 8 * 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_day_bounds: tuple[int, int, str] = (0, 0, "")  # [start, end) in epoch ms of the last day looked up, and its name


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def day_of(ts_ms: int | datetime) -> str:
    """The statistics day (China Standard Time) of a timestamp (epoch ms, or a datetime as fastavro decodes).

    The bounds of the last day looked up are cached: records arrive in time order, so nearly every call is
    two integer comparisons. (China has no daylight saving: a CST day is a fixed 86,400,000 ms.)
    """
    if isinstance(ts_ms, int):
        ms = ts_ms
    elif isinstance(ts_ms, datetime):
        ms = _epoch_ms(ts_ms)
    else:
        ms = math.floor(ts_ms)
    global _day_bounds
    start, end, day = _day_bounds
    if start <= ms < end:
        return day
    start = (ms + _CST_OFFSET_MS) // _DAY_MS * _DAY_MS - _CST_OFFSET_MS
    day = date.fromordinal(_EPOCH_ORDINAL + (start + _CST_OFFSET_MS) // _DAY_MS).isoformat()
    _day_bounds = (start, start + _DAY_MS, day)  # one tuple: a concurrent reader sees old or new bounds, whole
    return day


def count_key(audit: Mapping[str, Any]) -> CountKey | None:
    """The counter an audit record itself adds one to, or None for records that are not exchange events.

    Does not look at ``deliveries``: count with ``count_keys``.
    """
    action = audit["action"]
    if action not in COUNTED_ACTIONS:
        return None
    return (
        day_of(audit["ts"]), action, audit.get("from_tier") or "", audit.get("to_tier") or "",
        audit.get("direction") or "", audit.get("resource") or "", audit.get("decision") or "",
        audit.get("reason") or "",
    )


def count_keys(audit: Mapping[str, Any]) -> list[CountKey]:
    """Every counter an audit record adds one to: its own (``count_key``), then one per entry of its
    ``deliveries``, keyed exactly as the separate ``deliver`` (allowed) or ``deny`` (refused) record of that
    delivery was: (day, deliver|deny, from_tier of the publish, to_tier, direction, resource, decision, reason).

    Empty for records that are not exchange events (checkpoints, grant changes, ...).
    """
    action = audit["action"]
    if action not in COUNTED_ACTIONS:
        return []
    day = day_of(audit["ts"])
    from_tier = audit.get("from_tier") or ""
    resource = audit.get("resource") or ""
    keys: list[CountKey] = [(
        day, action, from_tier, audit.get("to_tier") or "", audit.get("direction") or "", resource,
        audit.get("decision") or "", audit.get("reason") or "",
    )]
    for d in audit.get("deliveries") or ():
        decision = d["decision"]
        keys.append((
            day, "deliver" if decision == "allow" else "deny", from_tier, d.get("to_tier") or "",
            d.get("direction") or "", resource, decision, d.get("reason") or "",
        ))
    return keys


class CountTable:
    """Counts per CountKey, mergeable and serialisable (snapshots on the ``hub.counts`` topic)."""

    def __init__(self, counts: Mapping[CountKey, int] | None = None) -> None:
        self.counts: Counter[CountKey] = Counter(counts or {})

    def add(self, audits: Iterable[Mapping[str, Any]]) -> None:
        """Count audit records (each expanded by ``count_keys``: a publish with its deliveries)."""
        update = self.counts.update
        for audit in audits:
            update(count_keys(audit))

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
