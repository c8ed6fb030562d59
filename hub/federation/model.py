"""Federation between hubs on separate Kafka clusters, as plain data and pure functions (no I/O here).

A *platform* is one hub on its own cluster (the municipal hub, the national platform, a regional peer), known by a
MirrorMaker 2 cluster alias. A *link* is one replication flow ``source -> target``: the feed of the node that
stands for the target platform on the source hub (``feed.<export_node>``) is mirrored by MM2 to the target cluster
as ``<source alias>.feed.<export_node>`` (MM2's ``DefaultReplicationPolicy``), where the target's federation
gateway (``hub.federation.gateway``) translates each record's schema id into the target registry's id of the same
schema (mirrored under ``<source alias>.<subject>``), names the target's mirrored catalogue entry, and writes it to
``ingress.<peer_node>``: the node standing for the source platform on the target hub. The target hub then
validates, authorises, routes, audits and counts it like any ingress record.

See ``docs/federation.md`` for the topology and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.catalogue.model import tier_of, validate_node_id
from hub.contract import feed_topic, ingress_topic
from hub.registry.framing import HEADER, HEADER_SIZE, MAGIC

ALIAS = re.compile(r"^[a-z][a-z0-9-]*$")  # no dots: MM2's DefaultReplicationPolicy separates alias and topic by "."
UNKNOWN_SCHEMA_ID = 0
"""The schema id a record is re-framed with when its source id has no translation: Confluent-compatible registries
(the hub's included) number schemas from 1, so the receiving hub quarantines it as ``unknown_schema`` instead of
decoding it with whatever schema the source id happens to name in the receiving registry."""
MAX_LINEAGE_HOPS = 32
PEER_TIERS = ("national", "region")
"""The tiers other platforms appear as on a hub (a link's peer node is ``national`` or ``region.<name>``): only
records of their resources keep a prior ``hub-lineage``; a department or a district cannot claim hops it never
made."""


# ---------------------------------------------------------------- configuration
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Platform(_Model):
    """One hub on its own Kafka cluster."""

    bootstrap: str = Field(description="host:port of the platform's Kafka cluster")
    api: str = Field(description="URL of the platform hub's HTTP API (its schema registry and control plane)")
    token_file: Path | None = Field(None, description="file holding an operator token of that hub")
    token: str | None = Field(None, description="the operator token itself (instead of token_file)")

    def operator_token(self) -> str:
        if self.token:
            return self.token
        if self.token_file is None:
            raise ValueError(f"platform at {self.api}: give token or token_file")
        return self.token_file.expanduser().read_text(encoding="utf-8").strip()


class Link(_Model):
    """One replication flow: ``export_node``'s feed on ``source`` crosses to ``peer_node``'s ingress on ``target``."""

    source: str
    target: str
    export_node: str = Field(description="node on the source hub that stands for the target platform")
    peer_node: str = Field(description="node on the target hub that stands for the source platform")
    resources: tuple[str, ...] = Field(default=(), description="source resource ids mirrored into the target "
                                       "catalogue; records of any other resource are quarantined on arrival")

    @field_validator("export_node", "peer_node")
    @classmethod
    def _node(cls, value: str) -> str:
        return validate_node_id(value)

    @field_validator("peer_node")
    @classmethod
    def _peer(cls, value: str) -> str:
        if tier_of(value) not in PEER_TIERS:
            raise ValueError(f"peer node {value}: another platform is national or region.<name> on this hub")
        return value

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"

    @property
    def source_topic(self) -> str:
        return feed_topic(self.export_node)

    @property
    def target_topic(self) -> str:
        return mirrored_topic(self.source, self.source_topic)

    @property
    def ingress(self) -> str:
        return ingress_topic(self.peer_node)


class FederationConfig(_Model):
    """The platforms and links of one federation (``hub federation start --config``)."""

    platforms: dict[str, Platform]
    links: tuple[Link, ...]
    mm2_heap: str = "384m"
    offset_lag_max: int = Field(10, ge=0, description="MM2 writes an offset sync at least every this many records "
                                "(the precision of translated consumer offsets)")
    checkpoint_interval_s: int = Field(1, ge=1)

    @field_validator("platforms")
    @classmethod
    def _aliases(cls, value: dict[str, Platform]) -> dict[str, Platform]:
        for alias in value:
            if not ALIAS.match(alias):
                raise ValueError(f"platform alias {alias!r}: lowercase letters, digits and dashes, no dots")
        return value

    @model_validator(mode="after")
    def _check_links(self) -> FederationConfig:
        for link in self.links:
            for alias in (link.source, link.target):
                if alias not in self.platforms:
                    raise ValueError(f"link {link.name}: no platform {alias!r}")
            if link.source == link.target:
                raise ValueError(f"link {link.name}: source and target are the same platform")
        names = [link.name for link in self.links]
        if len(set(names)) != len(names):
            raise ValueError("one link per (source, target): put every exported node of a flow in one link")
        return self


def load_federation_config(path: Path) -> FederationConfig:
    return FederationConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


# ---------------------------------------------------------------- names
def mirrored_topic(source_alias: str, topic: str) -> str:
    """The name MM2's DefaultReplicationPolicy gives ``topic`` of ``source_alias`` on the target cluster."""
    return f"{source_alias}.{topic}"


def mirrored_subject(source_alias: str, subject: str) -> str:
    """Where the receiving registry keeps the source registry's schemas of ``subject``."""
    return f"{source_alias}.{subject}"


def mirrored_resource_id(peer_node: str, remote_resource: str) -> str:
    """The receiving catalogue's entry for a resource of the other platform: provided by the peer node, named
    after the remote id (a resource name has no dots, so the remote id's dots become underscores)."""
    return f"{peer_node}.{remote_resource.replace('.', '_')}"


def mirrored_resource_spec(remote: Mapping[str, Any], link: Link) -> dict[str, Any]:
    """The receiving hub's catalogue entry (a ``POST /v1/resources`` body) for a remote catalogue entry.

    It keeps what decides validation and sharing on arrival (field levels, primary key, sharing type, quality rules
    but ``reference`` ones, report_up: on the national platform that delivers to its own ``national`` node) and
    drops locality: the source platform has already returned rows to its districts.
    """
    peer = link.peer_node
    return {
        "id": mirrored_resource_id(peer, str(remote["id"])),
        "title": str(remote.get("title") or remote["id"])[:500],
        "provider": peer,
        "tier": tier_of(peer),
        "subject": mirrored_subject(link.source, str(remote["subject"])),
        "sharing": remote.get("sharing", "unconditional"),
        "legal_basis": remote.get("legal_basis"),
        "field_levels": dict(remote.get("field_levels") or {}),
        "primary_key": list(remote.get("primary_key") or []),
        "report_up": bool(remote.get("report_up", False)),
        # a reference rule names a resource of the source platform, which this catalogue has not (the source hub
        # checked it against its own rows); every other rule is checked again on arrival
        "quality_rules": [r for r in remote.get("quality_rules") or [] if r.get("rule") != "reference"],
        "update_frequency": remote.get("update_frequency", "realtime"),
        "description": f"Mirrored from {link.source} ({remote['id']}) through the federation link {link.name}.",
    }


# ---------------------------------------------------------------- the records that cross
def source_schema_id(value: bytes | None) -> int | None:
    """The schema id of a Confluent-framed value, or None if it is not framed (the receiving hub rejects it)."""
    if value is None or len(value) < HEADER_SIZE or value[0] != MAGIC:
        return None
    return int.from_bytes(value[1:HEADER_SIZE], "big")


def translate_frame(value: bytes | None, id_map: Mapping[int, int]) -> bytes | None:
    """Re-frame a value with the receiving registry's id of its schema; the Avro body is left byte for byte.

    A value that is not framed passes as it is (the receiving hub quarantines it with its framing rule); a framed
    value whose id has no translation gets ``UNKNOWN_SCHEMA_ID``, never its source id, which names an unrelated
    schema (or none) in the receiving registry.
    """
    source_id = source_schema_id(value)
    if source_id is None:
        return value
    assert value is not None
    return HEADER.pack(MAGIC, id_map.get(source_id, UNKNOWN_SCHEMA_ID)) + value[HEADER_SIZE:]


def continued_lineage(prior: bytes | None, provider: str, consumer: str, operator: str) -> bytes:
    """The ``hub-lineage`` of a delivery: the hops the record made on other platforms (as the federation gateway
    carried them), then this hub's: provider, hub, consumer. A malformed or oversized prior lineage is dropped,
    not trusted: only this hub's hops are then written."""
    hops = parse_lineage(prior)
    return json.dumps([*hops, provider, operator, consumer]).encode()


def parse_lineage(raw: bytes | None) -> list[str]:
    if not raw:
        return []
    try:
        hops = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(hops, list) or len(hops) > MAX_LINEAGE_HOPS:
        return []
    if not all(isinstance(h, str) and 0 < len(h) <= 200 for h in hops):
        return []
    return hops


# ---------------------------------------------------------------- MirrorMaker 2's configuration
def mm2_properties(config: FederationConfig, client: Mapping[str, str] | None = None) -> dict[str, str]:
    """``mm2.properties`` of one dedicated MirrorMaker 2 process running every link of the federation.

    Every internal topic gets one replica (local single-broker clusters; raise for real ones); checkpoints and
    group offset sync are on, so a consumer group's committed offsets on a mirrored topic appear translated on
    the target; ACL sync is off (the hub manages its own ACLs per node). ``client``: connection properties
    (SASL, ``hub.broker.kafka_config.java_client_properties``) applied to every cluster.
    """
    aliases = sorted({a for link in config.links for a in (link.source, link.target)})
    props: dict[str, str] = {"clusters": ", ".join(aliases)}
    for alias in aliases:
        props[f"{alias}.bootstrap.servers"] = config.platforms[alias].bootstrap
        for key, value in (client or {}).items():
            props[f"{alias}.{key}"] = value
    for link in config.links:
        props[f"{link.name}.enabled"] = "true"
        props[f"{link.name}.topics"] = re.escape(link.source_topic)
    interval = str(config.checkpoint_interval_s)
    props.update({
        "replication.policy.class": "org.apache.kafka.connect.mirror.DefaultReplicationPolicy",
        "tasks.max": "1",
        "replication.factor": "1",
        "checkpoints.topic.replication.factor": "1",
        "heartbeats.topic.replication.factor": "1",
        "offset-syncs.topic.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        "config.storage.replication.factor": "1",
        "emit.checkpoints.enabled": "true",
        "emit.checkpoints.interval.seconds": interval,
        "sync.group.offsets.enabled": "true",
        "sync.group.offsets.interval.seconds": interval,
        "offset.lag.max": str(config.offset_lag_max),
        "refresh.topics.interval.seconds": "2",
        "refresh.groups.interval.seconds": "2",
        "sync.topic.acls.enabled": "false",
        "emit.heartbeats.interval.seconds": "1",
    })
    return props


def properties_text(props: Mapping[str, str]) -> str:
    """Java properties text (keys with ``->`` and ``\\`` need no escaping in values read by MM2; backslashes do)."""
    return "".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in props.items())


# ---------------------------------------------------------------- status
@dataclass(frozen=True)
class LinkStatus:
    """How far one link has carried its topic: source and target end offsets, and the last record that crossed."""

    link: str
    source_topic: str
    target_topic: str
    source_end: int
    target_end: int
    lag: int
    last_transfer_ms: int | None

    def to_json(self) -> dict[str, Any]:
        return {"link": self.link, "source_topic": self.source_topic, "target_topic": self.target_topic,
                "source_end": self.source_end, "target_end": self.target_end, "lag": self.lag,
                "last_transfer_ms": self.last_transfer_ms}


def link_status(link: Link, source_ends: Mapping[int, int], target_ends: Mapping[int, int],
                last_timestamps: Iterable[int]) -> LinkStatus:
    """Replication lag per partition is source end minus target end (never below 0: after an MM2 restart the
    target may hold re-sent copies); the link's lag is their sum. The last transfer is the newest target record's
    timestamp (MM2 keeps the source timestamp, so it is when that record was written on the source)."""
    lag = sum(max(0, end - target_ends.get(p, 0)) for p, end in source_ends.items())
    stamps = [t for t in last_timestamps if t >= 0]
    return LinkStatus(link.name, link.source_topic, link.target_topic, sum(source_ends.values()),
                      sum(target_ends.values()), lag, max(stamps) if stamps else None)
