"""A local multi-node Apache Kafka (KRaft) cluster: ``hub broker start --nodes 3``.

Each node is a ``LocalBroker`` in ``<state_dir>/cluster/node-<id>`` running as broker *and* controller
(KRaft combined mode), with a fixed voter set (``controller.quorum.voters``) and one shared cluster id.

Why three combined nodes rather than one controller and three brokers: the point of a local cluster is to
show the hub surviving the loss of any one machine, the controller leader's included. One dedicated
controller would be a single point of failure; three dedicated controllers plus three brokers would be six
JVMs on a two-core machine. Three combined nodes give a three-voter quorum (it survives one failure) and
three brokers (replication factor 3, ``min.insync.replicas=2``) with three JVMs. Kafka advises dedicated
controllers for large production clusters; on an existing cluster the hub needs nothing of this module
(``HUB_BOOTSTRAP``).

A secure (SCRAM + ACLs) local cluster is not offered: use ``hub broker start --secure`` (one node) to try
the ACLs, and a real cluster's own security for production.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field

from hub.broker.manager import (
    BrokerError,
    BrokerInfo,
    LocalBroker,
    QuorumPlan,
    kafka_request,
    new_cluster_id,
    port_in_use,
)
from hub.settings import Settings


@dataclass(frozen=True)
class ClusterInfo:
    """The running nodes of a local cluster (a stopped or killed node is absent from ``nodes``)."""

    cluster_id: str
    size: int
    nodes: dict[int, BrokerInfo] = field(default_factory=dict)
    ports: dict[int, tuple[int, int]] = field(default_factory=dict)  # node id -> (broker, controller) port

    @property
    def bootstrap(self) -> str:
        """Every node's listener, so a client finds the cluster while any one of them runs."""
        return ",".join(f"127.0.0.1:{self.ports[i][0]}" for i in sorted(self.ports))

    @property
    def controllers(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[i][1]}" for i in sorted(self.ports))

    @property
    def secure(self) -> bool:
        return False

    @property
    def kafka_version(self) -> str:
        return next(iter(self.nodes.values())).kafka_version if self.nodes else ""

    def to_json(self) -> dict[str, object]:
        return {
            "cluster_id": self.cluster_id, "size": self.size, "bootstrap": self.bootstrap,
            "controllers": self.controllers, "kafka_version": self.kafka_version,
            "nodes": {str(i): asdict(info) for i, info in sorted(self.nodes.items())},
        }


