"""Running the real hub (``hub up``) as a child process for integration tests, and reading its topics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")


@dataclass
class HubProcess:
    proc: subprocess.Popen[bytes]
    api: str
    bootstrap: str
    state_dir: Path
    log_file: Path

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def token(self) -> str:
        """The operator token `hub up` created in its state dir."""
        return (self.state_dir / "operator.token").read_text().strip()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.api}/metrics", timeout=5).text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def start_hub(bootstrap: str, state_dir: Path, api_port: int, app_id: str, *args: str,
              extra_env: dict[str, str] | None = None, timeout: float = 120) -> HubProcess:
    state_dir.mkdir(parents=True, exist_ok=True)
    log_file = state_dir / "hub-up.log"
    env = dict(os.environ, HUB_BOOTSTRAP=bootstrap, HUB_API_PORT=str(api_port), HUB_STATE_DIR=str(state_dir),
               HUB_APP_ID=app_id, **(extra_env or {}))
    with open(log_file, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "up", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    hub = HubProcess(proc, f"http://127.0.0.1:{api_port}", bootstrap, state_dir, log_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hub up exited with {proc.returncode}:\n{log_file.read_text()[-3000:]}")
        status = state_dir / "hub.json"
        if status.exists():
            try:
                if httpx.get(f"{hub.api}/healthz", timeout=1).status_code == 200:
                    json.loads(status.read_text())
                    return hub
            except (httpx.HTTPError, ValueError):
                pass
        time.sleep(0.2)
    hub.stop()
    raise RuntimeError(f"hub did not become ready:\n{log_file.read_text()[-3000:]}")


async def topic_partitions(bootstrap: str, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the topics, waiting for their metadata (a fresh consumer's cache may lack it)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        return [TopicPartition(t, p) for t in dict.fromkeys(topics) for p in sorted(await producer.partitions_for(t))]
    finally:
        await producer.stop()


def start_worker(hub: HubProcess, app_id: str, state: Path, partitions: int,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A standalone `hub worker` in the hub's consumer group, using the hub's registry with its operator token."""
    env = dict(os.environ, HUB_BOOTSTRAP=hub.bootstrap, HUB_APP_ID=app_id, HUB_REGISTRY_URL=hub.api,
               HUB_TOKEN=hub.token, HUB_STATE_DIR=str(state), HUB_TOPIC_PARTITIONS=str(partitions),
               **(extra_env or {}))
    log = open(state / "worker.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "hub.cli.main", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


class TopicReader:
    """Reads topics from the offsets they had when it was created, so tests only see their own records."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []

    async def start(self, topics: Iterable[str]) -> TopicReader:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.consumer.start()
        self.partitions = await topic_partitions(self.bootstrap, topics)
        self.consumer.assign(self.partitions)
        for tp, offset in (await self.consumer.end_offsets(self.partitions)).items():
            self.consumer.seek(tp, offset)
        return self

    async def read_until(self, done, timeout: float = 60, quiet: float = 1.5) -> list[ConsumerRecord]:
        """Collect records until ``done(records)`` holds, then ``quiet`` seconds more (to catch extras)."""
        assert self.consumer is not None
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        satisfied_at: float | None = None
        while time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                records.extend(msgs)
            if satisfied_at is None and done(records):
                satisfied_at = time.monotonic()
            if satisfied_at is not None and time.monotonic() - satisfied_at >= quiet:
                break
        return records

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


def header(record: ConsumerRecord, name: str) -> bytes | None:
    return next((v for k, v in record.headers if k == name), None)


# ---------------------------------------------------------------- waiting on the consumer group
async def until(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float, what: str) -> T:
    """Poll ``probe`` until ``ok`` holds of its result; fail with the last result after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last seen {got!r}")
        await asyncio.sleep(0.5)


class Group:
    """The consumer group as the broker describes it: its state and, per member, the topic partitions it holds."""

    def __init__(self, bootstrap: str, group_id: str) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.group_id = group_id

    async def __aenter__(self) -> Group:
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.close()

    async def describe(self) -> tuple[str, dict[str, set[tuple[str, int]]]]:
        try:
            [response] = await self.admin.describe_consumer_groups([self.group_id])
        except KafkaError as exc:  # e.g. the coordinator is not there yet: ask again
            return f"unavailable: {exc!r}", {}
        [group] = response.groups
        state, members = group[2], group[5]
        held: dict[str, set[tuple[str, int]]] = {}
        for member in members:
            raw = member[-1]  # member_assignment is the last field in every version
            assignment = ConsumerProtocolMemberAssignment.decode(raw).assignment if raw else []
            held[member[0]] = {(topic, p) for topic, parts in assignment for p in parts}
        return state, held

    async def committed(self, topic: str, partitions: int) -> dict[int, int]:
        """partition -> the group's committed offset on ``topic`` (-1: none)."""
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        offsets = await self.admin.list_consumer_group_offsets(self.group_id, partitions=tps)
        return {tp.partition: offsets[tp].offset if tp in offsets else -1 for tp in tps}


def stable_with(members: int, check: Callable[[dict[str, set[tuple[str, int]]]], bool] = lambda _: True):
    def ok(described: tuple[str, dict[str, set[tuple[str, int]]]]) -> bool:
        state, held = described
        return state == "Stable" and len(held) == members and all(held.values()) and check(held)
    return ok
