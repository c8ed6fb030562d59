"""Soak: 30 minutes at half the measured maximum rate, watching memory and consumer lag (``make soak``).

A local broker, ``hub up`` (API + a worker) and a standalone ``hub worker`` share 4 partitions while vaccination
records are published at a steady ``--rate`` (default 5,000 events/s: half the ~10,000 events/s a worker
measured in ``bench.throughput`` on these machines). Every 10 s it samples the resident memory (RSS) of the
``hub up`` process, the worker and the broker (``/proc/<pid>/status``), and the consumer group's lag on the
ingress topic. At the end it fits a line to each RSS series over the second half of the run (after warm-up:
caches, the dedupe window and the broker's page cache fill in the first minutes) and reports the slope in MB
per hour, the lag's maximum and final value, and writes ``bench/results/soak.json`` (appended) and the curve
``bench/results/soak.png``.

    python -m bench.soak                      # 30 minutes at 5,000 events/s
    python -m bench.soak --minutes 2 --rate 1000   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.throughput import append_result, run_on_a_broker, start_hub, stop_hub
from hub.broker.manager import LocalBroker, free_port
from hub.contract import H_RESOURCE
from hub.demo.data import record_generator
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings

PARTITIONS = 4
INGRESS = "ingress.municipal.health"
RESOURCE = "municipal.health.vaccination"
SCHEMA = json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text())
RESULTS = REPO_ROOT / "bench" / "results"


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour (0 for fewer than two samples)."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / var * 3600


async def group_lag(admin: AIOKafkaAdminClient, ends_reader: AIOKafkaConsumer, group: str) -> int:
    """Records on the ingress topic the hub's consumer group has not committed yet."""
    tps = [TopicPartition(INGRESS, p) for p in range(PARTITIONS)]
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    except KafkaError:  # the group's coordinator is not there yet (the first seconds): nothing committed
        committed = {}
    try:
        ends = await asyncio.wait_for(ends_reader.end_offsets(tps), 10)
    except (TimeoutError, KafkaError):  # the topic's metadata not there yet: unknown this time
        return -1
    done = {tp: committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0 for tp in tps}
    return sum(max(0, ends[tp] - done[tp]) for tp in tps)


async def soak(bootstrap: str, state: Path, rate: float, minutes: float) -> dict[str, Any]:
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    app_id = f"soak-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, HUB_BOOTSTRAP=bootstrap, HUB_API_PORT=str(api_port), HUB_STATE_DIR=str(state / "up"),
               HUB_APP_ID=app_id, HUB_TOPIC_PARTITIONS=str(PARTITIONS))
    hub = start_hub(env, api)
    worker: subprocess.Popen[bytes] | None = None
    try:
        token = (state / "up" / "operator.token").read_text().strip()
        async with RegistryClient(api, token=token) as registry:
            schema_id = await registry.register(f"{RESOURCE}-value", json.dumps(SCHEMA))
        (state / "w").mkdir(parents=True, exist_ok=True)
        worker = subprocess.Popen(
            [sys.executable, "-m", "hub.cli.main", "worker"],
            env=dict(env, HUB_STATE_DIR=str(state / "w"), HUB_REGISTRY_URL=api, HUB_TOKEN=token),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        local = LocalBroker(Settings(state_dir=state.parent / "kafka")).status()  # run_on_a_broker's broker
        broker_pid = local.pid if local is not None else 0  # 0: an external cluster (HUB_BOOTSTRAP)
        make = record_generator(SCHEMA)
        rng = random.Random(5)
        parsed = framing.parse_schema(SCHEMA)
        values = [framing.encode(schema_id, parsed, make(rng)) for _ in range(20_000)]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        ends_reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await producer.start()
        await admin.start()
        await ends_reader.start()
        samples: list[dict[str, float]] = []
        sent = 0
        headers = [(H_RESOURCE, RESOURCE.encode())]
        try:
            start = time.monotonic()
            next_sample = start
            duration = minutes * 60
            while (elapsed := time.monotonic() - start) < duration:
                due = int(elapsed * rate) - sent
                for _ in range(max(0, due)):
                    await producer.send(INGRESS, values[sent % len(values)], headers=headers)
                    sent += 1
                if time.monotonic() >= next_sample:
                    sample = {"t": round(elapsed, 1), "sent": sent, "hub_up_mb": rss_mb(hub.pid),
                              "worker_mb": rss_mb(worker.pid), "broker_mb": rss_mb(broker_pid) if broker_pid else 0.0,
                              "lag": await group_lag(admin, ends_reader, app_id)}
                    samples.append(sample)
                    print(json.dumps(sample), flush=True)
                    next_sample += 10
                await asyncio.sleep(0.005)
            await producer.flush()
        finally:
            await producer.stop()
            await admin.close()
            await ends_reader.stop()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        stop_hub(hub)
    half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2] if samples else []
    result: dict[str, Any] = {"rate": rate, "minutes": minutes, "sent": sent, "samples": samples}
    for name in ("hub_up_mb", "worker_mb", "broker_mb"):
        result[f"{name}_slope_per_hour"] = round(slope_per_hour([(s["t"], s[name]) for s in half]), 2)
        result[f"{name}_end"] = round(samples[-1][name], 1) if samples else 0.0
    known = [s["lag"] for s in samples if s["lag"] >= 0]  # -1: not measurable at that sample (start-up)
    result["lag_max"] = max(known, default=0)
    result["lag_end"] = known[-1] if known else 0
    return result


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["t"] / 60 for s in samples]
    fig, (mem, lag) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, label in (("hub_up_mb", "hub up (API + worker)"), ("worker_mb", "hub worker"), ("broker_mb", "broker")):
        mem.plot(minutes, [s[name] for s in samples],
                 label=f"{label}: {result[f'{name}_slope_per_hour']:+.1f} MB/h")
    mem.set_ylabel("RSS (MB)")
    mem.legend(loc="upper left", fontsize=8)
    mem.set_title(f"Soak: {result['rate']:,.0f} events/s for {result['minutes']:.0f} min ({result['sent']:,} events)")
    lag.plot(minutes, [s["lag"] for s in samples], color="tab:red")
    lag.set_ylabel("consumer lag (records)")
    lag.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s (default: half of ~10,000)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--no-record", action="store_true", help="print only (a smoke run): no JSON, no chart")
    args = parser.parse_args()
    result = run_on_a_broker(lambda bootstrap, state: soak(bootstrap, state, args.rate, args.minutes),
                             prefix="hub-soak-")
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not args.no_record:
        append_result(RESULTS / "soak.json", result)
        chart(result, RESULTS / "soak.png")
    for name in ("hub_up_mb", "worker_mb", "broker_mb"):
        print(f"{name[:-3]}: {result[f'{name}_end']:.0f} MB at the end, slope over the second half "
              f"{result[f'{name}_slope_per_hour']:+.1f} MB/h")
    print(f"consumer lag: max {result['lag_max']:,}, at the end {result['lag_end']:,} records")
    if not args.no_record:
        print(f"chart: {RESULTS / 'soak.png'}")


if __name__ == "__main__":
    main()
