"""Which quarantined records were later fixed: a pure cross-reference of quarantine records with publish audits.

A provider fixes a rejected record by publishing it again, with the same record key (its Kafka key, or else its
primary key) or even the same ``hub-event-id``. The hub writes no extra "resolved" marker: the audit log already
holds one ``publish`` record per delivered event with its ``event_id``, ``resource`` and ``key_hash`` (SHA-256 of
the delivered record's key: the publisher's key, or the primary key when it sent none). A quarantine entry is
**resolved** when a publish audit of the same node, at or after the quarantine, has

* the same event id (the fixed record resent under the original id), or
* the same resource and key hash (a new event for the same record).

This needs no state in the worker, so it holds whichever worker, ingress partition or restart the fix went
through; the cost is a read of the audit log from the oldest quarantine shown (``hub quarantine list``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def match_keys(quarantine: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (resource, key hash) pairs a later publish of the fixed record would carry."""
    resource = quarantine.get("resource")
    if not resource:
        return []
    keys: list[bytes] = []
    if quarantine.get("original_key") is not None:
        keys.append(bytes(quarantine["original_key"]))
    if quarantine.get("record_key"):
        keys.append(str(quarantine["record_key"]).encode())
    return [(resource, hashlib.sha256(k).hexdigest()) for k in keys]


def epoch_ms(value: Any) -> int:
    """Epoch ms of a timestamp as fastavro decodes it (an aware datetime) or as an int."""
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def resolutions(
    quarantines: Sequence[Mapping[str, Any]], publishes: Iterable[Mapping[str, Any]],
) -> list[Mapping[str, Any] | None]:
    """For each quarantine record (in order), the first publish audit that resolves it, or None."""
    by_event: dict[tuple[str, str], list[int]] = {}
    by_key: dict[tuple[str, str, str], list[int]] = {}
    for i, q in enumerate(quarantines):
        by_event.setdefault((q["node"], q["event_id"]), []).append(i)
        for resource, khash in match_keys(q):
            by_key.setdefault((q["node"], resource, khash), []).append(i)
    found: list[Mapping[str, Any] | None] = [None] * len(quarantines)
    for audit in publishes:
        if audit.get("action") != "publish":
            continue
        node, ts = audit.get("actor") or "", epoch_ms(audit["ts"])
        candidates = by_event.get((node, audit["event_id"]), [])
        if audit.get("key_hash") and audit.get("resource"):
            candidates = candidates + by_key.get((node, audit["resource"], audit["key_hash"]), [])
        for i in candidates:
            if found[i] is None and ts >= epoch_ms(quarantines[i]["ts"]):
                found[i] = audit
    return found
