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
