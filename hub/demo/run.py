"""``hub demo``: a small simulated city on top of ``hub up``.

Departments register their schemas and publish records, a few malformed records and a few records breaking the
catalogue's quality rules are sent too, and every feed and quarantine topic is read back. The summary compares
what the routing rules entitle each feed to with what arrived, and shows the hub's own counters from ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from hub.broker.clients import make_consumer, make_producer
from hub.catalogue.model import ExchangeConfig, load_exchange_config
from hub.contract import H_EVENT_ID, H_RESOURCE, OPERATOR, feed_topic, ingress_topic, quarantine_topic
from hub.demo.data import record_generator
from hub.demo.data import spoil as break_rules
from hub.demo.objection import ObjectionRun, run_objection
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.routing.core import route, subscriptions_by_resource
from hub.runtime import status_file
from hub.settings import Settings

QUALITY_FAULT_EVERY = 10  # every 10th record of a resource breaks one or two of its quality rules

BAD_RECORDS = {
    "bad_magic": lambda good: b"\x07" + good[1:],
    "unknown_schema": lambda good: framing.HEADER.pack(0, 987_654_321) + good[5:],
    "truncated": lambda good: good[: len(good) // 2],
    "missing_header": lambda good: good,
}


@dataclass
class Expectation:
    feeds: Counter[str] = field(default_factory=Counter)
    quarantine: Counter[str] = field(default_factory=Counter)
    directions: Counter[str] = field(default_factory=Counter)
    locality: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    passed: Counter[str] = field(default_factory=Counter)  # per resource: records sent that pass its rules
    failed: Counter[str] = field(default_factory=Counter)  # ... and records breaking them (quarantined)


HUB_STOP_WAIT_S = 9.5  # `hub up` ends within its stop_timeout (8 s); after this it is killed


def _die_with_demo() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The `hub up` child gets SIGTERM if the demo dies (even by SIGKILL), so it never outlives it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_hub(settings: Settings, console: Console, timeout: float = 240.0) -> tuple[subprocess.Popen[bytes], dict]:
    """Start ``hub up`` as a child process and wait until its API answers (a signal meanwhile stops it)."""
    env = dict(os.environ, HUB_API_PORT=str(settings.api_port), HUB_STATE_DIR=str(settings.state_dir))
    if settings.bootstrap:
        env["HUB_BOOTSTRAP"] = settings.bootstrap
    status_file(settings).unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "up"], env=env, stdout=subprocess.DEVNULL,
                            preexec_fn=_die_with_demo)  # noqa: PLW1509 - deliberate
    try:
        return proc, _wait_ready(proc, settings, console, timeout)
    except BaseException:  # not ready, or interrupted: the child must not outlive the demo
        stop_hub(proc)
        raise


def _wait_ready(proc: subprocess.Popen[bytes], settings: Settings, console: Console, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    with console.status("starting the hub (broker, worker, API)..."):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"`hub up` exited with code {proc.returncode} while starting")
            path = status_file(settings)
            if path.exists():
                status = json.loads(path.read_text())
                try:
                    if httpx.get(f"{status['api']}/healthz", timeout=2).status_code == 200:
                        return status
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
    raise RuntimeError(f"the hub did not become ready within {timeout:.0f}s")


def stop_hub(proc: subprocess.Popen[bytes], timeout: float = HUB_STOP_WAIT_S) -> None:
    """SIGINT the `hub up` child (it stops itself and the broker it owns within its deadline); SIGKILL after."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _interrupt_on_signals() -> None:
    """SIGTERM (and SIGINT) unwind the demo with KeyboardInterrupt, so the `hub up` child is always stopped
    (Python's default SIGTERM would end the demo at once and orphan the child)."""

    interrupted = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal interrupted
        if not interrupted:  # later signals must not break off the (bounded) stop of the child
            interrupted = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


