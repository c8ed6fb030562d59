"""Throughput: the hub's full pipeline against a raw aiokafka passthrough, same broker, same records, same run.

    python -m bench.throughput [--records 100000] [--partitions 4]

The ceiling is a plain aiokafka consumer-group loop: consume -> split Confluent frame -> fastavro decode ->
re-encode -> produce, batch by batch. The hub runs as ``hub up`` (worker + registry API) in a child process
and drains the same records, pre-loaded on ``ingress.municipal.health``: decode, validate, route (fan-out to
a department and a district feed), audit and count. Both rates are measured the same way: events in, divided
by the span between the first and the last output record's timestamp, so start-up is excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from hub.broker.manager import LocalBroker, free_port
from hub.contract import H_INGRESS_TS, H_RESOURCE
from hub.demo.data import record_generator
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings

T = TypeVar("T")

RESOURCE = "municipal.health.vaccination"
SUBJECT = "municipal.health.vaccination-value"
INGRESS = "ingress.municipal.health"
WATCH_FEED = "feed.municipal.civil-affairs"  # every vaccination record reaches it (seed subscription)


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: list[bytes], headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024, acks=1)
    await producer.start()
    try:
        futures = [await producer.send(topic, v, headers=headers) for v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def output_span(bootstrap: str, topic: str, expected: int, timeout: float) -> tuple[int, float]:
    """Wait until ``expected`` records are on ``topic``; return (count, last timestamp - first timestamp)."""
    probe = AIOKafkaProducer(bootstrap_servers=bootstrap)  # partitions_for waits for the topic's metadata
    await probe.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(await probe.partitions_for(topic))]
    finally:
        await probe.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        count, first, last = 0, None, None
        stamps: list[int] = []
        deadline = time.monotonic() + timeout
        while count < expected and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                for m in msgs:
                    count += 1
                    stamps.append(m.timestamp)
                    first = m.timestamp if first is None else min(first, m.timestamp)
                    last = m.timestamp if last is None else max(last, m.timestamp)
        span = ((last or 0) - (first or 0)) / 1000.0
        if stamps:
            stamps.sort()
            marks = [stamps[min(len(stamps) - 1, len(stamps) * q // 10)] - stamps[0] for q in range(11)]
            print(f"{topic}: {count} records over {span:.2f} s; ms after the first at each tenth: {marks}",
                  file=sys.stderr)
        return count, span
    finally:
        await consumer.stop()


async def raw_passthrough(bootstrap: str, src: str, dst: str, n: int, parsed: object) -> None:
    """The ceiling: consume, decode, re-encode, produce, a poll batch at a time, committing after delivery."""
    consumer = AIOKafkaConsumer(
        src, bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=2000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024, acks=-1)
    await consumer.start()
    await producer.start()
    done = 0
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            futures = []
            for msgs in batch.values():
                for m in msgs:
                    sid, body = framing.split(m.value)
                    record = framing.decode_body(body, parsed)
                    futures.append(await producer.send(dst, framing.encode(sid, parsed, record), key=m.key,
                                                       headers=list(m.headers)))
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
                done += len(futures)
    finally:
        await producer.stop()
        await consumer.stop()


def start_hub(env: dict[str, str], api: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "up"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hub up exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"{api}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("hub did not become ready")


def stop_hub(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


async def run(args: argparse.Namespace, bootstrap: str, state: Path) -> dict[str, float]:
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = dict(os.environ, HUB_BOOTSTRAP=bootstrap, HUB_API_PORT=str(api_port), HUB_STATE_DIR=str(state),
               HUB_TOPIC_PARTITIONS=str(args.partitions), HUB_APP_ID=f"bench-{uuid.uuid4().hex[:6]}")
    schema = json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text())
    parsed = framing.parse_schema(schema)

    # 1. the hub registers nothing we need yet: start it once to serve the registry, register, stop it
    print("starting the hub once to register the schema...", file=sys.stderr, flush=True)
    hub = start_hub(env, api)
    try:
        registry = RegistryClient(api, token=(state / "operator.token").read_text().strip())
        schema_id = await registry.register(SUBJECT, json.dumps(schema))
        await registry.aclose()
    finally:
        stop_hub(hub)

    make = record_generator(schema)
    rng = random.Random(7)
    values = [framing.encode(schema_id, parsed, make(rng)) for _ in range(args.records)]
    size = sum(map(len, values)) / len(values)
    tag = uuid.uuid4().hex[:6]
    raw_in, raw_out = f"bench.raw.in.{tag}", f"bench.raw.out.{tag}"
    await create_topics(bootstrap, [raw_in, raw_out, INGRESS], args.partitions)

    # 2. the ceiling, on the same broker with the same records
    await produce(bootstrap, raw_in, values, [])
    print("running the raw aiokafka passthrough...", file=sys.stderr, flush=True)
    await raw_passthrough(bootstrap, raw_in, raw_out, args.records, parsed)
    raw_count, raw_span = await output_span(bootstrap, raw_out, args.records, 60)

    # 3. the hub's pipeline draining the same records from ingress
    await produce(bootstrap, INGRESS, values, [(H_RESOURCE, RESOURCE.encode())])
    print("running the hub...", file=sys.stderr, flush=True)
    hub = start_hub(env, api)
    cpu_at_ready = process_cpu_seconds(hub.pid)
    profiler = start_profile(hub.pid, args.profile, args.profile_seconds) if args.profile else None
    latency: dict[str, float] = {}
    try:
        hub_count, hub_span = await output_span(bootstrap, WATCH_FEED, args.records, args.timeout)
        hub_cpu = process_cpu_seconds(hub.pid) - cpu_at_ready
        hub_rate = hub_count / hub_span if hub_span else float("nan")
        if profiler is not None:
            profiler.wait()
            print(profile_summary(args.profile), file=sys.stderr)
        # 4. latency at half the measured maximum rate, same hub, fresh records
        if args.latency_seconds > 0 and hub_rate == hub_rate:
            rate = hub_rate / 2
            print(f"ingress-to-feed latency at {rate:,.0f} events/s for {args.latency_seconds:.0f} s...",
                  file=sys.stderr, flush=True)
            latency = await paced_latency(bootstrap, values, rate, args.latency_seconds)
    finally:
        stop_hub(hub)

    raw_rate = raw_count / raw_span if raw_span else float("nan")
    return {"records": args.records, "value_bytes": size, "partitions": args.partitions,
            "raw_events_per_s": raw_rate, "hub_events_per_s": hub_rate, "ratio": hub_rate / raw_rate,
            "hub_delivered": hub_count, "hub_cpu_us_per_event": hub_cpu / args.records * 1e6, **latency}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (``/proc/<pid>/stat``; NaN where there is no /proc).

    The hub's CPU per event is the steadier figure on a shared machine: the rate also moves with what the broker
    and everything else beside it get of the cores, CPU per event mostly with the hub's own code."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def paced_latency(bootstrap: str, values: list[bytes], rate: float, seconds: float) -> dict[str, float]:
    """Publish at ``rate`` events/s for ``seconds``; ingress-to-feed latency percentiles of what was delivered.

    Latency = the feed record's timestamp (set when the hub appends it) minus its ``hub-ingress-ts`` header
    (the ingress record's create time), both wall-clock milliseconds on this machine.
    """
    probe = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        parts = [TopicPartition(WATCH_FEED, p) for p in sorted(await probe.partitions_for(WATCH_FEED))]
    finally:
        await probe.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    consumer.assign(parts)
    for tp, end in (await consumer.end_offsets(parts)).items():
        consumer.seek(tp, end)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    await producer.start()
    headers = [(H_RESOURCE, RESOURCE.encode())]
    sent = 0
    publishing = True
    latencies: list[int] = []

    async def collect(deadline: float) -> None:
        """Read the feed until every sent event arrived (after publishing stopped) or the deadline passes."""
        while time.monotonic() < deadline and (publishing or len(latencies) < sent):
            for msgs in (await consumer.getmany(timeout_ms=200, max_records=20_000)).values():
                for m in msgs:
                    ts = dict(m.headers).get(H_INGRESS_TS)
                    if ts is not None:
                        latencies.append(m.timestamp - int(ts))

    try:
        start = time.monotonic()
        reader = asyncio.ensure_future(collect(start + seconds + 10))
        tick = 0.005
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) - sent
            for _ in range(max(0, due)):
                await producer.send(INGRESS, values[sent % len(values)], headers=headers)
                sent += 1
            await asyncio.sleep(tick)
        await producer.flush()
        publishing = False
        await reader
    finally:
        await producer.stop()
        await consumer.stop()
    latencies.sort()

    def pct(q: float) -> float:
        return float(latencies[min(len(latencies) - 1, int(len(latencies) * q))]) if latencies else float("nan")

    return {"latency_rate_events_per_s": rate, "latency_sent": sent, "latency_received": len(latencies),
            "latency_p50_ms": pct(0.50), "latency_p99_ms": pct(0.99), "latency_max_ms": pct(1.0)}


def start_profile(pid: int, out: str, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy sampling the hub process (raw collapsed stacks) while it drains.

    Non-blocking by default (the hub runs undisturbed, but a sample may mix two moments' frames);
    ``HUB_PROFILE_NONBLOCKING=0`` pauses the hub for each sample: exact stacks, a slightly slower hub."""
    py_spy = Path(sys.executable).with_name("py-spy")
    mode = ["--nonblocking"] if os.environ.get("HUB_PROFILE_NONBLOCKING", "1") == "1" else []
    return subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "200", "--format", "raw", "--output", out, *mode],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(path: str, top: int = 25) -> str:
    """The functions with the most samples (inclusive and self) in a py-spy raw profile."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f.split(" (")[0] + " " + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] if " (" in f else f
                  for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    lines = [f"py-spy: {total} samples"]
    for title, table in (("inclusive", inclusive), ("self", own)):
        lines.append(f"top {top} {title}:")
        for frame, count in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"  {100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def run_on_a_broker(bench: Callable[[str, Path], Coroutine[Any, Any, T]], *, prefix: str = "hub-bench-") -> T:
    """Run ``bench(bootstrap, hub_state_dir)`` on ``HUB_BOOTSTRAP``, or on a fresh local broker stopped after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        state = Path(tmp)
        existing = os.environ.get("HUB_BOOTSTRAP")
        broker = None
        if existing:
            bootstrap = existing
        else:
            broker = LocalBroker(Settings(state_dir=state / "kafka"))
            bootstrap = broker.start(port=free_port(), controller_port=free_port(), owned=True)[0].bootstrap
        try:
            return asyncio.run(bench(bootstrap, state / "hub"))
        finally:
            if broker is not None:
                broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the hub to drain")
    parser.add_argument("--latency-seconds", type=float, default=15.0,
                        help="seconds of paced publishing at half the measured rate (0: skip)")
    parser.add_argument("--profile", help="write a py-spy raw profile of the hub while it drains to this file")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    add_output_options(parser, "throughput")
    args = parser.parse_args()
    result = run_and_record(lambda bootstrap, state: run(args, bootstrap, state), args.out, "hub-bench-")
    if args.json:
        print(json.dumps(result))
        return
    print(f"records: {result['records']} x {result['value_bytes']:.0f} B, {result['partitions']} partitions")
    print(f"raw aiokafka passthrough (decode + re-encode): {result['raw_events_per_s']:>10,.0f} events/s")
    print(f"hub pipeline (validate, route x2, audit, counts): {result['hub_events_per_s']:>7,.0f} events/s")
    print(f"ratio hub / raw: {result['ratio']:.2f}")
    print(f"hub CPU per event (from ready to the last feed record): {result['hub_cpu_us_per_event']:.0f} µs")
    if "latency_p99_ms" in result:
        print(f"ingress-to-feed at {result['latency_rate_events_per_s']:,.0f} events/s (half the hub's rate): "
              f"p50 {result['latency_p50_ms']:.0f} ms, p99 {result['latency_p99_ms']:.0f} ms "
              f"({result['latency_received']:,} of {result['latency_sent']:,} delivered)")


def add_output_options(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out`` (the JSON history this benchmark appends to; bench/report.py charts it) and ``--json``."""
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / f"{name}.json"),
                        help="append the result to this JSON file (bench/report.py charts it)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_and_record(bench: Callable[[str, Path], Coroutine[Any, Any, dict[str, Any]]], out: str,
                   prefix: str) -> dict[str, Any]:
    """Run a benchmark on a broker (``run_on_a_broker``), stamp the result and append it to ``out``."""
    result = run_on_a_broker(bench, prefix=prefix)
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    append_result(Path(out), result)
    return result


def append_result(path: Path, result: dict[str, Any]) -> None:
    """Keep every run: the chart shows the latest, the history shows the trend."""
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(path.read_text()) if path.exists() else []
    runs.append(result)
    path.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