class LocalCluster:
    """Format, start, probe, kill, restart and stop the nodes of a local KRaft cluster."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.state_dir / "cluster"
        self.record_file = self.dir / "cluster.json"
        self.owned = False  # nodes this process started die with it (tests, `hub up`); restarts follow suit

    # ---------- plan ----------
    def _record(self) -> dict | None:
        try:
            return json.loads(self.record_file.read_text())
        except (OSError, ValueError):
            return None

    def default_ports(self, size: int) -> dict[int, tuple[int, int]]:
        """Node i gets the configured broker and controller ports plus 2(i-1): 9092/9093, 9094/9095, ..."""
        base, ctl = self.settings.broker_port, self.settings.broker_controller_port
        return {i: (base + 2 * (i - 1), ctl + 2 * (i - 1)) for i in range(1, size + 1)}

    def node(self, node_id: int) -> LocalBroker:
        record = self._record()
        if record is None:
            raise BrokerError(f"no local cluster was formatted in {self.dir}")
        return self._node(node_id, record)

    def _node(self, node_id: int, record: dict) -> LocalBroker:
        voters = {int(i): int(p[1]) for i, p in record["ports"].items()}
        plan = QuorumPlan(node_id, voters, record["cluster_id"])
        return LocalBroker(self.settings, broker_dir=self.dir / f"node-{node_id}", quorum=plan)

    # ---------- status ----------
    def status(self) -> ClusterInfo | None:
        """The cluster this state dir recorded, with its running nodes; None if none of them runs."""
        record = self._record()
        if record is None:
            return None
        nodes = {}
        for i in record["ports"]:
            info = self._node(int(i), record).status()
            if info is not None:
                nodes[int(i)] = info
        if not nodes:
            return None
        ports = {int(i): (int(p[0]), int(p[1])) for i, p in record["ports"].items()}
        return ClusterInfo(record["cluster_id"], len(ports), nodes, ports)

    # ---------- start ----------
    def start(self, size: int | None = None, *, ports: dict[int, tuple[int, int]] | None = None,
              owned: bool = False) -> tuple[ClusterInfo, bool]:
        """Start every node that is not running and wait until each answers and the cluster has them all.

        A formatted cluster keeps its size, ports and cluster id; ``size`` (default 3) and ``ports`` shape a
        new one, and asking a formatted cluster for another size is an error.
        """
        self.owned = owned
        record = self._record()
        if record is not None and size is not None and size != len(record["ports"]):
            raise BrokerError(f"{self.dir} holds a {len(record['ports'])}-node cluster; stop it and remove that "
                              f"directory to make one of {size} nodes")
        if record is None:
            size = size or 3
            if size < 2:
                raise BrokerError("a local cluster has at least 2 nodes (3 to survive the loss of one); "
                                  "for one node use `hub broker start`")
            plan_ports = ports or self.default_ports(size)
            record = {"cluster_id": new_cluster_id(), "ports": {str(i): list(p) for i, p in plan_ports.items()}}
            self.dir.mkdir(parents=True, exist_ok=True)
            self.record_file.write_text(json.dumps(record, indent=2))
        started_any = False
        launched: list[tuple[LocalBroker, BrokerInfo]] = []
        for i, (port, controller_port) in sorted((int(i), p) for i, p in record["ports"].items()):
            node = self._node(i, record)
            if node.status() is None:
                for p in (port, controller_port):
                    if port_in_use(p):
                        self.stop()
                        raise BrokerError(f"port {p} (node {i} of the local cluster) is taken by another process")
            info, started = node.start(port=port, controller_port=controller_port, owned=owned, secure=False,
                                       wait=False)
            started_any |= started
            launched.append((node, info))
        deadline = time.monotonic() + self.settings.broker_start_timeout
        try:
            for node, info in launched:
                node.wait_ready(info, deadline)
            self.wait_for_brokers(len(launched), deadline)
        except BaseException:
            if started_any:
                self.stop()
            raise
        status = self.status()
        assert status is not None
        return status, started_any

    def wait_for_brokers(self, count: int, deadline: float) -> None:
        """Until some node's metadata lists ``count`` brokers (a topic with 3 replicas needs all three)."""
        seen = 0
        while time.monotonic() < deadline:
            info = self.status()
            for node in (info.nodes.values() if info else ()):
                seen = max(seen, registered_brokers(node.port))
                if seen >= count:
                    return
            time.sleep(0.2)
        raise BrokerError(f"the local cluster's metadata lists {seen} of {count} brokers after the start timeout")

    def restart(self, node_id: int, timeout: float | None = None) -> BrokerInfo:
        """Start one stopped or killed node again (same storage, ports and voter set) and wait for it."""
        record = self._record()
        if record is None:
            raise BrokerError(f"no local cluster was formatted in {self.dir}")
        port, controller_port = record["ports"][str(node_id)]
        node = self._node(node_id, record)
        info, _ = node.start(port=port, controller_port=controller_port, secure=False, wait=False, owned=self.owned)
        node.wait_ready(info, time.monotonic() + (timeout or self.settings.broker_start_timeout))
        return info

    # ---------- stop ----------
    def stop(self, timeout: float = 30.0) -> ClusterInfo | None:
        """Stop every running node; returns what ran (None if nothing did).

        All nodes get SIGTERM at once: stopped one by one, the last ones would wait for a quorum that is gone.
        """
        info = self.status()
        record = self._record()
        if info is None or record is None:
            return info
        for node in info.nodes.values():
            try:
                os.kill(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for i in record["ports"]:
            self._node(int(i), record).stop(timeout)  # waits for the exit; SIGKILL after ``timeout``
        return info

    def kill(self, node_id: int) -> BrokerInfo:
        """SIGKILL one node (a machine failure: no controlled shutdown, no leadership handover)."""
        node = self.node(node_id)
        info = node.status()
        if info is None:
            raise BrokerError(f"node {node_id} of the local cluster does not run")
        try:
            os.kill(info.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 30
        while node.status() is not None and time.monotonic() < deadline:  # status() reaps nothing: wait it out
            try:
                os.waitpid(info.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        node.info_file.unlink(missing_ok=True)
        return info

    def quorum_leader(self) -> int | None:
        """The node id of the KRaft controller leader (``kafka-metadata-quorum describe --status``)."""
        info = self.status()
        if info is None:
            return None
        node = next(iter(info.nodes))
        cmd = self.node(node)._java_cmd("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-controller",
                                        info.controllers, "describe", "--status")
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        found = re.search(r"^LeaderId:\s*(\d+)", result.stdout, re.M)
        return int(found.group(1)) if found else None


def registered_brokers(port: int) -> int:
    """How many brokers a node's metadata lists (a Metadata v0 request for no topics); 0 if it does not answer."""
    body = kafka_request(port, 3, (0).to_bytes(4, "big", signed=True))  # an empty topic array: v0 lists all
    return int.from_bytes(body[4:8], "big", signed=True) if body is not None and len(body) >= 8 else 0


def running_cluster(settings: Settings) -> ClusterInfo | None:
    return LocalCluster(settings).status()

