"""The bounded stop (hub.shutdown) and the Kafka client log classification (hub.kafka_logging)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub import shutdown
from hub.kafka_logging import KafkaLogFilter, Outage, classify
from hub.runtime import leaderless
from hub.shutdown import StopBudget, bounded, forces_exit, time_left


# ---------------------------------------------------------------- stop budget
def test_time_left_is_the_rest_of_the_deadline_capped_and_never_negative() -> None:
    assert time_left(10.0, 4.0) == 6.0
    assert time_left(10.0, 4.0, cap=2.0) == 2.0
    assert time_left(10.0, 12.0) == 0.0
    assert time_left(None, 4.0, cap=3.0) == 3.0


def test_a_second_signal_forces_only_when_it_is_not_the_echo_of_the_first() -> None:
    assert not forces_exit(None, 100.0)  # the first one
    assert not forces_exit(100.0, 100.3)  # the same Ctrl-C, delivered to the process group and forwarded
    assert forces_exit(100.0, 101.5)


def test_the_budget_starts_at_the_first_stop_and_is_shared_by_the_steps() -> None:
    now = [50.0]
    budget = StopBudget(6.0, clock=lambda: now[0])
    assert budget.deadline is None
    budget.start()
    now[0] = 52.0
    budget.start()  # a later start does not move the deadline
    assert budget.left() == 4.0
    assert budget.left(cap=1.0) == 1.0
    now[0] = 60.0
    assert budget.left() == 0.0


async def test_a_step_that_does_not_finish_in_the_budget_is_cut_short_and_never_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    shutdown.reset_stop_budget(0.2)
    caplog.set_level(logging.INFO, logger="hub")

    async def hangs() -> None:
        await asyncio.sleep(30)

    async def fails() -> None:
        raise RuntimeError("broker gone")

    async def quick() -> None:
        return None

    assert await bounded(quick(), "quick") is True
    assert await bounded(hangs(), "leaving the group") is False
    assert await bounded(fails(), "flushing") is False
    assert "leaving the group did not finish" in caplog.text
    assert shutdown.steps_in_progress() == []
    shutdown.reset_stop_budget(5.0)


# ---------------------------------------------------------------- Kafka client records
@pytest.mark.parametrize("message", [
    "Failed fetch offsets from 1: NotLeaderForPartitionError",
    "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
    "Failed fetch messages from 1: NodeNotReadyError: Attempt to send a request to node which is not ready",
    "Unable to update metadata from [1]",
    "Heartbeat failed for group hub because it is rebalancing",
])
def test_retriable_start_up_noise_is_debug(message: str) -> None:
    assert classify(logging.ERROR, message).level == logging.DEBUG
    assert classify(logging.ERROR, message).level == logging.DEBUG


def test_an_unreachable_broker_is_debug_per_record_but_tracked() -> None:
    verdict = classify(logging.ERROR, "Unable connect to node with id 1: [Errno 111] Connection refused")
    assert verdict.level == logging.DEBUG and verdict.lasting == "broker"


def test_what_needs_the_operator_stays_loud_and_says_what_to_do() -> None:
    auth = classify(logging.ERROR, "SaslAuthenticationFailedError: Authentication failed during authentication "
                    "due to invalid credentials with SASL mechanism SCRAM-SHA-256")
    assert auth.level == logging.ERROR and "HUB_KAFKA_PASSWORD" in (auth.advice or "")
    acl = classify(logging.WARNING, "Topic ingress.x is not authorized for this client")
    assert acl.level == logging.ERROR and "hub acl sync" in (acl.advice or "")


def test_an_unknown_topic_is_debug_per_record_but_tracked_per_topic() -> None:
    verdict = classify(logging.ERROR, "Topic feed.x not found in cluster metadata")
    assert verdict.level == logging.DEBUG and verdict.lasting == "topic feed.x"


def test_anything_else_is_left_as_it_is() -> None:
    assert classify(logging.ERROR, "Unexpected error in sender routine").level == logging.ERROR


def test_an_outage_is_reported_once_it_lasts_and_then_again_only_every_period() -> None:
    outage = Outage(warn_after_s=30, quiet_s=5)
    assert outage.failure(0.0) is None
    assert outage.failure(3.0) is None
    assert outage.failure(10.0) is None  # a gap of more than 5 s: a new outage from 10
    reports = {t: got for t in range(11, 75) if (got := outage.failure(float(t))) is not None}
    assert reports == {40: 30.0, 70: 60.0}


def test_the_filter_drops_lowered_records_and_warns_about_a_long_outage(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    flt = KafkaLogFilter("127.0.0.1:9", warn_after_s=10, clock=lambda: now[0])
    caplog.set_level(logging.WARNING)

    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka.conn", level, __file__, 1, msg, None, None)

    assert flt.filter(record(logging.ERROR, "Group Coordinator Request failed: [Error 15]")) is False
    for t in range(0, 12):
        now[0] = float(t)
        flt.filter(record(logging.ERROR, "Unable connect to node with id 1: [Errno 111] Connection refused"))
    warnings = [r for r in caplog.records if r.name == "hub"]
    assert len(warnings) == 1 and "has not answered for 10 s" in warnings[0].getMessage()
    kept = record(logging.ERROR, "Unexpected error in sender routine")
    assert flt.filter(kept) is True and kept.levelno == logging.ERROR


def test_partitions_without_a_leader_are_listed() -> None:
    described = [
        {"topic": "a", "error_code": 0, "partitions": [{"partition": 0, "leader": 1, "error_code": 0},
                                                       {"partition": 1, "leader": -1, "error_code": 0}]},
        {"topic": "b", "error_code": 3, "partitions": []},
        {"topic": "c", "error_code": 0, "partitions": [{"partition": 0, "leader": 1, "error_code": 5}]},
    ]
    assert leaderless(described) == ["a/1", "b/*", "c/0"]
    assert leaderless([]) == []


def test_advice_is_appended_and_the_record_still_formats() -> None:
    flt = KafkaLogFilter("127.0.0.1:9", warn_after_s=10)
    record = logging.LogRecord("aiokafka.consumer", logging.WARNING, __file__, 1,
                               "Topic %s is not authorized for this client", ("ingress.x",), None)
    assert flt.filter(record) is True
    text = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert text.startswith("ERROR Topic ingress.x is not authorized") and "hub acl sync" in text


def test_a_topic_missing_for_long_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    flt = KafkaLogFilter("127.0.0.1:9", warn_after_s=10, clock=lambda: now[0])
    caplog.set_level(logging.WARNING)
    for t in range(0, 12):
        now[0] = float(t)
        record = logging.LogRecord("aiokafka.cluster", logging.ERROR, __file__, 1,
                                   "Topic %s not found in cluster metadata", ("feed.y",), None)
        assert flt.filter(record) is False
    [warning] = [r.getMessage() for r in caplog.records if r.name == "hub"]
    assert warning.startswith("topic feed.y has been missing") and "create topics" in warning


# ---------------------------------------------------------------- the hard deadline, in a real process
STUCK = """
import sys, time
from pathlib import Path
from hub import shutdown
dog = shutdown.install_watchdog(float(sys.argv[1]))
dog.last_resort.append(lambda: Path(sys.argv[2]).write_text("broker killed"))
try:
    print("ready", flush=True)
    time.sleep(60)  # a start that does not notice the signal (KeyboardInterrupt disabled below)
