"""Stopping ``hub up``, ``hub worker`` and ``hub demo`` whatever the broker's state (docs/operations.md).

These tests stop, pause and restart a broker, so they use a private one (module fixture), never the session's.
Per broker state (running, stopped by ``LocalBroker.stop`` as ``hub broker stop`` does, paused by SIGSTOP), two
``hub up`` and two ``hub worker`` processes run; one of each gets SIGINT, the other SIGTERM, all at once. Each must
exit within 10 s with code 0 (a stop that finished) or 75 (cut short by the hard deadline), leaving no process
it started behind. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hub.broker.manager import BrokerInfo, LocalBroker, free_port
from hub.settings import Settings
from hub.shutdown import FORCED_EXIT

pytestmark = pytest.mark.integration

STOP_LIMIT_S = 10.0
STOP_CODES = (0, FORCED_EXIT)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc: no psutil in the test environment)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def paused(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop_with(self, sig: signal.Signals) -> tuple[float, int, set[int]]:
        """(seconds to exit, exit code, processes it started still alive) after ``sig``."""
        below = descendants(self.popen.pid)
        started = time.monotonic()
        self.popen.send_signal(sig)
        try:
            code = self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            code = -9
        took = time.monotonic() - started
        wait_for(lambda: not any(alive(p) for p in below), 2, f"{self.name}'s children to end (SIGTERM'd by "
                 "the kernel when their parent dies)") if any(alive(p) for p in below) and code == -9 else None
        return took, code, {p for p in below if alive(p)}


class Cluster:
    """The module's private broker and the hub processes started on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker = LocalBroker(Settings(state_dir=root / "broker-state"))
        self.ports = (free_port(), free_port())
        self.info: BrokerInfo | None = None

    def start_broker(self) -> BrokerInfo:
        self.info, _ = self.broker.start(port=self.ports[0], controller_port=self.ports[1], owned=True)
        return self.info

    def ensure_broker(self) -> BrokerInfo:
        """Running (again, after a test stopped it): every test states what it needs, whatever ran before."""
        running = self.broker.status()
        return running if running is not None else self.start_broker()

    def env(self, **extra: str) -> dict[str, str]:
        assert self.info is not None
        return dict(os.environ, HUB_BOOTSTRAP=self.info.bootstrap, **extra)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        log = self.root / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "hub.cli.main", *args], env=env, stdout=out,
                                     stderr=subprocess.STDOUT)
        return Proc(name, popen, log)

    def hub_up(self, name: str) -> tuple[Proc, str, Path]:
        state, port = self.root / name, free_port()
        env = self.env(HUB_STATE_DIR=str(state), HUB_API_PORT=str(port), HUB_APP_ID=f"sd-{uuid.uuid4().hex[:8]}")
        return self.spawn(name, ["up"], env), f"http://127.0.0.1:{port}", state

    def hub_worker(self, name: str, api: str, token: str) -> Proc:
        state = self.root / name
        state.mkdir(parents=True, exist_ok=True)
        env = self.env(HUB_STATE_DIR=str(state), HUB_APP_ID=f"sd-{uuid.uuid4().hex[:8]}", HUB_REGISTRY_URL=api,
                       HUB_TOKEN=token)
        return self.spawn(name, ["worker"], env)


