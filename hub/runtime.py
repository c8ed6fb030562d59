"""Running the hub's processes: the worker (``hub.worker.service.HubWorker``) and the HTTP API, as services of
one ``mode.Worker`` (Faust's service runtime).

``hub up`` and ``hub worker`` both end here. The mode Worker owns the event loop and signals: Ctrl-C or SIGTERM
stops the worker (in-flight batches finished and committed), the agents and the API cleanly, then the caller
stops the broker it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mode
import uvicorn
from mode.utils.logging import setup_logging
from prometheus_client import CollectorRegistry, start_http_server

from hub.contract import OBJECTIONS_TOPIC
from hub.kafka_logging import KafkaLogFilter, install_kafka_log_filter
from hub.metrics.bundle import TIERS, HubMetrics
from hub.settings import Settings
from hub.shutdown import HubModeWorker, bounded, install_signal_handlers, install_watchdog, reset_stop_budget, watchdog
from hub.worker import gc_pacing

log = logging.getLogger("hub")

QUIET_LOGGERS = ("aiokafka", "faust", "mode", "kafka", "uvicorn.access", "httpx", "httpcore")


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the mode Worker owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        return None


class ApiService(mode.Service):
    """The registry + control plane HTTP service, started and stopped with the worker.

    On start: the registry loads ``_schemas``; the control plane registers its schemas and loads its topics;
    the control audit log (``hub.audit.control``) resumes its chain and from then on audits every control change;
    the seed (``settings.seed_config``) is imported idempotently; then the HTTP API listens. While it runs,
    ``hub_catalog_resources{tier}`` follows the catalogue, ``hub_audit_chain_ok`` the last saved
    ``hub audit verify`` result, and ``/v1/stats`` the count snapshots on ``hub.counts``.
    """

    def __init__(self, settings: Settings, bootstrap: str, metrics_registry: CollectorRegistry,
                 metrics: HubMetrics | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.bootstrap = bootstrap
        self.metrics_registry = metrics_registry
        self.metrics = metrics
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._registry_service: Any = None
        self._control: Any = None
        self._registry_client: Any = None
        self._counts: Any = None
        self._chain_watch: asyncio.Task[None] | None = None
        self._control_audit: Any = None
        self._acl_follower: Any = None
        self._expiry: asyncio.Task[None] | None = None
        self._notifier: Any = None
        self._escalation: asyncio.Task[None] | None = None
        self._objection_watch: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        from hub.acl.follow import AclFollower, chain_listeners
        from hub.api.app import create_api
        from hub.audit.control_log import ControlAuditLog
        from hub.control.schemas import ClientSchemas, LocalSchemas, SchemaSource
        from hub.control.seed import apply_seed, load_seed, register_hub_schemas
        from hub.control.service import ControlService
        from hub.objections.notices import ObjectionNotifier
        from hub.registry.client import RegistryClient
        from hub.registry.service import RegistryService
        from hub.stats.reader import CountsFollower

        self._registry_service = RegistryService(self.settings, bootstrap=self.bootstrap)
        await self._registry_service.start()
        operator_token = ensure_operator_token(self.settings).read_text(encoding="utf-8").strip()
        schemas: SchemaSource = LocalSchemas(self._registry_service)
        if self.settings.registry_url:  # an external registry holds the schemas (the hub's own serves too)
            self._registry_client = RegistryClient(self.settings.registry_url, token=operator_token)
            schemas = ClientSchemas(self._registry_client)
        self._control = ControlService(self.settings, schemas, bootstrap=self.bootstrap)
        await self._control.start()
        await register_hub_schemas(schemas)
        # the control audit log (hub.audit.control, this process its single writer) sees every control change
        self._control_audit = ControlAuditLog(self.settings, self.bootstrap, schemas)
        await self._control_audit.start()
        # in secure mode, a node registered or removed at run time gets (or loses) its Kafka user and ACLs
        self._acl_follower = AclFollower(self.settings, self.bootstrap)
        await self._acl_follower.start(self._control)
        # every objection version is also a notice on objection.<node> of each party
        control = self._control
        self._notifier = ObjectionNotifier(
            self.settings, self.bootstrap, lambda o: control.encoder.record(OBJECTIONS_TOPIC, o).value)
        await self._notifier.start()
        self._control.change_listener = chain_listeners(self._control_audit.control_changes,
                                                        self._acl_follower.on_change, self._notifier.on_change)
        await apply_seed(self._control, load_seed(self.settings.seed_config))
        self._expiry = asyncio.ensure_future(
            self._control.expire_grants_periodically(self.settings.grant_expiry_interval))
        self._escalation = asyncio.ensure_future(
            self._control.escalate_objections_periodically(self.settings.objection_check_interval))
        self._objection_watch = asyncio.ensure_future(self._watch_objections())
        self._watch = asyncio.ensure_future(self._watch_catalogue())
        self._chain_watch = asyncio.ensure_future(self._watch_audit_chain())
        self._counts = CountsFollower(self.settings, self.bootstrap)
        await self._counts.start()
        api = create_api(self._registry_service, self.metrics_registry, control=self._control,
                         operator_token=operator_token, exchange_figures=self._counts.figures,
                         control_audit=self._control_audit)
        config = uvicorn.Config(
            api, host=self.settings.api_host, port=self.settings.api_port, log_level="warning",
            access_log=False, lifespan="off",
        )
        self._server = _QuietServer(config)
        self._task = asyncio.ensure_future(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # re-raise why it could not start (e.g. port taken)
                raise RuntimeError(f"the HTTP API could not listen on {self.settings.api_url}")
            await asyncio.sleep(0.05)

    def _catalogue_gauge(self) -> Any:
        """``hub_catalog_resources``: from the HubMetrics bundle if given, else from the injected registry."""
        if self.metrics is not None:
            return self.metrics.catalog_resources
        collectors = getattr(self.metrics_registry, "_names_to_collectors", {})
        return collectors.get("hub_catalog_resources")

    async def _watch_catalogue(self) -> None:
        """Keep ``hub_catalog_resources{tier}`` equal to the current catalogue, after every control change."""
        gauge = self._catalogue_gauge()
        if gauge is None:
            log.warning("no hub_catalog_resources gauge in the metrics registry: the catalogue is not counted")
            return
        seen = -1
        while True:
            version = self._control.version
            if version != seen:
                counts = self._control.state.catalogue_counts()
                for tier in TIERS:
                    gauge.labels(tier).set(counts.by_tier.get(tier, 0))
                seen = version
            await self._control.wait_for(seen + 1)

    async def _watch_objections(self, interval: float = 1.0) -> None:
        """``hub_objections_open{state}`` and ``hub_objections_overdue`` from ``hub.objections``, every second
        (overdue changes with the clock, not only with a write)."""
        from hub.objections.machine import open_counts

        collectors = getattr(self.metrics_registry, "_names_to_collectors", {})
        opened = self.metrics.objections_open if self.metrics is not None else collectors.get("hub_objections_open")
        late = self.metrics.objections_overdue if self.metrics is not None else collectors.get(
            "hub_objections_overdue")
        if opened is None or late is None:
            log.warning("no objection gauges in the metrics registry: objections are not counted")
            return
        while True:
            by_state, overdue = open_counts(self._control.state.objections.values(), int(time.time() * 1000))
            for state, n in by_state.items():
                opened.labels(state).set(n)
            late.set(overdue)
            await asyncio.sleep(interval)

    async def _watch_audit_chain(self, interval: float = 2.0) -> None:
        """``hub_audit_chain_ok`` = the last saved ``hub audit verify`` result (1 until one was saved)."""
        from hub.audit.verify import latest_verification

        gauge = self.metrics.audit_chain_ok if self.metrics is not None else getattr(
            self.metrics_registry, "_names_to_collectors", {}).get("hub_audit_chain_ok")
        if gauge is None:
            return
        while True:
            verification = latest_verification(self.settings)
            if verification is not None:
                gauge.set(1 if verification.ok else 0)
            await asyncio.sleep(interval)

    async def on_stop(self) -> None:
        """Every step within the process's stop budget (``hub.shutdown``): with the broker gone or paused, a
        client's close may wait for requests that never complete."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await bounded(asyncio.shield(self._task), "the HTTP API", cap=3.0)
        for task in (self._watch, self._chain_watch, self._escalation, self._objection_watch, self._expiry):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        steps = (("the stats follower", self._counts, "stop"), ("the ACL follower", self._acl_follower, "stop"),
                 ("the objection notifier", self._notifier, "stop"),
                 ("the control plane", self._control, "stop"), ("the control audit log", self._control_audit, "stop"),
                 ("the registry client", self._registry_client, "aclose"),
                 ("the schema registry", self._registry_service, "stop"))
        for what, component, method in steps:
            if component is not None:
                await bounded(getattr(component, method)(), what)


