"""The control state (pure): applying control records, the catalogue's history and counts, the worker snapshot,
and the Avro codec of every control topic (round trips through the real schemas in schemas/hub/)."""

from __future__ import annotations

import json

import fastavro
import pytest

from hub.catalogue.model import QualityRule, Resource
from hub.contract import CATALOG_TOPIC, GRANTS_TOPIC, NODES_TOPIC, OBJECTIONS_TOPIC, SCENARIOS_TOPIC, STATE_TOPICS
from hub.control.codec import SCHEMA_FILES, ControlEncoder, DecodeError, decode, key_of, schema_text, subject_of
from hub.control.state import (
    CatalogEntry,
    ControlState,
    NodeEntry,
    ScenarioEntry,
    parse_version_key,
    snapshot,
    version_key,
)
from hub.objections.machine import FilingRequest, Limits, file, transition
from hub.policy.grants import GrantIndex
from hub.policy.model import Grant, Scenario
from hub.registry import framing

NOW = 1_700_000_000_000


def node(node_id: str, **kw: object) -> NodeEntry:
    data: dict = dict(id=node_id, title=node_id, clearance="L3", created_at=NOW, updated_at=NOW)
    return NodeEntry(**{**data, **kw})


def resource(rid: str = "municipal.health.vaccination", provider: str = "municipal.health", **kw: object) -> Resource:
    data: dict = dict(id=rid, title="Vaccination", provider=provider, tier=provider.split(".")[0],
                      subject=f"{rid}-value", field_levels={"record_id": "L1", "district": "L1"},
                      primary_key=["record_id"], locality_field="district",
                      quality_rules=[QualityRule(field="record_id", rule="required")])
    data.update(kw)
    return Resource(**data)


def entry(version: int = 1, retired: bool = False, **kw: object) -> CatalogEntry:
    return CatalogEntry(resource=resource(**kw), version=version, retired=retired, updated_by="hub", updated_at=NOW)


def grant(gid: str = "g1", consumer: str = "district.310115", state: str = "active", **kw: object) -> Grant:
    data: dict = dict(id=gid, consumer=consumer, resource="municipal.health.vaccination", scenario="follow-up",
                      mode="subscribe", valid_from=0, state=state, updated_at=NOW)
    return Grant(**{**data, **kw})


def scenario(sid: str = "follow-up", version: int = 1) -> ScenarioEntry:
    return ScenarioEntry(scenario=Scenario(id=sid, legal_basis="a law"), version=version, updated_at=NOW)


def populated() -> ControlState:
    state = ControlState()
    for n in ("hub", "municipal.health", "district.310115", "municipal.civil-affairs"):
        state.apply(NODES_TOPIC, n, node(n))
    state.apply(SCENARIOS_TOPIC, "follow-up", scenario())
    state.apply(CATALOG_TOPIC, version_key("municipal.health.vaccination", 1), entry())
    state.apply(GRANTS_TOPIC, "g1", grant())
    return state


def test_latest_record_of_a_key_wins_and_tombstones_forget() -> None:
    state = populated()
    state.apply(NODES_TOPIC, "district.310115", node("district.310115", title="Pudong"))
    assert state.nodes["district.310115"].title == "Pudong"
    state.apply(GRANTS_TOPIC, "g1", grant(state="revoked", reason="done"))
    assert state.grants["g1"].state == "revoked"
    state.apply(GRANTS_TOPIC, "g1", None)
    assert "g1" not in state.grants
    state.apply(NODES_TOPIC, "municipal.civil-affairs", None)
    assert state.node("municipal.civil-affairs") is None


def test_records_whose_key_disagrees_with_their_content_are_ignored() -> None:
    state = ControlState()
    state.apply(NODES_TOPIC, "national", node("district.310115"))
    state.apply(CATALOG_TOPIC, "municipal.health.vaccination@2", entry(version=1))
    state.apply(CATALOG_TOPIC, "not-a-version-key", entry())
    assert not state.nodes and not state.catalog