except KeyboardInterrupt:
    if sys.argv[3] == "stuck":
        dog.interrupt_on_signal = False
        time.sleep(60)  # the stop hangs: only the watchdog ends it
    sys.exit(0)
"""


def run_stuck(tmp_path: Path, timeout: float, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", STUCK, str(timeout), str(tmp_path / "last-resort"), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_signal_while_starting_unwinds_the_start_and_exits_0(tmp_path: Path) -> None:
    proc = run_stuck(tmp_path, 5.0, "clean")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0 and time.monotonic() - started < 3
    assert not (tmp_path / "last-resort").exists()


def test_a_stop_that_hangs_is_ended_by_the_watchdog_with_75_after_the_last_resort(tmp_path: Path) -> None:
    proc = run_stuck(tmp_path, 0.5, "stuck")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == shutdown.FORCED_EXIT
    assert time.monotonic() - started < 3
    assert (tmp_path / "last-resort").read_text() == "broker killed"
    assert proc.stderr is not None and "exiting with code 75" in proc.stderr.read()


def test_a_second_signal_ends_the_stop_at_once(tmp_path: Path) -> None:
    proc = run_stuck(tmp_path, 30.0, "stuck")
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.2)  # the second signal must come 1 s after the first to count as a second one (not a wait)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == shutdown.FORCED_EXIT and time.monotonic() - started < 3


def test_a_restart_in_place_runs_the_same_command() -> None:
    from hub.worker.service import restart_command

    assert restart_command(["/usr/bin/python3", "-m", "hub.cli.main", "up"], "/venv/bin/python") == [
        "/venv/bin/python", "-m", "hub.cli.main", "up"]
    assert restart_command(["/venv/bin/python", "/venv/bin/hub", "worker", "--bootstrap", "b:9092"],
                           "/venv/bin/python") == ["/venv/bin/python", "/venv/bin/hub", "worker", "--bootstrap",
                                                   "b:9092"]


def test_restart_in_place_keeps_the_pid_and_runs_again() -> None:
    import subprocess
    import sys

    code = ("import os\nfrom hub.worker.service import restart_in_place\n"
            "n = int(os.environ.get('RESTARTED', '0'))\nprint(os.getpid(), n, flush=True)\n"
            "if n == 0:\n    os.environ['RESTARTED'] = '1'\n    restart_in_place(0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = [line.split() for line in result.stdout.splitlines()]
    assert result.returncode == 0 and len(lines) == 2, result.stdout + result.stderr
    assert lines[0][0] == lines[1][0] and [n for _, n in lines] == ["0", "1"]


def test_a_worker_silent_past_most_of_its_session_is_fenced() -> None:
    from hub.worker.service import SessionClock

    now = [100.0]
    clock = SessionClock(10.0, clock=lambda: now[0])
    assert clock.fenced() is None
    now[0] += 7.9
    assert clock.fenced() is None
    now[0] += 0.2  # 8.1 s without a heartbeat: past 80% of the 10 s session
    assert "no heartbeat acknowledged for 8.1 s" in (clock.fenced() or "")
    clock.renewed()
    assert clock.fenced() is None


async def test_the_audit_writer_writes_nothing_when_fenced() -> None:
    import pytest

    from hub.worker.audit_writer import AuditWriter, Fenced

    writer = AuditWriter(sender=None, partitions=None, on_failure=lambda exc: None,  # type: ignore[arg-type]
                         fenced=lambda: "no heartbeat")
    writer.encode = lambda audit: b""
    with pytest.raises(Fenced):
        await writer._seal_and_enqueue([(0, {"event_id": "e"})], ())
    await writer.snapshot([])  # returns at once, writing nothing
