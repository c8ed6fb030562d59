"""``HubWorker``: one ``mode.Service`` that owns a worker's clients and state, with the two agents as children.

It owns the producer (idempotent, ``acks=all``), the registry client, the control plane view, the partition
states and the audit writer, and one consumer in the group ``settings.app_id``:

* **subscription follows the control plane**: ``ingress.<node>`` and ``call.<node>.request`` of every live node
  (plus ``hub.calls``). A node registered at run time is subscribed within moments of its registration (its
  topics are created first); a removed node's topics are dropped. The seed file only seeds an empty control
  plane (the API does that).
* **assignment by partition index** (``assignor``): partition p of every topic goes to one worker, which alone
  writes partition p of ``hub.audit`` and ``hub.counts``.
* **one restore path**: on assignment, the states of the indices this worker gained are restored (dedupe
  window, counts, chain head; the call state of those partitions), those it lost are dropped.
* **the intake loop** takes a poll batch, hands ingress records to the exchange agent and call records to the
  call agent, and goes on to the next batch while the previous one's acknowledgements arrive. Input offsets
  are committed, per partition and in order, once a batch's outputs and then its audit records are
  acknowledged. A rebalance or a stop first waits for everything in flight and commits it.

If a batch cannot be written (a feed or an audit record refused by the broker), the worker exits at once with
status 70 without committing: its input is read again by whoever owns it next, deduplicated by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from hub.broker.clients import make_consumer, make_producer
from hub.broker.records import RawRecord
from hub.broker.sender import BatchSender
from hub.broker.topics import SNAPSHOT_MAX_BYTES, ensure_topics
from hub.calls.agent import CallAgent
from hub.contract import (
    AUDIT_SUBJECT,
    CALLS_TOPIC,
    INGRESS_PREFIX,
    OPERATOR,
    QUARANTINE_SUBJECT,
    call_request_topic,
    ingress_topic,
    node_topics,
)
from hub.control.view import ControlView
from hub.metrics.bundle import HubMetrics
from hub.pipeline.agent import ExchangeAgent
from hub.pipeline.core import EncodedSchema
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.registry.files import AUDIT_SCHEMA_FILE, QUARANTINE_SCHEMA_FILE, schema_text
from hub.settings import Settings
from hub.shutdown import bounded
from hub.worker import gc_pacing
from hub.worker.assignor import PartitionIndexAssignor
from hub.worker.audit_writer import AuditWriter
from hub.worker.partitions import PartitionStates

log = logging.getLogger("hub.worker")

MAX_BATCHES_IN_FLIGHT = 4  # exchange batches decided but not yet audited (bounds memory and redelivery)
SMALL_BATCH = 500  # records taken per poll while the worker keeps up (settings.batch_max while it catches up)
MAX_CALL_BACKLOG = 16  # call batches queued behind the call agent before the intake waits
IDLE_TICK_S = 1.0  # snapshots and due checkpoints of quiet partitions; nothing is done when nothing changed
LAG_EVERY_S = 5.0
STOP_TIMEOUT_S = 8.0  # one stop step's cap; all of them share the process's stop budget (hub.shutdown)
FATAL_EXIT = 70
RESTART_PAUSE_S = 2.0  # before a restart in place: the broker is likely restarting too


class SessionClock:
    """When this worker last knew the group coordinator counted it as a member: a successful heartbeat or a
    completed rebalance.

    Why: when the broker is paused (or the worker cut off) for longer than the session timeout, the coordinator
    gives this worker's partitions to another worker, but this one learns it only at its next heartbeat, and
    meanwhile may write audit records and count snapshots for partitions that are no longer its own: a second
    writer on one partition, which forks the audit hash chain and counts events twice (the fault suite's broker
    pauses showed it). Before writing them the worker asks ``fenced()``: past 80% of the session timeout with
    no sign of membership it writes nothing, and restarts (nothing committed, everything read again by the
    rightful owner). The margin covers the coordinator's and this worker's clocks counting from different
    moments; a healthy worker heartbeats every tenth of the timeout.
    """

    def __init__(self, session_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = 0.8 * session_timeout_s
        self.clock = clock
        self.last_ok = clock()

    def renewed(self) -> None:
        self.last_ok = self.clock()

    def fenced(self) -> str | None:
        """Why this worker may no longer own its partitions, or None."""
        silent = self.clock() - self.last_ok
        if silent <= self.limit:
            return None
        return (f"no heartbeat acknowledged for {silent:.1f} s (session timeout {self.limit / 0.8:.0f} s): the "
                "group may have given this worker's partitions to another")

    def watch(self, consumer: Any) -> None:
        """Note every successful heartbeat of ``consumer`` (aiokafka keeps that time to itself)."""
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is None:  # created when the consumer starts: wrap it then
            original_start = consumer.start

            async def start() -> None:
                await original_start()
                self.watch(consumer)
            consumer.start = start
            return
        beat = coordinator._do_heartbeat  # noqa: SLF001 - the one place aiokafka learns the session is alive

        async def tracked() -> bool:
            ok = await beat()
            if ok:
                self.renewed()
            return bool(ok)
        coordinator._do_heartbeat = tracked  # noqa: SLF001
        self.renewed()


def restart_command(orig_argv: list[str], executable: str) -> list[str]:
    """The command that started this process, to ``exec`` it again (``sys.orig_argv``: the interpreter's own
    options and ``-m hub.cli.main`` or the ``hub`` script included)."""
    return [executable, *orig_argv[1:]]


def restart_in_place(pause: float) -> None:
    """Replace this process by a fresh run of its own command (same pid, so a parent such as ``hub demo`` or a
    supervisor keeps its handle). Nothing is committed first: everything not acknowledged is read again. A
    broker ``hub up`` started stays up (its pid is in ``HUB_OWNED_BROKER_PID``, so the new run owns it again).
    If the ``exec`` itself fails, the process exits with ``FATAL_EXIT`` as without a restart."""
    time.sleep(pause)
    try:
        os.execv(sys.executable, restart_command(sys.orig_argv, sys.executable))
    except OSError:
        os._exit(FATAL_EXIT)


class HubWorker(mode.Service):
    """The worker process's service tree: clients, state, the intake loop, and the exchange and call agents."""

    def __init__(self, settings: Settings, bootstrap: str, metrics: HubMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.registry = RegistryClient(settings.effective_registry_url, token=settings.client_token())
        self.control = ControlView(settings, self.registry, bootstrap=bootstrap)
        self.sender = BatchSender()
        self.partitions = PartitionStates(settings, bootstrap, self.registry)
        self.session: SessionClock | None = None  # set when the consumer is made (on_started)
        self.audit = AuditWriter(self.sender, self.partitions, on_failure=self._fatal,
                                 fenced=lambda: self.session.fenced() if self.session is not None else None,
                                 in_flight=metrics.batches_in_flight, test_delay_s=settings.test_audit_delay_ms / 1000)
        self.calls = CallAgent(settings, bootstrap, self.registry, self.control, self.sender, self.partitions,
                               self.audit, metrics, beacon=self.beacon)
        self.exchange = ExchangeAgent(self.registry, self.control, self.sender, self.partitions, self.audit,
                                      metrics, rows=self.calls.tables, beacon=self.beacon)
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.topics: frozenset[str] = frozenset()
        self._dispatch = asyncio.Lock()
        self._generation = 0  # rebalances so far: a poll batch from before one is dropped (it is read again)
        self._offsets: dict[TopicPartition, deque[tuple[int, asyncio.Future[None]]]] = {}
        self._commit_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def on_init_dependencies(self) -> Iterable[mode.ServiceT]:
        return [self.exchange, self.calls]  # started after on_start, stopped before on_shutdown

    # ------------------------------------------------------------ lifecycle
    async def on_start(self) -> None:
        """Clients and the hub's schemas (the hub's own topics exist already: ``hub.runtime.prepare_topics`` creates
        them before any client runs; node topics are created as nodes appear)."""
        await self._wait_for_registry()
        self.producer = make_producer(self.settings, self.bootstrap, enable_idempotence=True, linger_ms=5,
                                      max_batch_size=256 * 1024, max_request_size=SNAPSHOT_MAX_BYTES)
        await self.producer.start()
        self.sender.bind(self.producer)
        audit = await self._own_schema(AUDIT_SUBJECT, AUDIT_SCHEMA_FILE)
        quarantine = await self._own_schema(QUARANTINE_SUBJECT, QUARANTINE_SCHEMA_FILE)
        self.audit.encode = audit.encode
        self.exchange.audit_schema, self.exchange.quarantine_schema = audit, quarantine
        self.calls.quarantine_encode = quarantine.encode
        await self.control.start()
        await self.partitions.start()

    async def on_started(self) -> None:
        """The agents run: join the group and start taking batches."""
        s = self.settings
        self.consumer = make_consumer(
            s, self.bootstrap, group_id=s.app_id, auto_offset_reset="earliest",
            partition_assignment_strategy=(PartitionIndexAssignor,), max_poll_records=s.batch_max,
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_wait_ms=500,
            session_timeout_ms=int(s.consumer_session_timeout * 1000),
            heartbeat_interval_ms=int(max(0.5, s.consumer_session_timeout / 10) * 1000),
        )
        log.info("joining consumer group %s on %s", s.app_id, self.bootstrap)
        self.session = SessionClock(s.consumer_session_timeout)
        self.session.watch(self.consumer)
        await self.consumer.start()
        await self._follow_once()
        for coro in (self._intake(), self._follow_control(), self._committer(), self._idle()):
            task = asyncio.ensure_future(coro)
            task.add_done_callback(self._task_ended)
            self._tasks.append(task)
        log.info("worker joined group %s: %d topics", s.app_id, len(self.topics))

    async def on_stop(self) -> None:
        """Stop taking batches, finish and commit what is in flight, leave the group (before the agents stop).

        Every step is bounded by the process's stop budget (``hub.shutdown``): with the broker gone or paused,
        acknowledgements never come and leaving the group waits for a coordinator. A step cut short skips the
        commit, never loses a record: offsets are committed only after a batch's outputs and audit records are
        acknowledged, so what was not committed is read again by the next owner (and deduplicated)."""
        self._stopping = True
        lock = self._dispatch
        if await bounded(lock.acquire(), "the batch being decided", cap=STOP_TIMEOUT_S):
            lock.release()  # the intake leaves its loop at once now; a revocation may need the lock
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await bounded(self._drain_and_commit(), "finishing and committing the batches in flight", cap=STOP_TIMEOUT_S)
        if self.consumer is not None:
            await bounded(self.consumer.stop(), "leaving the consumer group", cap=STOP_TIMEOUT_S)

    async def on_shutdown(self) -> None:
        """After the agents: the last count snapshots, then the clients."""
        if self.producer is not None:
            await bounded(self.audit.snapshot(list(self.partitions.states.values()), force=True),
                          "the last count snapshots", cap=STOP_TIMEOUT_S)
            await bounded(self.producer.stop(), "flushing the producer", cap=STOP_TIMEOUT_S)
        await bounded(self.partitions.stop(), "the partition state readers", cap=STOP_TIMEOUT_S)
        await bounded(self.control.stop(), "the control plane view", cap=STOP_TIMEOUT_S)
        await bounded(self.registry.aclose(), "the registry client", cap=STOP_TIMEOUT_S)

    # ------------------------------------------------------------ the intake
    async def _intake(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        batch_max = self.settings.batch_max
        small = min(SMALL_BATCH, batch_max)
        take = small
        while not self._stopping:
            generation = self._generation
            polled = await consumer.getmany(timeout_ms=1000, max_records=take)
            if not polled:
                continue
            # Keeping up: small batches, so no record waits behind a long batch (latency). A full poll means
            # a backlog: large batches until it is gone (throughput: fewer produce requests per event).
            take = batch_max if sum(map(len, polled.values())) >= take else small
            async with self._dispatch:
                if self._stopping:
                    break
                if generation != self._generation:
                    self._reread(polled)
                    continue
                await self._dispatch_batch(polled)
            del polled  # the batch's input records, before a collection between batches
            await self._backpressure()
            gc_pacing.collect_if_due()

    def _reread(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """A batch polled across a rebalance: not processed; partitions still owned are read again from it."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        for tp, messages in polled.items():
            if messages and tp in assigned:
                self.consumer.seek(tp, messages[0].offset)

    async def _dispatch_batch(self, polled: dict[TopicPartition, list[Any]]) -> None:
        exchange: list[RawRecord] = []
        calls: list[RawRecord] = []
        exchange_offsets: dict[TopicPartition, int] = {}
        call_offsets: dict[TopicPartition, int] = {}
        for tp, messages in polled.items():
            if not messages:
                continue
            is_ingress = tp.topic.startswith(INGRESS_PREFIX)
            target = exchange if is_ingress else calls
            for m in messages:
                target.append(RawRecord(m.topic, m.partition, m.offset, m.key, m.value, m.headers or (),
                                        m.timestamp or 0))
            (exchange_offsets if is_ingress else call_offsets)[tp] = messages[-1].offset + 1
        if exchange:
            self._track(await self.exchange.handle(exchange), exchange_offsets)
        if calls:
            self._track(self.calls.submit(calls), call_offsets)

    async def _backpressure(self) -> None:
        """Before the next batch: fewer than ``MAX_BATCHES_IN_FLIGHT`` exchange batches unwritten (so at most that
        many after it) and a bounded call queue."""
        while self.audit.pending >= MAX_BATCHES_IN_FLIGHT or self.calls.backlog > MAX_CALL_BACKLOG:
            await asyncio.sleep(0)  # let acknowledgements be handled first
            if self.audit.pending >= MAX_BATCHES_IN_FLIGHT:
                await self.audit.wait_below(MAX_BATCHES_IN_FLIGHT)
            if self.calls.backlog > MAX_CALL_BACKLOG:
                await self.calls.wait_backlog_below(MAX_CALL_BACKLOG + 1)

    # ------------------------------------------------------------ commits
    def _track(self, done: asyncio.Future[None], offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            queue = self._offsets.get(tp)
            if queue is None:
                queue = self._offsets[tp] = deque()
            queue.append((offset, done))
        done.add_done_callback(self._batch_done)

    def _batch_done(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            self._fatal(done.exception())  # type: ignore[arg-type]
        self._commit_wake.set()

    def _ready_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record whose batch, and every batch before it, is done."""
        ready: dict[TopicPartition, int] = {}
        for tp, queue in self._offsets.items():
            while queue and queue[0][1].done() and not queue[0][1].cancelled() and queue[0][1].exception() is None:
                ready[tp] = queue.popleft()[0]
        return ready

    async def _commit_ready(self) -> None:
        consumer = self.consumer
        ready = self._ready_offsets()
        if not ready or consumer is None:
            return
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in ready.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:  # the records are read again and deduplicated
            log.info("offset commit not accepted (%r); the next owner re-reads from the last commit", exc)

    async def _committer(self) -> None:
        while True:
            await self._commit_wake.wait()
            self._commit_wake.clear()
            await self._commit_ready()

    async def _drain_and_commit(self) -> None:
        await self.calls.drain()
        await self.audit.drain()
        for _ in range(3):  # the batches' done-callbacks (a call batch settles one hop after its audit write)
            await asyncio.sleep(0)
        await self._commit_ready()

    # ------------------------------------------------------------ rebalancing
    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Before the group rebalances: finish and commit everything in flight (the next owner restores from it)."""
        async with self._dispatch:
            self._generation += 1
            log.info("rebalance: finishing %d audit writes and %d call batches in flight", self.audit.pending,
                     self.calls.backlog)
            try:
                await self._drain_and_commit()
                log.info("rebalance: in-flight work committed")
            except Exception as exc:
                log.warning("finishing in-flight batches before a rebalance failed: %r", exc)
            self._offsets.clear()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self.session is not None:
            self.session.renewed()  # a completed rebalance: the coordinator knows this member now
        """After it: the one restore path (states of indices gained restored, of indices lost dropped)."""
        indices = {tp.partition for tp in assigned}
        self._generation += 1
        self.partitions.assign(indices)
        self.calls.assign(indices)
        self.partitions.restore_in_background()
        log.info("partition indices owned: %s", sorted(indices))

    # ------------------------------------------------------------ following the control plane
    def live_nodes(self) -> list[str]:
        return [n.id for n in self.control.snapshot().config.nodes if n.id != OPERATOR]

    def wanted_topics(self) -> frozenset[str]:
        nodes = self.live_nodes()
        return frozenset([CALLS_TOPIC, *map(ingress_topic, nodes), *map(call_request_topic, nodes)])

    async def _follow_once(self) -> None:
        wanted = self.wanted_topics()
        if wanted == self.topics or self.consumer is None:
            return
        new_nodes = [n for n in self.live_nodes() if ingress_topic(n) not in self.topics]
        if new_nodes:  # every node-facing topic of a new node, before anything is written to or read from it
            await ensure_topics(self.settings, self.bootstrap, [t for n in new_nodes for t in node_topics(n)])
            await self._await_metadata([ingress_topic(n) for n in new_nodes])
        self.consumer.subscribe(topics=sorted(wanted), listener=_Listener(self))
        added, removed = wanted - self.topics, self.topics - wanted
        if self.topics:
            log.info("subscription follows the control plane: +%s -%s", sorted(added), sorted(removed))
        self.topics = wanted

    async def _await_metadata(self, topics: list[str], timeout: float = 10.0) -> None:
        """Wait until the consumer's metadata knows freshly created topics: subscribed while still unknown, a topic
        is left out of the assignment until the next periodic metadata refresh (minutes), which left a node
        registered while the worker started (a federation peer) unread."""
        assert self.consumer is not None
        client = self.consumer._client  # noqa: SLF001 - aiokafka offers no public metadata refresh
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await client.force_metadata_update()
            if all(client.cluster.partitions_for_topic(t) for t in topics):
                return
            await asyncio.sleep(0.2)

    async def _follow_control(self) -> None:
        """Re-subscribe after every control change; a failed attempt (say, topics not creatable while the broker
        restarts) is retried with backoff, not left until the next change."""
        seen = self.control.version
        retry_in: float | None = None
        while True:
            try:
                seen = await self.control.wait_for(seen + 1, timeout=retry_in)
            except TimeoutError:
                pass  # no newer change: retry the last one
            try:
                await self._follow_once()
                retry_in = None
            except Exception as exc:
                retry_in = min(30.0, (retry_in or 0.5) * 2)
                log.warning("could not follow the control plane's nodes (%r); retrying in %.0f s", exc, retry_in)

    # ------------------------------------------------------------ timers
    async def _idle(self) -> None:
        lag_at = 0.0
        batches = -1
        while True:
            await asyncio.sleep(IDLE_TICK_S)
            if self.exchange.batches == batches:  # no batch since the last tick: nothing else collects
                gc_pacing.collect_if_due()
            batches = self.exchange.batches
            try:
                await self.audit.idle()
            except Exception as exc:
                log.warning("idle checkpoint failed: %r", exc)
            now = time.monotonic()
            if now - lag_at >= LAG_EVERY_S:
                lag_at = now
                await self._measure_lag()

    async def _measure_lag(self) -> None:
        """``hub_consumer_lag``: end offset minus position over this worker's partitions (from fetch responses)."""
        consumer = self.consumer
        if consumer is None:
            return
        lag = 0
        try:
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    lag += max(0, highwater - await consumer.position(tp))
        except Exception as exc:  # advisory only
            log.debug("lag measurement failed: %r", exc)
            return
        self.metrics.consumer_lag.set(lag)

    # ------------------------------------------------------------ helpers
    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """The worker's loops never end on their own: one that fails stops the worker (nothing is committed)."""
        if not task.cancelled() and task.exception() is not None and not self._stopping:
            self._fatal(task.exception())  # type: ignore[arg-type]

    def _fatal(self, exc: BaseException) -> None:
        """A batch that could not be written: end this process without committing it (its records are read
        again, deduplicated by event id), and by default start it again (``restart_in_place``)."""
        if self.settings.restart_on_write_failure:
            log.critical("a batch could not be written (%r); this process starts again in %.0f s and reads it "
                         "again", exc, RESTART_PAUSE_S, exc_info=exc)
            logging.shutdown()
            restart_in_place(RESTART_PAUSE_S)
        log.critical("a batch could not be written; exiting so it is processed again: %r", exc, exc_info=exc)
        logging.shutdown()
        os._exit(FATAL_EXIT)

    async def _own_schema(self, subject: str, path: str) -> EncodedSchema:
        schema_id = await self.registry.register(subject, schema_text(path))
        schema = await self.registry.schema_by_id(schema_id)
        return EncodedSchema(schema.id, framing.make_encoder(schema.id, schema.schema_str))

    async def _wait_for_registry(self, timeout: float = 120.0) -> None:
        """The registry may start after the worker (``hub up`` starts both); wait until it answers."""
        url = f"{self.settings.effective_registry_url.rstrip('/')}/subjects"
        deadline = time.monotonic() + timeout
        logged = False
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                try:
                    await http.get(url)
                    return  # it answered (any status): the Confluent calls will say what is wrong
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    if not logged:
                        log.info("waiting for the schema registry at %s", url)
                        logged = True
                    await asyncio.sleep(0.5)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: HubWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.worker.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.worker.on_partitions_assigned(assigned)