def test_catalogue_keeps_every_version_and_the_highest_is_current() -> None:
    state = populated()
    state.apply(CATALOG_TOPIC, "municipal.health.vaccination@2", entry(version=2, title="v2"))
    state.apply(CATALOG_TOPIC, "municipal.health.vaccination@3", entry(version=3, title="v2", retired=True))
    assert [e.version for e in state.history("municipal.health.vaccination")] == [1, 2, 3]
    current = state.entry("municipal.health.vaccination")
    assert current is not None and current.version == 3 and current.retired
    assert state.entries() == []
    assert [e.version for e in state.entries(retired=True)] == [3]
    assert state.subject_owners("municipal.health.vaccination-value") == {"municipal.health"}


def test_subject_bindings_follow_versions_overwrites_and_tombstones() -> None:
    state = populated()
    subject = "municipal.health.vaccination-value"
    moved = entry(version=2, subject="municipal.health.v2-value")
    state.apply(CATALOG_TOPIC, moved.key, moved)
    assert state.subject_owners(subject) == {"municipal.health"}  # version 1 still binds it
    assert state.subject_owners("municipal.health.v2-value") == {"municipal.health"}
    state.apply(CATALOG_TOPIC, "municipal.health.vaccination@1", entry(subject="municipal.health.v2-value"))
    assert state.subject_owners(subject) == set()  # the same key rewritten: the old binding is gone
    state.apply(CATALOG_TOPIC, "municipal.health.vaccination@1", None)
    state.apply(CATALOG_TOPIC, "municipal.health.vaccination@2", None)
    assert state.subject_owners("municipal.health.v2-value") == set() and not state.catalog and not state.bindings


def test_catalogue_counts_by_tier_provider_and_sharing() -> None:
    state = populated()
    other = entry(rid="national.credit", provider="national", sharing="none", legal_basis="law")
    state.apply(CATALOG_TOPIC, other.key, other)
    gone = entry(rid="municipal.health.old", retired=True)
    state.apply(CATALOG_TOPIC, gone.key, gone)
    counts = state.catalogue_counts()
    assert counts.total == 2 and counts.retired == 1
    assert counts.by_tier == {"municipal": 1, "national": 1}
    assert counts.by_provider == {"municipal.health": 1, "national": 1}
    assert counts.by_sharing == {"none": 1, "unconditional": 1}


def test_node_lookup_by_token_id_skips_removed_nodes() -> None:
    state = ControlState()
    state.apply(NODES_TOPIC, "national", node("national", token_id="abcdefabcdef", token_hash="sha256$00$11"))
    assert state.node_by_token_id("abcdefabcdef") is not None
    state.apply(NODES_TOPIC, "national", node("national", token_id="abcdefabcdef", token_hash="x", removed=True))
    assert state.node_by_token_id("abcdefabcdef") is None


def test_snapshot_is_what_the_worker_routes_by() -> None:
    state = populated()
    state.apply(GRANTS_TOPIC, "g2", grant("g2", consumer="municipal.civil-affairs", state="requested"))
    state.apply(GRANTS_TOPIC, "g3", grant("g3", consumer="municipal.civil-affairs", mode="call"))
    retired = entry(rid="municipal.health.old", retired=True)
    state.apply(CATALOG_TOPIC, retired.key, retired)
    snap = snapshot(state, version=7)
    assert snap.version == 7
    assert {n.id for n in snap.config.nodes} == {"hub", "municipal.health", "district.310115",
                                                 "municipal.civil-affairs"}
    assert [r.id for r in snap.config.resources] == ["municipal.health.vaccination"]
    assert [s.id for s in snap.config.subscriptions] == ["g1"]  # active subscribe grants only
    assert snap.config.subscriptions[0].row_scope == "all"
    assert {g.id for g in snap.grants} == {"g1", "g2", "g3"}
    assert set(snap.scenarios) == {"follow-up"}
    index = GrantIndex(snap.grants)
    assert [g.id for g in index.active_for_resource("municipal.health.vaccination")] == ["g1", "g3"]
    # a removed provider takes its resources (and the grants on them) out of routing
    state.apply(NODES_TOPIC, "municipal.health", node("municipal.health", removed=True))
    snap = snapshot(state)
    assert snap.config.resources == [] and snap.config.subscriptions == []
    assert snap.config.resource("municipal.health.vaccination") is None


