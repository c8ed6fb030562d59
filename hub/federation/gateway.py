"""The receiving side of one federation link: mirrored topic -> schema ids translated -> the peer node's ingress.

``python -m hub.federation.gateway <federation.yaml> <source>-><target>`` (``hub federation start`` runs one per
link). On start it prepares the target hub (idempotently, through its API):

* the peer node (the node standing for the source platform) is registered if missing;
* for each resource of the link, the source registry's latest schema of its subject is registered under
  ``<source alias>.<subject>`` in the target registry (compatibility ``NONE``: that subject mirrors whatever the
  source accepted; each record is still decoded with its exact schema), and a mirrored catalogue entry is created.

Then, a batch at a time, it reads ``<source alias>.feed.<export node>`` (MirrorMaker 2's copy), translates each
record's schema id (a source id not seen yet is fetched from the source registry and registered under the mirrored
subject: masked variants included), names the mirrored resource, carries ``hub-event-id`` and ``hub-lineage``, and
writes it to ``ingress.<peer node>``; it commits its input offsets once the target cluster acknowledged the batch
(at least once; the target hub drops repeats by event id). Nothing is validated here: the target hub's worker
validates, authorises, routes, audits and counts, and quarantines what fails, as for any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from hub.broker.clients import make_consumer, make_producer
from hub.contract import H_EVENT_ID, H_LINEAGE, H_RESOURCE
from hub.federation.model import (
    FederationConfig,
    Link,
    Platform,
    load_federation_config,
    mirrored_resource_id,
    mirrored_resource_spec,
    mirrored_subject,
    source_schema_id,
    translate_frame,
)
from hub.registry.client import MEDIA_TYPE, RegistryClient, RegistryClientError, SchemaNotFound
from hub.settings import Settings

log = logging.getLogger("hub.federation")

BATCH_MAX = 2000


def gateway_group(link: Link) -> str:
    return f"hub-federation-{link.source}-{link.target}"


@dataclass(frozen=True)
class Crossing:
    """What one mirrored record becomes on the target's ingress."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


def crossing_of(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]], timestamp_ms: int,
                link: Link, id_map: Mapping[int, int]) -> Crossing:
    """Pure: the target ingress record for one mirrored feed record (resource renamed to its mirrored entry, schema
    id translated, event id and lineage carried; the source hub's grant/scenario headers stay behind)."""
    given = dict(headers)
    out: list[tuple[str, bytes]] = []
    remote = given.get(H_RESOURCE)
    if remote:
        out.append((H_RESOURCE, mirrored_resource_id(link.peer_node, remote.decode(errors="replace")).encode()))
    for name in (H_EVENT_ID, H_LINEAGE):
        if given.get(name):
            out.append((name, given[name]))
    return Crossing(key, translate_frame(value, id_map), out, timestamp_ms)


