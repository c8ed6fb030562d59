"""`hub broker start|status|stop` as a user runs them: a real broker, a no-op second start, exact stop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hub.broker.manager import _pid_alive, free_port

pytestmark = pytest.mark.integration


def hub_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, HUB_STATE_DIR=str(tmp_path / "state"), HUB_BROKER_PORT=str(free_port()),
               HUB_BROKER_CONTROLLER_PORT=str(free_port()))
    env.pop("HUB_BOOTSTRAP", None)
    return env


def test_start_status_stop(cli_env: dict[str, str]) -> None:
    started = hub_cli("broker", "start", "--json", env=cli_env)
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    try:
        assert info["started"] is True and info["bootstrap"] == f"127.0.0.1:{cli_env['HUB_BROKER_PORT']}"
        again = hub_cli("broker", "start", "--json", env=cli_env)
        assert again.returncode == 0 and json.loads(again.stdout)["started"] is False
        assert json.loads(again.stdout)["pid"] == info["pid"]
        status = hub_cli("broker", "status", "--json", env=cli_env)
        assert status.returncode == 0 and json.loads(status.stdout)["bootstrap"] == info["bootstrap"]
    finally:
        stopped = hub_cli("broker", "stop", env=cli_env)
    assert stopped.returncode == 0 and str(info["pid"]) in stopped.stdout
    assert not _pid_alive(info["pid"])
    status = hub_cli("broker", "status", "--json", env=cli_env)
    assert status.returncode == 1 and json.loads(status.stdout) == {"running": False}


def test_port_taken_is_a_clear_error(cli_env: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(cli_env["HUB_BROKER_PORT"])))
        blocker.listen()
        result = hub_cli("broker", "start", env=cli_env)
    assert result.returncode == 1
    assert "already taken" in result.stderr and cli_env["HUB_BROKER_PORT"] in result.stderr


def test_no_java_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(cli_env, PATH=str(tmp_path / "empty-bin"))
    result = subprocess.run([sys.executable, "-m", "hub.cli.main", "broker", "start"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Java is not on PATH" in result.stderr


def test_ctrl_c_on_hub_up_stops_everything_it_started(cli_env: dict[str, str]) -> None:
    """`hub up` without --bootstrap starts its own broker; Ctrl-C (SIGINT) stops the worker, API and broker."""
    import signal
    import time

    import httpx

    env = dict(cli_env, HUB_API_PORT=str(free_port()))
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "up"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    state = Path(env["HUB_STATE_DIR"])
    broker_pid = None
    try:
        deadline = time.monotonic() + 180
        ready = False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{env['HUB_API_PORT']}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                pass
            if not ready:
                time.sleep(0.3)  # poll interval inside the deadline
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert ready, "hub up's API did not answer within 180 s"
        broker_pid = json.loads((state / "broker" / "broker.json").read_text())["pid"]
        assert _pid_alive(broker_pid)
        for _ in range(60):  # the status file is written once the worker has started too
            status = hub_cli("status", "--json", env=env)
            if status.returncode == 0:
                break
            time.sleep(0.5)
        assert status.returncode == 0 and json.loads(status.stdout)["api"].endswith(env["HUB_API_PORT"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert broker_pid is not None and not _pid_alive(broker_pid)
    assert not (state / "broker" / "broker.json").exists()
    assert hub_cli("status", "--json", env=env).returncode == 1