def test_version_keys() -> None:
    assert version_key("municipal.health.vaccination", 3) == "municipal.health.vaccination@3"
    assert parse_version_key("municipal.health.vaccination@3") == ("municipal.health.vaccination", 3)
    for bad in ("x", "x@", "@3", "x@v3"):
        assert parse_version_key(bad) is None


# ---------------------------------------------------------------- codec

def test_every_control_topic_has_a_documented_schema() -> None:
    assert set(SCHEMA_FILES) == set(STATE_TOPICS)
    for topic in STATE_TOPICS:
        document = json.loads(schema_text(topic))
        fastavro.parse_schema(document)
        assert subject_of(topic) == f"{topic}-value"


SAMPLES = {
    NODES_TOPIC: node("district.310115", token_id="abcdefabcdef", token_hash="sha256$00$11", updated_by="hub"),
    SCENARIOS_TOPIC: scenario(version=2),
    CATALOG_TOPIC: entry(version=2, sharing="none", legal_basis="《精神卫生法》",
                         quality_rules=[QualityRule(field="record_id", rule="range", args={"min": 1, "max": 9})]),
    GRANTS_TOPIC: grant(allowed_fields=("record_id",), valid_to=NOW + 1000),
    OBJECTIONS_TOPIC: transition(
        file(FilingRequest(resource="municipal.health.vaccination", record_key="r1", reason="wrong"),
             objection_id="obj-1", filer="district.310115", provider="municipal.health",
             recipients=["district.310115"], now=NOW, limits=Limits()),
        "accept", "hub", NOW + 5, Limits(), note="accepted"),
}


def test_the_snapshot_lists_flagged_records_and_correctable_objections() -> None:
    state = ControlState()
    accepted = SAMPLES[OBJECTIONS_TOPIC]
    state.apply(OBJECTIONS_TOPIC, "obj-1", accepted)
    assert snapshot(state).flags == {} and snapshot(state).corrections == {}
    flagged = transition(accepted, "flag", "hub", NOW + 9, Limits())
    state.apply(OBJECTIONS_TOPIC, "obj-1", flagged)
    snap = snapshot(state)
    assert snap.flags == {"municipal.health.vaccination": {"r1": "obj-1"}}
    assert snap.corrections == {"obj-1": flagged}


@pytest.mark.parametrize("topic", STATE_TOPICS)
def test_codec_round_trip(topic: str) -> None:
    ids = {t: i + 1 for i, t in enumerate(STATE_TOPICS)}
    parsed = {ids[t]: framing.parse_schema(schema_text(t)) for t in STATE_TOPICS}
    record = ControlEncoder(ids).record(topic, SAMPLES[topic])
    assert record.topic == topic and record.key == key_of(topic, SAMPLES[topic]).encode()
    key, back = decode(topic, record.key, record.value, parsed.get)
    assert key == record.key.decode() and back == SAMPLES[topic]
    assert decode(topic, record.key, None, parsed.get) == (key, None)


def test_decode_refuses_what_it_cannot_read() -> None:
    parsed = {1: framing.parse_schema(schema_text(NODES_TOPIC))}
    good = ControlEncoder({NODES_TOPIC: 1}).record(NODES_TOPIC, SAMPLES[NODES_TOPIC])
    with pytest.raises(DecodeError, match="without a key"):
        decode(NODES_TOPIC, None, good.value, parsed.get)
    with pytest.raises(DecodeError, match="not Confluent-framed"):
        decode(NODES_TOPIC, good.key, b"{json}", parsed.get)
    with pytest.raises(DecodeError, match="unknown to the registry"):
        decode(NODES_TOPIC, good.key, framing.HEADER.pack(0, 99) + good.value[5:], parsed.get)
    with pytest.raises(DecodeError, match="does not read"):
        decode(NODES_TOPIC, good.key, good.value[:-3], parsed.get)
    # a node id the Node model refuses, even though the Avro is fine
    bad = NodeEntry.model_construct(**{**SAMPLES[NODES_TOPIC].model_dump(), "id": "Not A Node"})
    raw = ControlEncoder({NODES_TOPIC: 1})._encoders[NODES_TOPIC]({**bad.model_dump(), "tier": "district"})
    with pytest.raises(DecodeError):
        decode(NODES_TOPIC, b"Not A Node", raw, parsed.get)
