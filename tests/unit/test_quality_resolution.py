"""A quarantined record shows as resolved once the fixed record is delivered (hub.quality.resolution)."""

from __future__ import annotations

import hashlib

from hub.quality.resolution import resolutions


def quarantine(event_id: str, ts: int, key: bytes | None = None, record_key: str | None = None) -> dict:
    return {"node": "municipal.health", "event_id": event_id, "ts": ts, "resource": "municipal.health.vaccination",
            "original_key": key, "record_key": record_key}


def publish(event_id: str, ts: int, key: bytes, actor: str = "municipal.health") -> dict:
    return {"action": "publish", "actor": actor, "event_id": event_id, "ts": ts,
            "resource": "municipal.health.vaccination", "key_hash": hashlib.sha256(key).hexdigest()}


def test_resolved_by_the_same_event_id_or_the_same_record_key_later() -> None:
    qs = [quarantine("e-1", 100, record_key="r1"), quarantine("e-2", 100, key=b"k2"),
          quarantine("e-3", 100, record_key="r3"), quarantine("e-4", 100, record_key="r4")]
    pubs = [publish("e-1", 200, b"other"),  # same event id
            publish("e-9", 200, b"k2"),  # same publisher key
            publish("e-3", 50, b"r3"),  # before the quarantine: not a fix
            publish("e-8", 300, b"r4", actor="municipal.hrss"),  # another node's event
            {"action": "quarantine", "actor": "municipal.health", "event_id": "e-4", "ts": 400}]
    found = resolutions(qs, pubs)
    assert [f["event_id"] if f else None for f in found] == ["e-1", "e-9", None, None]


def test_the_quarantine_table_prints_producer_data_as_text() -> None:
    from rich.console import Console

    from hub.cli.quarantine import quarantine_table

    entries = [{"ts": "2026-12-07T01:02:03Z", "event_id": "e[/x]", "resource": "r[/y]", "record_key": "k[/z]",
                "reasons": [{"rule": "regex", "field": "f[/a]", "message": "'[/b]' does not match"}],
                "status": "resolved", "resolved_by": {"event_id": "e2[/c]", "ts": "2026-12-07T02:00:00Z"}}]
    console = Console(record=True, width=300)
    console.print(quarantine_table("municipal.health", entries))
    text = console.export_text()
    assert all(part in text for part in ("e[/x]", "r[/y]", "k[/z]", "f[/a]", "'[/b]'", "e2[/c]"))