def api_ready(proc: Proc, api: str, state: Path) -> bool:
    assert proc.popen.poll() is None, f"{proc.name} exited while starting:\n{proc.output()[-3000:]}"
    if not (state / "hub.json").exists():
        return False
    try:
        return httpx.get(f"{api}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def worker_running(proc: Proc) -> bool:
    assert proc.popen.poll() is None, f"{proc.name} exited while starting:\n{proc.output()[-3000:]}"
    return "hub worker running" in proc.output()


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "[ERROR]" in line or "[CRITICAL]" in line or "Traceback" in line]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A private broker for this module (stopped, paused and restarted by its tests)."""
    cluster = Cluster(tmp_path_factory.mktemp("shutdown"))
    cluster.start_broker()
    try:
        yield cluster
    finally:
        if cluster.info is not None and paused(cluster.info.pid):
            os.kill(cluster.info.pid, signal.SIGCONT)
        cluster.broker.stop()


def test_hub_up_starts_without_error_lines_on_a_healthy_broker(cluster: Cluster) -> None:
    """The first start on a fresh broker (topics created, leaders elected, group joined) is the noisiest."""
    cluster.ensure_broker()
    proc, api, state = cluster.hub_up("quiet-up")
    try:
        wait_for(lambda: api_ready(proc, api, state), 90, "hub up ready")
    finally:
        took, code, left = proc.stop_with(signal.SIGINT)
    assert code == 0, proc.output()[-3000:]
    assert error_lines(proc.output()) == [], proc.output()[-3000:]


def test_sigterm_ends_hub_demo_and_its_hub_within_10_s(cluster: Cluster) -> None:
    """`hub demo` runs `hub up` as a child; SIGTERM to the demo alone (no process group signal) stops both."""
    cluster.ensure_broker()
    state, port = cluster.root / "demo", free_port()
    proc = cluster.spawn("demo", ["demo", "--records", "100000"],
                         cluster.env(HUB_STATE_DIR=str(state), HUB_API_PORT=str(port)))
    try:
        wait_for(lambda: api_ready(proc, f"http://127.0.0.1:{port}", state), 120, "the demo's hub ready")
        wait_for(lambda: len(descendants(proc.popen.pid)) >= 1, 5, "the demo's hub up child")
    finally:
        took, code, left = proc.stop_with(signal.SIGTERM)
    print(f"hub demo: SIGTERM -> exit {code} after {took:.1f} s")
    assert took < STOP_LIMIT_S and code == 130 and not left, f"exit {code}, left {left}:\n{proc.output()[-3000:]}"


# stopped last: no broker restart is needed between the cases
@pytest.mark.parametrize("broker_state", ["running", "paused", "stopped"])
def test_sigint_and_sigterm_end_hub_up_and_hub_worker_within_10_s(cluster: Cluster, broker_state: str) -> None:
    cluster.ensure_broker()
    up_int, api, up_state = cluster.hub_up(f"up-int-{broker_state}")
    wait_for(lambda: api_ready(up_int, api, up_state), 90, "the first hub up ready")
    token = (up_state / "operator.token").read_text().strip()
    # the second hub up starts once the first has seeded the control plane (then it has nothing to write)
    up_term, api2, up2_state = cluster.hub_up(f"up-term-{broker_state}")
    w_int = cluster.hub_worker(f"worker-int-{broker_state}", api, token)
    w_term = cluster.hub_worker(f"worker-term-{broker_state}", api, token)
    wait_for(lambda: api_ready(up_term, api2, up2_state) and worker_running(w_int) and worker_running(w_term),
             90, "the second hub up and both workers running")

    assert cluster.info is not None
    pid = cluster.info.pid
    if broker_state == "stopped":
        cluster.broker.stop()  # what `hub broker stop` does
        assert not alive(pid)
    elif broker_state == "paused":
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: paused(pid), 5, "the broker paused")

    results = {}
    try:
        procs = [(up_int, signal.SIGINT), (up_term, signal.SIGTERM), (w_int, signal.SIGINT),
                 (w_term, signal.SIGTERM)]
        below = {p.name: descendants(p.popen.pid) for p, _ in procs}
        started = time.monotonic()
        for proc, sig in procs:
            proc.popen.send_signal(sig)
        for proc, _ in procs:
            try:
                code = proc.popen.wait(max(0.1, started + 30 - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                code = proc.popen.wait()
                code = -9 if code is None else code
            results[proc.name] = (round(time.monotonic() - started, 1), code,
                                  {p for p in below[proc.name] if alive(p)})
    finally:
        if broker_state == "paused":
            os.kill(pid, signal.SIGCONT)
    print(f"broker {broker_state}: seconds to exit, exit code, children left: {results}")
    for proc, _ in procs:
        took, code, left = results[proc.name]
        assert took < STOP_LIMIT_S and code in STOP_CODES and not left, (
            f"{proc.name}: exit {code} after {took} s, children left {left}:\n{proc.output()[-2500:]}")


def test_hub_up_with_its_own_paused_broker_stops_both_within_10_s(cluster: Cluster) -> None:
    """`hub up` without a bootstrap starts (owns) a broker; paused, that broker ignores SIGTERM until resumed, so
    `hub up` resumes it, and SIGKILLs it at the deadline: it must never outlive `hub up`."""
    state, port = cluster.root / "owned", free_port()
    env = dict(os.environ, HUB_STATE_DIR=str(state), HUB_API_PORT=str(port), HUB_APP_ID=f"sd-{uuid.uuid4().hex[:8]}",
               HUB_BROKER_PORT=str(free_port()), HUB_BROKER_CONTROLLER_PORT=str(free_port()))
    env.pop("HUB_BOOTSTRAP", None)
    proc = cluster.spawn("owned-up", ["up"], env)
    try:
        wait_for(lambda: api_ready(proc, f"http://127.0.0.1:{port}", state), 120, "hub up (own broker) ready")
        broker = LocalBroker(Settings(state_dir=state)).status()
        assert broker is not None
        os.kill(broker.pid, signal.SIGSTOP)
        wait_for(lambda: paused(broker.pid), 5, "the owned broker paused")
    finally:
        took, code, left = proc.stop_with(signal.SIGTERM)
    print(f"hub up with its own paused broker: SIGTERM -> exit {code} after {took:.1f} s")
    assert took < STOP_LIMIT_S and code in STOP_CODES, proc.output()[-3000:]
    assert not alive(broker.pid) and not left, f"left behind: broker {broker.pid}, {left}"