async def _stop_client(stop: Any, timeout: float = 3.0) -> None:
    """Close a Kafka client without waiting on an unreachable broker for long (the demo is only reading)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(stop(), timeout)


def expected_for(config: ExchangeConfig, resource_id: str, record: dict[str, Any], exp: Expectation) -> None:
    resource = config.resource(resource_id)
    assert resource is not None
    subs = subscriptions_by_resource(config.subscriptions).get(resource_id, [])
    for d in route(record, resource, subs):
        exp.feeds[feed_topic(d.consumer)] += 1
        exp.directions[d.direction] += 1
        if d.reason == "locality-return":
            exp.locality[d.consumer] += 1


async def simulate(settings: Settings, status: dict, per_department: int, console: Console) -> Expectation:
    config = load_exchange_config(settings.seed_config)
    bootstrap = status["bootstrap"]
    registry = RegistryClient(status["api"])
    rng = random.Random(2026)
    exp = Expectation()
    producer = make_producer(settings, bootstrap, linger_ms=5)
    consumer = make_consumer(settings, bootstrap)
    await producer.start()
    await consumer.start()
    try:
        watched = [feed_topic(n.id) for n in config.nodes if n.id != OPERATOR]
        watched += [quarantine_topic(p) for p in config.providers]
        partitions = [TopicPartition(t, p) for t in watched for p in (consumer.partitions_for_topic(t) or {0})]
        consumer.assign(partitions)
        start_offsets = await consumer.end_offsets(partitions)
        for tp, offset in start_offsets.items():
            consumer.seek(tp, offset)

        sends = []
        good_sample: dict[str, bytes] = {}
        for resource in config.resources:
            path = resource.schema_path()
            if path is None:
                continue
            schema = json.loads(path.read_text(encoding="utf-8"))
            schema_id = await registry.register(resource.subject, json.dumps(schema))
            parsed = framing.parse_schema(schema)
            make = record_generator(schema)
            for i in range(per_department):
                record = make(rng)
                value = framing.encode(schema_id, parsed, record)
                good_sample.setdefault(resource.provider, value)
                headers = [(H_RESOURCE, resource.id.encode()), (H_EVENT_ID, str(uuid.uuid4()).encode())]
                if resource.quality_rules and i % QUALITY_FAULT_EVERY == QUALITY_FAULT_EVERY - 1:
                    bad, _ = break_rules(record, resource.quality_rules, rng, faults=1 + i % 2)  # one or two faults
                    value = framing.encode(schema_id, parsed, bad)
                    sends.append(await producer.send(ingress_topic(resource.provider), value, headers=headers))
                    exp.quarantine[quarantine_topic(resource.provider)] += 1
                    exp.failed[resource.id] += 1
                    continue
                sends.append(await producer.send(ingress_topic(resource.provider), value, headers=headers))
                expected_for(config, resource.id, record, exp)
                exp.passed[resource.id] += 1
        for provider, good in good_sample.items():
            resource_id = next(r.id for r in config.resources if r.provider == provider)
            for rule, spoil in BAD_RECORDS.items():
                headers = [] if rule == "missing_header" else [(H_RESOURCE, resource_id.encode())]
                sends.append(await producer.send(ingress_topic(provider), spoil(good), headers=headers))
                exp.quarantine[quarantine_topic(provider)] += 1
        await asyncio.gather(*sends)

        wanted = exp.feeds + exp.quarantine
        got: Counter[str] = Counter()
        last_change = time.monotonic()
        with Live(_progress_table(wanted, got), console=console, refresh_per_second=4) as live:
            while got != wanted and time.monotonic() - last_change < 20:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, msgs in batch.items():
                    got[tp.topic] += len(msgs)
                    last_change = time.monotonic()
                live.update(_progress_table(wanted, got))
        exp.received = got
        return exp
    finally:
        await _stop_client(consumer.stop)
        await _stop_client(producer.stop)
        await _stop_client(registry.aclose)


def _progress_table(wanted: Counter[str], got: Counter[str]) -> Table:
    table = Table(title="records arriving in feeds and quarantine", show_lines=False)
    table.add_column("topic")
    table.add_column("expected", justify="right")
    table.add_column("received", justify="right")
    for topic in sorted(wanted):
        mark = "[green]" if got[topic] == wanted[topic] else "[yellow]"
        table.add_row(topic, str(wanted[topic]), f"{mark}{got[topic]}")
    return table


def hub_counters(metrics_url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(metrics_url, timeout=5).text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("hub_") and not sample.name.endswith("_created"):
                out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def run_demo(settings: Settings, *, records_per_department: int, console: Console) -> int:
    """Run the demo end to end; returns the exit code (0 when every feed got what it is entitled to, 130 when a
    signal interrupted it: the `hub up` child and its broker are stopped first)."""
    _interrupt_on_signals()
    try:
        proc, status = start_hub(settings, console)
        try:
            console.print(f"hub running: api {status['api']}, Kafka {status['bootstrap']}")
            exp = asyncio.run(simulate(settings, status, records_per_department, console))
            with console.status("one objection runs its course (file, accept, flag, correct, unflag, archive)..."):
                objection = asyncio.run(run_objection(settings, status))
            time.sleep(1.0)  # let the last batch's counters settle before scraping
            counters = hub_counters(status["metrics"])
        finally:
            stop_hub(proc)
    except KeyboardInterrupt:
        console.print("[yellow]demo interrupted: the hub is stopped[/]")
        return 130
    _print_summary(console, exp, exp.received, counters)
    _print_objection(console, objection)
    ok = all(exp.received[t] == n for t, n in (exp.feeds + exp.quarantine).items()) and objection.ok
    console.print("[bold green]demo complete: every feed received what it is entitled to[/]" if ok
                  else "[bold red]demo incomplete: some feeds did not receive what they are entitled to[/]")
    return 0 if ok else 1


def _print_summary(console: Console, exp: Expectation, received: Counter[str], counters: dict) -> None:
    figures = Table(title="exchange figures (hub counters from /metrics)")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    delivered = counters.get("hub_records_delivered_total", {})
    for direction in ("down", "lateral", "up", "regional"):
        figures.add_row(f"records delivered, direction={direction}",
                        str(int(delivered.get((("direction", direction),), 0))))
    events = counters.get("hub_events_total", {})
    published = sum(v for k, v in events.items() if dict(k).get("kind") == "publish" and dict(k)["outcome"] == "ok")
    quarantined = counters.get("hub_quarantined_total", {})
    figures.add_row("records published and accepted", str(int(published)))
    figures.add_row("locality returns to districts (expected)", str(sum(exp.locality.values())))
    for labels, value in sorted(quarantined.items()):
        figures.add_row(f"quarantined, rule={dict(labels)['rule']}", str(int(value)))
    console.print(figures)
    quality = Table(title="data quality per resource (records sent by the demo; failing ones are quarantined)")
    quality.add_column("resource")
    quality.add_column("passed", justify="right")
    quality.add_column("quarantined", justify="right")
    quality.add_column("quality score", justify="right")
    for resource in sorted(exp.passed | exp.failed):
        ok, bad = exp.passed[resource], exp.failed[resource]
        quality.add_row(resource, str(ok), str(bad), f"{ok / (ok + bad):.1%}" if ok + bad else "-")
    console.print(quality)
    feeds = Table(title="per feed: entitled vs received")
    feeds.add_column("topic")
    feeds.add_column("entitled", justify="right")
    feeds.add_column("received", justify="right")
    for topic, n in sorted((exp.feeds + exp.quarantine).items()):
        feeds.add_row(topic, str(n), str(received[topic]))
    console.print(feeds)


def _print_objection(console: Console, run: ObjectionRun) -> None:
    table = Table(title="the objection (异议): filed by civil affairs, corrected by the health commission")
    table.add_column("")
    table.add_column("value")
    table.add_row("objection", run.objection_id)
    table.add_row("steps", " -> ".join(run.states) or "-")
    table.add_row("final state", str(run.final.get("state", "-")) + (f", {run.final['outcome']}"
                                                                     if run.final.get("outcome") else ""))
    table.add_row("recipients of the record", ", ".join(run.recipients) or "-")
    table.add_row("deliveries with hub-flag", ", ".join(run.flagged_to) or "-")
    table.add_row("correction delivered to", ", ".join(run.corrected_to) or "-")
    if run.error:
        table.add_row("[red]error[/]", run.error)
    console.print(table)
