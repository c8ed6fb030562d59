"""The call agent (共享调用): answers ``CallRequest``s from the call state, a batch at a time.

The worker hands it the records of ``call.<node>.request`` topics and of ``hub.calls`` (``submit``); it works
them in order on a task of its own, so a call waiting for the state to catch up never holds up the exchange:

* requests are admitted (or answered) at their partition; admitted calls travel on ``hub.calls`` to the
  partition owning the state of their next stage (``hub.calls.core``: quota -> index -> lookup), or are handled
  at once when this worker owns that partition;
* the last stage writes the ``CallReply`` to ``call.<node>.reply``, then the ``call`` audit record through the
  partition's hash chain (the worker's audit writer), and counts it.

Partition index p of the request topics, ``hub.calls`` and the state topics belongs to one worker
(``hub.worker.assignor``), which also writes partition p of ``hub.audit``. ``hub.calls`` records are keyed by a
store key and land on that row's ``hub.records`` partition (both partitioned by ``partition_of``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hub.audit import records
from hub.broker.records import OutRecord, RawRecord, partition_of
from hub.broker.sender import BatchSender, gather_all
from hub.calls import core
from hub.calls.core import Answer, BadRequest, CallView, Envelope, Forward, Reply, Row, Stage
from hub.calls.state import CallState, fetch_schemas
from hub.catalogue.model import Resource
from hub.contract import (
    CALLS_TOPIC,
    H_EVENT_ID,
    H_REQUEST_ID,
    H_RESOURCE,
    H_STAGE,
    QUOTA_TOPIC,
    REPLY_SUBJECT,
    REQUEST_SUBJECT,
    masked_subject,
    node_of_request_topic,
    quarantine_topic,
    store_key,
)
from hub.control.view import ControlView
from hub.metrics.bundle import HubMetrics
from hub.policy.masking import apply_mask, derived_schema
from hub.ports import Agent, Audit, AuditSink, PartitionOwner
from hub.registry import framing
from hub.registry.client import RegistryClient, RegistryClientError
from hub.registry.files import CALL_REPLY_SCHEMA_FILE, CALL_REQUEST_SCHEMA_FILE, schema_text
from hub.settings import Settings
from hub.shutdown import bounded

log = logging.getLogger("hub.calls")

QUARANTINE_RULE = "bad_call_request"
MAX_QUEUED_BATCHES = 64


class CallAgent(Agent):
    """Decides call batches with ``hub.calls.core``, sends, audits, counts."""

    def __init__(self, settings: Settings, bootstrap: str, registry: RegistryClient, control: ControlView,
                 sender: BatchSender, partitions: PartitionOwner, audit: AuditSink, metrics: HubMetrics,
                 **kwargs: Any) -> None:
        super().__init__(registry, control, sender, partitions, audit, metrics, **kwargs)
        self.settings = settings
        self.tables = CallState(settings, bootstrap)
        self.view: CallView | None = None
        self.reply_encode: Callable[[dict[str, Any]], bytes] | None = None
        self.quarantine_encode: Callable[[dict[str, Any]], bytes] | None = None  # set by the worker
        self._masked: dict[tuple[str, str, int], tuple[int, Callable[[dict[str, Any]], bytes]]] = {}
        self._queue: asyncio.Queue[tuple[Sequence[RawRecord], asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._dequeued = asyncio.Event()
        self.calls = 0

    # ---------- lifecycle ----------
    async def on_start(self) -> None:
        await self.registry.register(REQUEST_SUBJECT, schema_text(CALL_REQUEST_SCHEMA_FILE))
        reply_id = await self.registry.register(REPLY_SUBJECT, schema_text(CALL_REPLY_SCHEMA_FILE))
        reply = await self.registry.schema_by_id(reply_id)
        self.reply_encode = framing.make_encoder(reply_id, reply.schema_str)
        await self.tables.start(self.registry, self._resource)
        self._task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        # bounded by the stop budget: with the broker gone, a call batch's writes are never acknowledged (it is
        # then not committed, and read again by the next owner)
        await bounded(self.drain(), "the call batches in flight")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await bounded(self.tables.stop(), "the call state tables")

    def assign(self, partitions: set[int]) -> None:
        """The partition indices this worker owns now: their state is restored (or kept)."""
        self.tables.assign(partitions)

    def submit(self, records: Sequence[RawRecord]) -> asyncio.Future[None]:
        """Queue a batch; the future is done once its replies and audit records are acknowledged."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.clear()
        self._queue.put_nowait((records, done))
        return done

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def wait_backlog_below(self, limit: int) -> None:
        while self._queue.qsize() >= limit:
            await self._dequeued.wait()
            self._dequeued.clear()

    async def drain(self) -> None:
        """Wait until every queued batch is answered and audited."""
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            records, done = await self._queue.get()
            self._dequeued.set()
            try:
                written = await self.handle(records)
            except asyncio.CancelledError:
                done.cancel()
                raise
            except BaseException as exc:
                done.set_exception(exc)  # the worker stops: a batch that was not answered is never committed
            else:  # done once its audit records are written; the next batch is decided meanwhile
                written.add_done_callback(lambda w, d=done: _settle(d, w))
            if self._queue.empty():
                self._idle.set()

    def _resource(self, resource_id: str) -> Resource | None:
        return self._view().resources.get(resource_id)

    def _view(self) -> CallView:
        if self.view is None or self.view.version != self.control.version:
            self.view = CallView.from_snapshot(self.control.snapshot())
        return self.view

    async def handle(self, records: Sequence[RawRecord]) -> asyncio.Future[None]:
        """Answer a batch; returns the future of its audit records being written."""
        view = self._view()
        now = int(time.time() * 1000)
        batch = _Batch()
        requests = [r for r in records if r.topic != CALLS_TOPIC]
        await self._fetch_schemas(r.value for r in requests)
        for rec in requests:
            self._admit(rec, view, now, batch)
        work = [(rec.partition, env) for rec in records if rec.topic == CALLS_TOPIC
                if (env := self._envelope(rec)) is not None]
        while True:
            work += await self._local(batch)
            if not work:
                break
            await self._stages(work, view, now, batch)
            work = []
        return await self._send(batch, now)

    async def _local(self, batch: _Batch) -> list[tuple[int, Envelope]]:
        """Forwards whose next stage this worker owns are handled here and now, without the hop through Kafka
        (every stage with one worker; 1/N of them with N): the same state, the same partition's audit chain."""
        count = await self.sender.partition_count(CALLS_TOPIC)
        parts = list(range(count))
        local, remote = [], []
        for _, forward in batch.forwards:
            if forward.envelope.stage is Stage.INDEX:  # the index topic's partitioning
                target = core.index_partition(forward.route_key, parts)
            else:  # as hub.records is written
                target = partition_of(forward.route_key, count)
            (local if target in self.tables.owned else remote).append((target, forward))
        batch.forwards = remote
        return [(target, forward.envelope) for target, forward in local]

    async def _stages(self, work: Sequence[tuple[int, Envelope]], view: CallView, now: int, batch: _Batch) -> None:
        """Run admitted calls' next stage at partition p (read from hub.calls, or local forwards)."""
        await self.tables.wait_ready({p for p, _ in work})
        lookup_parts = {p for p, env in work if env.stage is Stage.LOOKUP}
        if lookup_parts:
            await self.tables.caught_up(lookup_parts)
        lookups: list[tuple[int, Envelope, Row | None]] = []
        for partition, env in work:
            self._stage(partition, env, view, now, batch, lookups)
        await self._lookups(lookups, view, now, batch)

    def _admit(self, rec: RawRecord, view: CallView, now: int, batch: _Batch) -> None:
        node = node_of_request_topic(rec.topic) or ""
        source = f"{rec.topic}/{rec.partition}/{rec.offset}"
        try:
            req = core.decode_request(rec.value, self._parsed)
        except BadRequest as exc:
            rid = exc.request_id or core.recover_request_id(rec.value, rec.key, rec.headers)
            if rid is None:
                batch.quarantine.append((rec, str(exc)))
            else:
                batch.reply(rec.partition, core.error_reply(rid, node, source, str(exc)))
            return
        batch.route(rec.partition, core.admit(req, node, source, view, now))

    def _envelope(self, rec: RawRecord) -> Envelope | None:
        try:
            return Envelope.decode(rec.value)
        except BadRequest as exc:
            log.warning("dropping a malformed %s record at %d/%d: %s", CALLS_TOPIC, rec.partition, rec.offset, exc)
            return None

    def _stage(self, partition: int, env: Envelope, view: CallView, now: int, batch: _Batch,
               lookups: list[tuple[int, Envelope, Row | None]]) -> None:
        if env.stage is Stage.QUOTA:
            quota = self.tables.quota[partition]
            topic, rid, grant = env.source.split("/", 1)[0], env.request.request_id, env.grant or ""
            counted = quota.counted(grant, now, topic, rid)  # a redelivered call: already counted once
            used = quota.used(grant, now)
            result = core.quota_stage(env, view, now, used - 1 if counted else used)
            if isinstance(result, Forward) and not counted:
                batch.quota_writes.append((partition, quota.count(grant, now, topic, rid)))
            batch.route(partition, result)
        elif env.stage is Stage.INDEX:
            req = env.request
            resource = view.resources.get(req.resource)
            matches: dict[str, int] = {}
            if resource is not None and req.lookup_field and req.lookup_value is not None:
                value = core.normalise(req.lookup_field, req.lookup_value)
                matches = self.tables.index[partition].matches(resource.id, req.lookup_field, value)
            batch.route(partition, core.index_stage(env, view, matches))
        else:
            row = self.tables.records[partition].get(store_key(env.request.resource, env.pk or ""))
            lookups.append((partition, env, row))

    async def _lookups(self, lookups: Sequence[tuple[int, Envelope, Row | None]], view: CallView, now: int,
                       batch: _Batch) -> None:
        await self._fetch_schemas(row.value for _, _, row in lookups if row is not None)
        for partition, env, row in lookups:
            record: dict[str, Any] | None = None
            writer_id = 0
            if row is not None:
                try:
                    writer_id, body = framing.split(row.value)
                    schema = self.registry.cached(writer_id) if self.registry else None
                    if schema is None:
                        raise ValueError(f"schema id {writer_id} of the stored record is not in the registry")
                    record = framing.decode_body(body, schema.parsed)
                except ValueError as exc:
                    batch.reply(partition, core.make_reply(env, core.Status.ERROR,
                                                           f"the stored record cannot be read: {exc}"))
                    continue
            result = core.lookup_stage(env, view, now, record)
            if isinstance(result, Reply):
                batch.reply(partition, result)
                continue
            assert row is not None
            try:
                batch.reply(partition, await self._masked_reply(result, row, writer_id))
            except Exception as exc:  # a registry refusal or an encoding failure: say so, never stay silent
                log.warning("call %s: masking failed: %r", env.request.request_id, exc)
                batch.reply(partition, core.make_reply(env, core.Status.ERROR,
                                                       f"the hub could not mask the record: {exc}",
                                                       resource=result.resource))

    async def _masked_reply(self, answer: Answer, row: Row, writer_id: int) -> Reply:
        writer = self.registry.cached(writer_id)
        assert writer is not None
        schema = json.loads(writer.schema_str)
        if core.passthrough(answer.plan, schema):
            return core.ok_reply(answer, row.value, writer_id)
        cache_key = (answer.resource.id, answer.plan.key, writer_id)
        encoder = self._masked.get(cache_key)
        if encoder is None:
            derived = derived_schema(schema, answer.plan)
            subject = masked_subject(answer.resource.id, answer.plan.key)  # as the exchange agent's feeds
            try:
                derived_id = await self.registry.register(subject, derived)
            except RegistryClientError:  # an older writer version's derivation: its own subject
                derived_id = await self.registry.register(
                    f"{answer.resource.id}.masked.{answer.plan.key}.w{writer_id}-value", derived)
            encoder = self._masked[cache_key] = (derived_id, framing.make_encoder(derived_id, derived))
        derived_id, encode = encoder
        return core.ok_reply(answer, encode(apply_mask(answer.record, answer.plan)), derived_id)

    # ---------- sending, auditing, counting ----------
    async def _send(self, batch: _Batch, now: int) -> asyncio.Future[None]:
        assert self.reply_encode is not None
        if batch.quota_writes:  # the count is durable before the call it counts goes on
            counted = [OutRecord(QUOTA_TOPIC, key, b"1", [], p) for p, key in batch.quota_writes]
            await gather_all(await self.sender.send(counted))
        await self.partitions.ensure({p for p, _ in batch.replies} | {r.partition for r, _ in batch.quarantine})
        replies = self._dedupe(batch.replies)
        outputs = [OutRecord(CALLS_TOPIC, f.route_key, f.envelope.encode(), [(H_STAGE, str(f.envelope.stage).encode())],
                             target) for target, f in batch.forwards]
        for _, reply in replies:
            headers = [(H_REQUEST_ID, reply.request_id.encode()), (H_EVENT_ID, reply.request_id.encode())]
            if reply.resource is not None:
                headers.append((H_RESOURCE, reply.resource.id.encode()))
            outputs.append(OutRecord(reply.topic, reply.request_id.encode(), self.reply_encode(reply.to_record(now)),
                                     headers))
        audits: list[Audit] = [(p, reply.audit(now)) for p, reply in replies]
        quarantine = [(rec, reason) for rec, reason in batch.quarantine
                      if self._first(rec.partition, rec.topic, f"{rec.topic}/{rec.partition}/{rec.offset}")]
        for rec, reason in quarantine:
            out, audit = self._quarantine(rec, reason, now)
            outputs.append(out)
            audits.append((rec.partition, audit))
        sent = await self.sender.send(outputs) if outputs else []
        return self.audit.submit(sent, audits, lambda: self._count(replies, len(quarantine)))

    def _dedupe(self, replies: Sequence[tuple[int, Reply]]) -> list[tuple[int, Reply]]:
        """Drop answers to requests already answered (a redelivered request; restored from the audit log)."""
        return [(p, reply) for p, reply in replies if self._first(p, reply.source.split("/", 1)[0], reply.request_id)]

    def _first(self, partition: int, topic: str, event_id: str) -> bool:
        """True the first time (request topic, event id) is seen in partition p's dedupe window, then remembered.

        The window is partition p's, rebuilt from its audit records on takeover (``PartitionState.absorb`` keys
        a record by its source topic and event id), so a call audited before a crash is not answered again.
        """
        window = self.partitions.dedupe(partition)
        key = (topic, event_id)
        if key in window:
            return False
        window.add(key)
        return True

    def _quarantine(self, rec: RawRecord, reason: str, now: int) -> tuple[OutRecord, dict[str, Any]]:
        assert self.quarantine_encode is not None
        node = node_of_request_topic(rec.topic) or ""
        event_id = records.source_of(rec.topic, rec.partition, rec.offset)
        entry = records.quarantine_value(rec, event_id, now, node, QUARANTINE_RULE, reason, None)
        value = self.quarantine_encode(entry)
        out = OutRecord(quarantine_topic(node), rec.key, value, records.quarantine_headers(event_id, QUARANTINE_RULE))
        audit = records.quarantine_audit(now, event_id, node, core.safe_tier(node), QUARANTINE_RULE, None, None,
                                         event_id)
        return out, audit

    def _count(self, replies: Sequence[tuple[int, Reply]], quarantined: int) -> None:
        m = self.metrics
        for _, reply in replies:
            m.calls.labels(reply.to_tier, reply.outcome).inc()
            m.events.labels("call", reply.from_tier, reply.to_tier, reply.outcome).inc()
        if quarantined:
            m.quarantined.labels(QUARANTINE_RULE).inc(quarantined)
        self.calls += len(replies)

    # ---------- schemas ----------
    def _parsed(self, schema_id: int) -> Any:
        found = self.registry.cached(schema_id)
        return found.parsed if found is not None else None

    async def _fetch_schemas(self, values: Iterable[bytes | None]) -> None:
        await fetch_schemas(self.registry, values)


def _settle(target: asyncio.Future[None], source: asyncio.Future[None]) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(None)


class _Batch:
    """What one batch produces: replies (with the partition whose audit chain records them), forwards (with the
    partition they came from, then the one they go to), changelog writes and quarantined requests."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, Reply]] = []
        self.forwards: list[tuple[int, Forward]] = []
        self.quota_writes: list[tuple[int, bytes]] = []
        self.quarantine: list[tuple[RawRecord, str]] = []

    def reply(self, partition: int, reply: Reply) -> None:
        self.replies.append((partition, reply))

    def route(self, partition: int, result: Reply | Forward) -> None:
        if isinstance(result, Forward):
            self.forwards.append((partition, result))
        else:
            self.replies.append((partition, result))