class Hub:
    """The few calls the gateway makes to a hub's HTTP API (registry + control plane), as its operator."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        token = platform.operator_token()
        self.http = httpx.AsyncClient(base_url=platform.api.rstrip("/"), timeout=15,
                                      headers={"Authorization": f"Bearer {token}"})
        self.registry = RegistryClient(platform.api, token=token)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.registry.aclose()

    async def resource(self, resource_id: str) -> dict[str, Any] | None:
        response = await self.http.get(f"/v1/resources/{resource_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    async def ensure_node(self, node_id: str, title: str) -> None:
        response = await self.http.get(f"/v1/nodes/{node_id}")
        if response.status_code == 200 and not response.json().get("removed"):
            return
        created = await self.http.post("/v1/nodes", json={"id": node_id, "title": title})
        if created.status_code not in (201, 409):
            created.raise_for_status()

    async def ensure_resource(self, spec: dict[str, Any]) -> None:
        if await self.resource(spec["id"]) is not None:
            return
        created = await self.http.post("/v1/resources", json=spec)
        if created.status_code not in (201, 409):
            raise RuntimeError(f"cataloguing {spec['id']} failed: {created.status_code} {created.text[:500]}")

    async def mirror_subject_config(self, subject: str) -> None:
        response = await self.http.put(f"/config/{quote(subject, safe='')}", json={"compatibility": "NONE"},
                                       headers={"Content-Type": MEDIA_TYPE})
        response.raise_for_status()


@dataclass
class SchemaMirror:
    """Source schema id -> target schema id of the same schema, registered under the mirrored subject on demand."""

    link: Link
    source: Hub
    target: Hub
    subjects: dict[str, str] = field(default_factory=dict)  # remote resource id -> its remote subject
    id_map: dict[int, int] = field(default_factory=dict)
    _configured: set[str] = field(default_factory=set)

    async def mirror(self, source_id: int, remote_resource: str) -> None:
        """Register the source schema ``source_id`` under the mirrored subject of ``remote_resource``'s subject.
        A resource outside the link or an id the source registry does not know is left untranslated (the record
        then arrives with ``UNKNOWN_SCHEMA_ID`` and is quarantined by the target hub)."""
        subject = self.subjects.get(remote_resource)
        if subject is None or source_id in self.id_map:
            return
        try:
            schema = await self.source.registry.resolved(source_id)  # references written in: self-contained
        except SchemaNotFound:
            log.warning("link %s: schema id %d is unknown to the source registry", self.link.name, source_id)
            return
        target_subject = mirrored_subject(self.link.source, subject)
        if target_subject not in self._configured:
            await self.target.mirror_subject_config(target_subject)
            self._configured.add(target_subject)
        self.id_map[source_id] = await self.target.registry.register(target_subject, json.dumps(schema))

    async def prepare(self) -> None:
        """The peer node, the mirrored subjects (latest source version) and the mirrored catalogue entries."""
        link = self.link
        await self.target.ensure_node(link.peer_node, f"Federation peer: the {link.source} platform")
        for remote_id in link.resources:
            remote = await self.source.resource(remote_id)
            if remote is None or "subject" not in remote:
                raise RuntimeError(f"link {link.name}: resource {remote_id} is not (fully) visible on {link.source}")
            self.subjects[remote_id] = str(remote["subject"])
            latest_id, _, _ = await self.source.registry.latest(str(remote["subject"]))
            await self.mirror(latest_id, remote_id)
            await self.target.ensure_resource(mirrored_resource_spec(remote, link))


def partition_for(key: bytes | None, event_id: bytes | None, partitions: int) -> int | None:
    """A keyless record is placed by its event id, so a repeat lands where its first copy did (the target hub's
    dedupe window is per partition); a keyed one is left to the producer's key hash."""
    if key is not None or not event_id or partitions <= 1:
        return None
    return zlib.crc32(event_id) % partitions


async def run_gateway(config: FederationConfig, link: Link, stop: asyncio.Event) -> None:
    source, target = Hub(config.platforms[link.source]), Hub(config.platforms[link.target])
    mirror = SchemaMirror(link, source, target)
    bootstrap = config.platforms[link.target].bootstrap
    settings = Settings()  # HUB_KAFKA_*: the target cluster's credentials, if it is secured (SASL)
    consumer = make_consumer(settings, bootstrap, link.target_topic, group_id=gateway_group(link),
                             enable_auto_commit=False, auto_offset_reset="earliest", metadata_max_age_ms=2000)
    producer = make_producer(settings, bootstrap, enable_idempotence=True, linger_ms=2)
    try:
        while True:  # the hubs may still be starting: try again until they answer
            try:
                await mirror.prepare()
                break
            except (httpx.HTTPError, RegistryClientError, RuntimeError, OSError) as exc:
                log.warning("federation gateway %s: preparing the target failed (%s); retrying", link.name, exc)
                if stop.is_set():
                    return
                await asyncio.sleep(2)
        await producer.start()
        await consumer.start()
        log.warning("federation gateway %s: %s -> %s", link.name, link.target_topic, link.ingress)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH_MAX)
            records = [m for msgs in batches.values() for m in msgs]
            if not records:
                continue
            for m in records:  # I/O outside the pure translation: any schema id not mirrored yet
                sid = source_schema_id(m.value)
                resource = dict(m.headers).get(H_RESOURCE)
                if sid is not None and resource and sid not in mirror.id_map:
                    await mirror.mirror(sid, resource.decode(errors="replace"))
            partitions = len(await producer.partitions_for(link.ingress))
            futures = []
            for m in records:
                out = crossing_of(m.key, m.value, m.headers, m.timestamp, link, mirror.id_map)
                partition = partition_for(out.key, dict(out.headers).get(H_EVENT_ID), partitions)
                futures.append(await producer.send(link.ingress, out.value, key=out.key, headers=out.headers,
                                                   partition=partition, timestamp_ms=out.timestamp_ms))
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await producer.stop()
        await source.aclose()
        await target.aclose()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m hub.federation.gateway <federation.yaml> <source>-><target>")
    config = load_federation_config(Path(args[0]))
    link = next((k for k in config.links if k.name == args[1]), None)
    if link is None:
        raise SystemExit(f"no link {args[1]!r} in {args[0]}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_gateway(config, link, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
