"""Data quality rules on the real broker: a batch with 10% bad records of mixed faults delivers exactly the good
ones and quarantines each bad one with all its reasons; the fixed record resent under the same event id is
delivered, and ``hub quarantine list`` then shows its entry resolved."""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

import pytest

from hub.cli.quarantine import _collect
from hub.contract import FEED_PREFIX, H_EVENT_ID, H_RESOURCE
from hub.demo.data import record_generator
from hub.identifiers import DISTRICT_CODES
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import Settings

from .hubproc import HubProcess, TopicReader, header, until
from .test_exchange import LATERAL_FEED, PARSED, RESOURCE, SCHEMA, delta, publish, schema_id

pytestmark = pytest.mark.integration

QUARANTINE = "quarantine.municipal.health"
FEEDS = [LATERAL_FEED, *(f"{FEED_PREFIX}district.{c}" for c in DISTRICT_CODES)]
FUTURE_MS = int(time.time() * 1000) + 3 * 86_400_000


def faults() -> list[tuple[dict[str, Any], set[tuple[str, str]]]]:
    """Changes that break rules of municipal.health.vaccination, and the (rule, field) each must be reported as."""
    return [
        ({"resident_id": "310115198807061235", "dose_number": 0},  # wrong check character; dose below 1
         {("resident_id", "resident_id"), ("range", "dose_number")}),
        ({"district": "310103", "name": "  ", "site_uscc": "91310115MAQ283FQ6X"},  # retired district, blank, USCC
         {("district_code", "district"), ("required", "name"), ("uscc", "site_uscc")}),
        ({"vaccinated_at": FUTURE_MS}, {("not_future", "vaccinated_at")}),
    ]


async def test_bad_records_are_quarantined_with_every_reason_and_a_fix_resolves_them(hub: HubProcess) -> None:
    sid = await schema_id(hub)
    make = record_generator(SCHEMA)  # passes the seed catalogue's rules
    rng = random.Random(2026)
    items, good_ids, bad = [], set(), {}
    fixes: dict[str, dict[str, Any]] = {}
    for i in range(30):
        record, eid = make(rng), str(uuid.uuid4())
        headers = [(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, eid.encode())]
        if i % 10 == 9:  # 10% bad, each with a different mix of faults
            change, expected = faults()[i // 10]
            bad[eid] = expected
            fixes[eid] = record
            record = {**record, **change}
        else:
            good_ids.add(eid)
        items.append((framing.encode(sid, PARSED, record), headers))
    reader = await TopicReader(hub.bootstrap).start([QUARANTINE, *FEEDS])
    before = hub.metrics()
    try:
        await publish(hub, items)

        def ids(rs: list[Any], topic_prefix: str) -> set[str]:
            return {(header(r, H_EVENT_ID) or b"").decode() for r in rs if r.topic.startswith(topic_prefix)}

        got = await reader.read_until(lambda rs: good_ids <= ids(rs, LATERAL_FEED) and set(bad) <= ids(rs, QUARANTINE))
    finally:
        await reader.stop()
    ours = good_ids | set(bad)
    delivered = ids([r for r in got if r.topic in FEEDS], "feed.") & ours
    assert delivered == good_ids  # exactly the good ones, in every feed
    quarantined = {(header(r, H_EVENT_ID) or b"").decode(): r for r in got if r.topic == QUARANTINE}
    async with RegistryClient(hub.api, token=hub.token) as client:
        for eid, expected in bad.items():
            qsid, body = framing.split(quarantined[eid].value)
            entry = framing.decode_body(body, (await client.schema_by_id(qsid)).parsed)
            assert {(v["rule"], v["field"]) for v in entry["violations"]} == expected, entry["violations"]
            assert entry["rule"] == entry["violations"][0]["rule"] and entry["record_key"] == fixes[eid]["record_id"]
    after = hub.metrics()
    for rule in ("resident_id", "range", "district_code", "required", "uscc", "not_future"):
        assert delta(after, before, "hub_quarantined_total", rule=rule) == 1, rule

    # the provider fixes the first bad record and resends it under the same event id: delivered, not a duplicate
    fixed_id = next(iter(bad))
    reader = await TopicReader(hub.bootstrap).start([LATERAL_FEED])
    try:
        await publish(hub, [(framing.encode(sid, PARSED, fixes[fixed_id]),
                             [(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, fixed_id.encode())])])
        got = await reader.read_until(lambda rs: any(header(r, H_EVENT_ID) == fixed_id.encode() for r in rs))
    finally:
        await reader.stop()
    assert [header(r, H_EVENT_ID) for r in got].count(fixed_id.encode()) == 1

    # hub quarantine list: the fixed entry resolved (once its publish audit is written), the others open
    settings = Settings(bootstrap=hub.bootstrap)

    async def listed() -> dict[str, str]:
        entries, error = await _collect(settings, hub.bootstrap, hub.api, "municipal.health", 0)
        assert error is None, error
        return {e["event_id"]: e["status"] for e in entries if e["event_id"] in bad}

    statuses = await until(listed, lambda s: s.get(fixed_id) == "resolved", 30, "the fixed record shows resolved")
    assert statuses == {eid: "resolved" if eid == fixed_id else "open" for eid in bad}
    entries, _ = await _collect(settings, hub.bootstrap, hub.api, "municipal.health", 0)
    shown = next(e for e in entries if e["event_id"] == list(bad)[1])
    assert {(r["rule"], r["field"]) for r in shown["reasons"]} == bad[list(bad)[1]]
    assert json.dumps(entries, ensure_ascii=False)  # what --json prints