def quiet_libraries(kafka_filter: KafkaLogFilter | None = None) -> None:
    """Library loggers at WARNING: building and dropping their DEBUG records costs ~25 µs an event. The Kafka
    client's retriable errors (coordinator lookups while the broker elects leaders, reconnects) are lowered to
    DEBUG by ``kafka_filter``, and what needs the operator is kept and explained (``hub.kafka_logging``)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if kafka_filter is not None:
        install_kafka_log_filter(kafka_filter)


def prepare_topics(settings: Settings, bootstrap: str) -> list[str]:
    """Create the hub's own topics before any client touches them (the broker may auto-create a missing topic
    with one partition, which would break partition-index ownership), then wait until the new topics have
    partition leaders, so the clients do not start with a round of "not leader" errors. Node topics follow the
    control plane."""
    return asyncio.run(_prepare_topics(settings, bootstrap))


async def _prepare_topics(settings: Settings, bootstrap: str) -> list[str]:
    from aiokafka.errors import KafkaConnectionError

    from hub.broker.manager import BrokerError
    from hub.broker.topics import ensure_topics, worker_topics

    started = time.monotonic()
    warned_at = 0.0
    log.info("waiting for the Kafka broker at %s", bootstrap)
    while True:
        try:
            created = await ensure_topics(settings, bootstrap, worker_topics(()))
            break
        except KafkaConnectionError:
            waited = time.monotonic() - started
            if waited > settings.broker_start_timeout:
                raise BrokerError(f"no Kafka broker answered at {bootstrap} within "
                                   f"{settings.broker_start_timeout:.0f} s: start it (`hub broker start`) or fix "
                                   f"HUB_BOOTSTRAP") from None
            if waited - warned_at >= settings.broker_unreachable_warn:
                warned_at = waited
                log.warning("the Kafka broker at %s has not answered for %.0f s; still trying. Check it runs "
                            "(`hub broker status`) and that HUB_BOOTSTRAP is right", bootstrap, waited)
            await asyncio.sleep(1.0)
    if created:
        await _wait_for_leaders(settings, bootstrap, created)
    return created


def leaderless(described: list[dict[str, Any]]) -> list[str]:
    """``topic/partition`` of every partition without a leader yet, from an admin ``describe_topics`` answer (a
    topic still unknown to the metadata counts as one leaderless entry)."""
    out = []
    for topic in described:
        partitions = topic.get("partitions") or []
        if topic.get("error_code") or not partitions:
            out.append(f"{topic.get('topic')}/*")
        out += [f"{topic.get('topic')}/{p.get('partition')}" for p in partitions
                if p.get("error_code") or p.get("leader", -1) < 0]
    return out


async def _wait_for_leaders(settings: Settings, bootstrap: str, topics: list[str], timeout: float = 30.0) -> None:
    """Until the new topics' partitions all have leaders (or ``timeout``: the clients retry by themselves)."""
    from aiokafka.errors import KafkaError

    from hub.broker.clients import make_admin

    log.info("waiting for partition leaders of %d new topics", len(topics))
    admin = make_admin(settings, bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not leaderless(await admin.describe_topics(topics)):
                    return
            except KafkaError:  # an election under way: ask again
                pass
            await asyncio.sleep(0.2)
        log.info("partition leaders still being elected after %.0f s; the clients retry meanwhile", timeout)
    finally:
        await admin.close()


def ensure_operator_token(settings: Settings) -> Path:
    """Create the operator's token on first start (readable only by this user)."""
    path = settings.operator_token_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path


def status_file(settings: Settings) -> Path:
    return settings.state_dir / "hub.json"


class StatusService(mode.Service):
    """Started last: quietens the Kafka client loggers and writes ``hub status``'s file once everything runs."""

    def __init__(self, settings: Settings, bootstrap: str, status: dict[str, Any] | None,
                 kafka_filter: KafkaLogFilter | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.bootstrap = bootstrap
        self.status = status
        self.kafka_filter = kafka_filter

    async def on_started(self) -> None:
        quiet_libraries(self.kafka_filter)
        if self.status is not None:
            status_file(self.settings).parent.mkdir(parents=True, exist_ok=True)
            status_file(self.settings).write_text(json.dumps(self.status, indent=2))
        log.warning("hub worker running (group %s) on %s", self.settings.app_id, self.bootstrap)


def run_worker(
    settings: Settings, bootstrap: str, *, with_api: bool, loglevel: str | None = None,
    metrics_port: int = 0, status: dict[str, Any] | None = None,
) -> None:
    """Run the worker (and the API when ``with_api``) until a signal stops it.

    One ``mode.Worker`` owns the event loop and signals: Ctrl-C or SIGTERM stops the services in reverse order
    (the worker finishes and commits what is in flight, then the API stops), within the stop budget and the
    hard deadline of ``hub.shutdown`` whatever the broker's state.
    """
    import uvloop

    from hub.worker.service import HubWorker

    reset_stop_budget(settings.stop_grace)
    dog = watchdog() or install_watchdog(settings.stop_timeout)
    status_service = StatusService(settings, bootstrap, status)
    kafka_filter = KafkaLogFilter(bootstrap, settings.broker_unreachable_warn)
    status_service.kafka_filter = kafka_filter
    # the log set up before the first broker contact (not when the mode Worker starts): what the start-up waits
    # for is logged, and the Kafka client's records are classified, from the first one
    setup_logging(loglevel=loglevel or settings.log_level)
    quiet_libraries(kafka_filter)
    prepare_topics(settings, bootstrap)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    metrics_registry = CollectorRegistry()
    metrics = HubMetrics.create(metrics_registry)
    services: list[mode.ServiceT] = []
    if with_api:
        services.append(ApiService(settings, bootstrap, metrics_registry))
    services.append(HubWorker(settings, bootstrap, metrics))
    services.append(status_service)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics_registry)
    gc_pacing.install()
    worker = HubModeWorker(*services, watchdog=dog, override_logging=False, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        dog.interrupt_on_signal = False  # the loop is closed; what is left (an owned broker's stop) must finish
        install_signal_handlers(dog)
        if status is not None:
            status_file(settings).unlink(missing_ok=True)
