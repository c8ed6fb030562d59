"""The fault suite: faults by the dozen under steady load, on a real broker (``make faults``, ~8-10 minutes).

A local broker, ``hub up`` (API + a worker) and a standalone ``hub worker`` share 4 partitions while a
producer publishes vaccination records at a steady rate (every event keeps its ``hub-event-id`` until the
broker acknowledges it, so a send that failed during a fault is sent again). Each kind of fault is injected
many times at random moments:

* ``worker SIGKILL`` (20): the standalone worker is killed and restarted; half of its lives hold each audit
  write back (``HUB_TEST_AUDIT_DELAY_MS``), so kills land between a feed's acknowledgement and its audit record;
* ``broker restart`` (20): the broker is stopped and started again (same storage and ports);
* ``broker pause`` (10): the broker is SIGSTOPped for longer than the consumer session timeout, then SIGCONTed;
* ``rebalance`` (10): a third worker joins, then leaves, and so on (each join or leave is one rebalance);
* ``API restart`` (1): ``hub up`` (registry, API and its worker) is stopped and started while the other runs.

After each kind the load pauses and the suite waits until every event is in every entitled feed (the time
that takes is "time to recover"), then accounts for every event (``bench.fault_accounting``): lost, duplicated
audit records, count errors (``hub audit reconcile`` and the durable publish count), and whether ``hub audit
verify`` passes. A hub process that ends by itself is restarted and counted ("process exits"). It prints the
table, appends the run to ``bench/results/faults.json`` and exits 1 if anything was lost or double-counted.

    python -m bench.faults            # the full suite
    python -m bench.faults --quick    # 2 faults of each kind: a smoke run of the harness (~4 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.fault_accounting import Row, account, table
from hub.broker.manager import LocalBroker, free_port
from hub.contract import AUDIT_TOPIC, COUNTS_TOPIC, H_EVENT_ID, H_RESOURCE
from hub.demo.data import record_generator
from hub.identifiers import DISTRICT_CODES
from hub.registry import framing
from hub.settings import REPO_ROOT, Settings
from hub.stats.counts import CountTable, decode_snapshot
from tests.integration.hubproc import Group, HubProcess, start_hub, start_worker, until
from tests.integration.test_crash_recovery import (
    AUDIT_PARSED,
    PARSED,
    RESOURCE,
    SCHEMA,
    audit_cli,
    read_all,
    vaccination_events,
)

PARTITIONS = 4
LATERAL = "feed.municipal.civil-affairs"
INGRESS = "ingress.municipal.health"
SESSION_TIMEOUT = 6.0  # seconds: the workers' consumer session timeout; a pause lasts longer than this
RESULTS = REPO_ROOT / "bench" / "results" / "faults.json"
STALLED_S = 20.0  # no acknowledgement for this long with sends outstanding: the load's producer is replaced


def entitled_feeds(record: dict) -> tuple[str, str]:
    return LATERAL, f"feed.district.{record['district']}"


# ---------------------------------------------------------------- the load
@dataclass
class Load:
    """Publishes at ``rate`` events/s until paused; an event counts once the broker acknowledged it."""

    bootstrap: str
    schema_id: int
    rate: float
    seed: int
    acked: dict[str, dict] = field(default_factory=dict)  # event id -> record
    _retry: list[tuple[str, dict]] = field(default_factory=list)
    _running: asyncio.Event = field(default_factory=asyncio.Event)
    _pending: dict[str, tuple[dict, int]] = field(default_factory=dict)  # event id -> (record, producer epoch)
    _epoch: int = 0
    _last_ack: float = field(default_factory=time.monotonic)
    _closing: list[asyncio.Task] = field(default_factory=list)
    _task: asyncio.Task | None = None

    async def start(self) -> None:
        self._running.set()
        self._task = asyncio.create_task(self._run())

    def resume(self) -> None:
        self._running.set()

    async def pause(self, timeout: float = 180) -> None:
        """Stop publishing new events and wait until every event sent so far is acknowledged."""
        self._running.clear()
        deadline = time.monotonic() + timeout
        while (self._pending or self._retry) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if self._pending or self._retry:
            raise RuntimeError(f"{len(self._pending) + len(self._retry)} events still unacknowledged after {timeout} s")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        make = record_generator(SCHEMA)
        rng = random.Random(self.seed)
        producer = await self._producer()
        try:
            tick = 0.1
            per_tick = max(1, int(self.rate * tick))
            while True:
                if self._pending and time.monotonic() - self._last_ack > STALLED_S:
                    # a client left stuck after a broker restart: start a new one and send what the old one
                    # held again, with the same event ids (the hub dedupes by id)
                    self._epoch += 1
                    self._retry += [(eid, rec) for eid, (rec, _) in self._pending.items()]
                    self._pending.clear()
                    old, producer = producer, await self._producer()
                    self._closing.append(asyncio.create_task(self._close(old)))
                    self._last_ack = time.monotonic()
                if not self._running.is_set() and not self._retry:  # paused: only failed sends go out again
                    await asyncio.sleep(tick)
                    continue
                started = time.monotonic()
                batch = self._retry[:per_tick]
                del self._retry[:len(batch)]
                if self._running.is_set():
                    batch += [(str(uuid.uuid4()), make(rng)) for _ in range(per_tick - len(batch))]
                for event_id, record in batch:
                    await self._send(producer, event_id, record)
                await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))
        finally:
            await self._close(producer)
            await asyncio.gather(*self._closing)

    async def _producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                    request_timeout_ms=10_000, retry_backoff_ms=200)
        while True:
            try:
                await producer.start()
                return producer
            except Exception:  # noqa: BLE001 - the broker is down: try again
                await asyncio.sleep(1)

    @staticmethod
    async def _close(producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 15)

    async def _send(self, producer: AIOKafkaProducer, event_id: str, record: dict) -> None:
        value = framing.encode(self.schema_id, PARSED, record)
        headers = [(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, event_id.encode())]
        epoch = self._epoch
        self._pending[event_id] = (record, epoch)
        try:
            future = await producer.send(INGRESS, value, key=record["record_id"].encode(), headers=headers)
        except Exception:  # noqa: BLE001 - the broker is down or paused: send it again later
            self._pending.pop(event_id, None)
            self._retry.append((event_id, record))
            return

        def done(f: asyncio.Future) -> None:
            ok = not f.cancelled() and f.exception() is None
            if ok:  # acknowledged, whichever client sent it
                self.acked[event_id] = record
                self._last_ack = time.monotonic()
            if self._pending.get(event_id, (None, -1))[1] != epoch:
                return  # a replaced client's send: it was queued again already
            del self._pending[event_id]
            if not ok:
                self._retry.append((event_id, record))
        future.add_done_callback(done)


# ---------------------------------------------------------------- the processes
@dataclass
class Cluster:
    """The broker, ``hub up`` and the standalone workers of one run."""

    root: Path
    broker: LocalBroker
    port: int
    controller_port: int
    app_id: str
    hub: HubProcess | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    exits: int = 0
    restarts_seen: int = 0

    def restarts_in_place(self) -> int:
        """Restarts in place so far (hub.worker.service.restart_in_place logs one line each), in every log."""
        return sum(log.read_text(errors="replace").count("this process starts again")
                   for log in self.root.glob("**/*.log") if "broker" not in log.name)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"HUB_TOPIC_PARTITIONS": str(PARTITIONS), "HUB_CONSUMER_SESSION_TIMEOUT": str(SESSION_TIMEOUT)}

    def start_hub(self) -> None:
        self.hub = start_hub(self.bootstrap, self.root / "up", free_port(), self.app_id, extra_env=self.env(),
                             timeout=180)

    def start_worker(self, *, audit_delay_ms: int = 0) -> subprocess.Popen[bytes]:
        assert self.hub is not None
        state = self.root / f"w{len(self.workers)}-{uuid.uuid4().hex[:4]}"
        state.mkdir(parents=True)
        env = {"HUB_CONSUMER_SESSION_TIMEOUT": str(SESSION_TIMEOUT)}
        if audit_delay_ms:
            env["HUB_TEST_AUDIT_DELAY_MS"] = str(audit_delay_ms)
        proc = start_worker(self.hub, self.app_id, state, PARTITIONS, extra_env=env)
        self.workers.append(proc)
        return proc

    def revive(self) -> None:
        """Restart any hub process that ended by itself (a supervisor's job), counting it."""
        assert self.hub is not None
        if self.hub.proc.poll() is not None:
            self.exits += 1
            print(f"  hub up exited ({self.hub.proc.returncode}); restarting it", flush=True)
            self.start_hub()
        for worker in list(self.workers):
            if worker.poll() is not None and worker.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
                self.exits += 1
                print(f"  a worker exited ({worker.returncode}); restarting it", flush=True)
                self.workers.remove(worker)
                self.start_worker()
            elif worker.poll() is not None:
                self.workers.remove(worker)

    def stop_worker(self, worker: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        worker.send_signal(sig)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        if worker in self.workers:
            self.workers.remove(worker)

    def restart_broker(self) -> None:
        self.broker.stop()
        self.broker.start(port=self.port, controller_port=self.controller_port, owned=True)

    def shutdown(self) -> None:
        for worker in list(self.workers):
            self.stop_worker(worker, signal.SIGINT)
        if self.hub is not None:
            self.hub.stop()
        self.broker.stop()


async def wait_stable(cluster: Cluster, members: int, timeout: float = 120) -> None:
    async with Group(cluster.bootstrap, cluster.app_id) as group:
        described = await until(group.describe, lambda d: d[0] == "Stable" and len(d[1]) == members, timeout,
                                f"a stable group of {members} workers")
        if not all(described[1].values()):  # with more workers than partition indices one may hold none
            print(f"  note: {sum(not h for h in described[1].values())} of {members} workers hold no partition",
                  flush=True)


async def jitter(rng: random.Random, low: float, high: float) -> None:
    await asyncio.sleep(rng.uniform(low, high))


# ---------------------------------------------------------------- the faults
async def worker_kills(cluster: Cluster, rng: random.Random, n: int) -> int:
    for i in range(n):
        await jitter(rng, 1.0, 4.0)
        victim = cluster.workers[0]
        cluster.stop_worker(victim, signal.SIGKILL)
        cluster.start_worker(audit_delay_ms=300 if i % 2 == 0 else 0)
        cluster.revive()
    return n


async def broker_restarts(cluster: Cluster, rng: random.Random, n: int) -> int:
    for _ in range(n):
        await jitter(rng, 1.0, 4.0)
        await asyncio.to_thread(cluster.restart_broker)
        cluster.revive()
    return n


async def broker_pauses(cluster: Cluster, rng: random.Random, n: int) -> int:
    for _ in range(n):
        await jitter(rng, 1.0, 3.0)
        info = cluster.broker.status()
        assert info is not None
        os.kill(info.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(SESSION_TIMEOUT + rng.uniform(1.0, 4.0))
        finally:
            os.kill(info.pid, signal.SIGCONT)
        cluster.revive()
    return n


async def rebalances(cluster: Cluster, rng: random.Random, n: int) -> int:
    """A worker joins, then leaves, and so on: each join or leave is one rebalance, waited for until stable."""
    extra: subprocess.Popen[bytes] | None = None
    for _ in range(n):
        if extra is None:
            extra = cluster.start_worker()
        else:
            cluster.stop_worker(extra)
            extra = None
        await wait_stable(cluster, 1 + len(cluster.workers))  # hub up's worker and the standalone ones
        await jitter(rng, 0.5, 2.0)
        cluster.revive()
    if extra is not None:
        cluster.stop_worker(extra)
    return n


async def api_restart(cluster: Cluster, rng: random.Random, n: int) -> int:
    for _ in range(n):
        await jitter(rng, 1.0, 3.0)
        assert cluster.hub is not None
        cluster.hub.stop()
        await asyncio.to_thread(cluster.start_hub)
        cluster.revive()
    return n


# ---------------------------------------------------------------- accounting
async def delivered_pairs(bootstrap: str) -> set[tuple[str, str]]:
    feeds = await read_all(bootstrap, [LATERAL, *(f"feed.district.{c}" for c in DISTRICT_CODES)], timeout=180)
    return {(m.topic, dict(m.headers).get(H_EVENT_ID, b"").decode()) for m in feeds}


async def durable_publishes(bootstrap: str) -> int:
    snapshots = {}
    for m in await read_all(bootstrap, [COUNTS_TOPIC], timeout=120):
        snapshots[m.partition] = m.value
    total = CountTable()
    for value in snapshots.values():
        total.merge(decode_snapshot(value)[1])
    return sum(n for key, n in total.counts.items() if key[5] == RESOURCE and key[1] == "publish")


async def settle_and_account(cluster: Cluster, load: Load, kind: str, injected: int, ended: float) -> Row:
    """Wait until every acknowledged event is in every entitled feed, then account for each one."""
    await load.pause()
    entitled = {eid: entitled_feeds(rec) for eid, rec in load.acked.items()}
    wanted = {(topic, eid) for eid, topics in entitled.items() for topic in topics}
    deadline = time.monotonic() + 600
    while True:
        cluster.revive()
        seen = await delivered_pairs(cluster.bootstrap)
        if wanted <= seen or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    recover = time.monotonic() - ended
    assert cluster.hub is not None
    tmp = cluster.root / "verify"
    tmp.mkdir(exist_ok=True)
    reconcile: dict = {}
    while time.monotonic() < deadline:  # the last count snapshots land after the last audit records
        result = await asyncio.to_thread(audit_cli, cluster.hub, cluster.bootstrap, tmp, "reconcile")
        reconcile = json.loads(result.stdout or "{}")
        if reconcile.get("partitions") and all(p["uncovered"] == 0 for p in reconcile["partitions"]):
            break
        await asyncio.sleep(2)
    verify = await asyncio.to_thread(audit_cli, cluster.hub, cluster.bootstrap, tmp, "verify")
    audits = await read_all(cluster.bootstrap, [AUDIT_TOPIC], timeout=180)
    audited = [framing.decode_body(framing.split(m.value)[1], AUDIT_PARSED)["event_id"] for m in audits]
    outcome = account(entitled, seen, audited,
                      reconcile_errors=len(reconcile.get("differences", [1])) + reconcile.get("duplicate_count", 0),
                      counted_publishes=await durable_publishes(cluster.bootstrap))
    if verify.returncode != 0:
        print(f"  hub audit verify failed:\n{verify.stdout[-2000:]}", flush=True)
    if outcome.lost:
        print(f"  lost, e.g. {outcome.lost_examples}", flush=True)
    restarts = cluster.restarts_in_place()
    row = Row(kind, injected, len(entitled), outcome.lost, outcome.duplicated_audits,
              outcome.count_errors + (verify.returncode != 0), round(recover, 1), cluster.exits,
              restarts - cluster.restarts_seen)
    cluster.exits, cluster.restarts_seen = 0, restarts
    load.resume()
    return row


# ---------------------------------------------------------------- the run
async def run(quick: bool, rate: float, seed: int) -> list[Row]:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="hub-faults-"))
    port, controller_port = free_port(), free_port()
    broker = LocalBroker(Settings(state_dir=root / "broker-state"))
    broker.start(port=port, controller_port=controller_port, owned=True)
    cluster = Cluster(root, broker, port, controller_port, f"faults-{uuid.uuid4().hex[:6]}")
    plan = [("worker SIGKILL", worker_kills, 20), ("broker restart", broker_restarts, 20),
            ("broker pause", broker_pauses, 10), ("rebalance", rebalances, 10), ("API restart", api_restart, 1)]
    rows: list[Row] = []
    load: Load | None = None
    try:
        await asyncio.to_thread(cluster.start_hub)
        assert cluster.hub is not None
        cluster.start_worker()
        await wait_stable(cluster, 1 + len(cluster.workers))
        schema_id, _ = await vaccination_events(cluster.hub, 0, seed=seed)
        load = Load(cluster.bootstrap, schema_id, rate, seed)
        await load.start()
        for kind, inject, count in plan:
            count = min(count, 2) if quick else count
            started = time.monotonic()
            print(f"{kind}: injecting {count} ...", flush=True)
            injected = await inject(cluster, rng, count)
            row = await settle_and_account(cluster, load, kind, injected, time.monotonic())
            print(f"  {row} ({time.monotonic() - started:.0f} s)", flush=True)
            rows.append(row)
    finally:
        if load is not None:
            await load.stop()
        cluster.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 faults of each kind (a smoke run)")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s of the steady load (default 200)")
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args()
    # the load's own Kafka client retries through every fault by design: its reconnect chatter is no finding
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    started = time.time()
    rows = asyncio.run(run(args.quick, args.rate, args.seed))
    print()
    print(table(rows))
    bad = [r for r in rows if r.lost or r.duplicated_audits or r.count_errors]
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "quick": args.quick, "rate": args.rate,
             "seconds": round(time.time() - started), "rows": [r.to_json() for r in rows], "ok": not bad}
    if not args.quick:  # the results keep full runs only
        history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        RESULTS.write_text(json.dumps([*history, entry], indent=2) + "\n")
    print(f"\n{'OK' if not bad else 'FAILED'}: {sum(r.injected for r in rows)} faults in {entry['seconds']} s"
          + ("" if args.quick else f"; appended to {RESULTS.relative_to(REPO_ROOT)}"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

