"""Stopping a hub process in bounded time, whatever the broker's state.

A stop (SIGINT or SIGTERM) has two limits, both counted from the first signal:

* the **grace budget** (``Settings.stop_grace``, 5 s): every shutdown step (finish the batches in flight and
  commit them, leave the group, flush the producer, close the API's clients) gets what is left of it, so a
  broker that is gone or paused cannot make the steps add up to minutes (each aiokafka ``stop`` may wait for
  an unreachable coordinator or an unacknowledged flush);
* the **hard deadline** (``Settings.stop_timeout``, 8 s): a watchdog *thread* (it still runs if the event
  loop is stuck) logs what is still stopping, runs the registered last-resort actions (kill an owned broker)
  and exits with ``FORCED_EXIT``.

Nothing accepted is lost by a forced exit: input offsets are committed only after a batch's outputs and audit
records are acknowledged (``hub.worker.service``), so a forced exit only skips commits, and the next owner of
those partitions reads the uncommitted input again (duplicates are dropped by event id).

Exit codes: 0 a stop that finished in time, ``FORCED_EXIT`` (75) a stop cut short by the hard deadline or a
second signal, 70 (``hub.worker.service.FATAL_EXIT``) a batch that could not be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import mode

log = logging.getLogger("hub")

FORCED_EXIT = 75  # EX_TEMPFAIL: the stop was cut short; uncommitted input is read again by the next owner
SECOND_SIGNAL_AFTER_S = 1.0  # a second signal closer than this to the first is the same Ctrl-C (a process group)


def time_left(deadline: float | None, now: float, cap: float | None = None) -> float:
    """Seconds a shutdown step may take: what is left until ``deadline`` (never negative), at most ``cap``."""
    left = float("inf") if deadline is None else max(0.0, deadline - now)
    return left if cap is None else min(cap, left)


def forces_exit(first_signal_at: float | None, now: float) -> bool:
    """Whether a signal means "exit now": a second one, not the echo of the first delivered to a process group
    (a terminal's Ctrl-C reaches ``hub demo`` and its ``hub up`` child, and the demo forwards it too)."""
    return first_signal_at is not None and now - first_signal_at >= SECOND_SIGNAL_AFTER_S


class StopBudget:
    """The grace budget shared by every shutdown step of this process; its clock starts at the first stop."""

    def __init__(self, total: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.clock = clock
        self.deadline: float | None = None

    def start(self) -> None:
        if self.deadline is None:
            self.deadline = self.clock() + self.total

    def left(self, cap: float | None = None) -> float:
        self.start()  # a stop not started by a signal (tests, a fatal error) still gets a bounded budget
        return time_left(self.deadline, self.clock(), cap)


_budget = StopBudget(5.0)


def stop_budget() -> StopBudget:
    return _budget


def reset_stop_budget(total: float) -> StopBudget:
    """A fresh budget for this process (``hub.runtime.run_worker``: one per worker run)."""
    global _budget
    _budget = StopBudget(total)
    return _budget


async def bounded(step: Awaitable[Any], what: str, cap: float | None = None) -> bool:
    """Await one shutdown step within the grace budget; True if it finished. A step cut short is logged (at INFO:
    the stop goes on, and what it skipped is redone by whoever reads the input next) and never raises."""
    timeout = stop_budget().left(cap)
    _steps.append(what)
    try:
        await asyncio.wait_for(step, max(timeout, 0.001))
        return True
    except TimeoutError:
        log.info("stopping: %s did not finish within %.1f s; going on without it", what, timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("stopping: %s failed (%r); going on", what, exc)
    finally:
        _steps.remove(what)
    return False


_steps: list[str] = []  # the shutdown steps under way (what a forced exit names)


def steps_in_progress() -> list[str]:
    return list(_steps)


class Watchdog:
    """The hard deadline: a daemon thread that ends the process if the stop takes longer than ``timeout``."""

    def __init__(self, timeout: float, describe: Callable[[], list[str]] | None = None) -> None:
        self.timeout = timeout
        self.describe = describe or steps_in_progress
        self.last_resort: list[Callable[[], None]] = []
        self.first_signal_at: float | None = None
        self.interrupt_on_signal = True  # False once the stop is under way (an owned broker's stop must finish)
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def on_signal(self, signum: int) -> bool:
        """Arm the deadline on the first signal; True when this signal forces the exit now."""
        now = time.monotonic()
        with self._lock:
            if forces_exit(self.first_signal_at, now):
                force = True
            else:
                force = False
                if self.first_signal_at is None:
                    self.first_signal_at = now
                    stop_budget().start()
                    self._timer = threading.Timer(self.timeout, self.force, args=("the stop deadline passed",))
                    self._timer.daemon = True
                    self._timer.start()
                    log.info("%s: stopping (at most %.0f s; a second signal stops at once)",
                             signal.Signals(signum).name, self.timeout)
        if force:
            self.force(f"a second {signal.Signals(signum).name}")
        return force

    def force(self, why: str) -> None:
        """Exit now (from any thread): run the last-resort actions, say what was still stopping, exit 75.

        The report runs in a helper thread given at most a second: if the event loop's thread is blocked inside
        a log handler (a full pipe nobody reads), logging from here would wait for it forever."""
        done = threading.Event()

        def report() -> None:
            for action in self.last_resort:
                try:
                    action()
                except Exception as exc:
                    log.error("last-resort stop action failed: %r", exc)
            try:
                pending = self.describe()
            except Exception as exc:  # a diagnostic must never prevent the exit
                pending = [f"(unknown: {exc!r})"]
            log.error("%s: exiting with code %d while still stopping: %s. Nothing accepted is lost: input whose "
                      "outputs were not all acknowledged was not committed and is read again.",
                      why, FORCED_EXIT, ", ".join(pending) or "nothing known")
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            done.set()

        threading.Thread(target=report, name="hub-forced-exit", daemon=True).start()
        done.wait(1.0)
        os._exit(FORCED_EXIT)


_watchdog: Watchdog | None = None


def watchdog() -> Watchdog | None:
    return _watchdog


def install_watchdog(timeout: float, describe: Callable[[], list[str]] | None = None) -> Watchdog:
    """The process's watchdog, and plain signal handlers for the synchronous start-up (before the event loop
    takes the signals over): the first SIGINT/SIGTERM unwinds the start with KeyboardInterrupt, so ``finally``
    blocks (an owned broker's stop) run."""
    global _watchdog
    _watchdog = Watchdog(timeout, describe)
    install_signal_handlers(_watchdog)
    return _watchdog


def install_signal_handlers(dog: Watchdog) -> None:
    """Plain handlers (again after the event loop closed: it resets SIGTERM to "die at once", which would leave
    an owned broker behind)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if not dog.on_signal(signum) and dog.interrupt_on_signal:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class HubModeWorker(mode.Worker):
    """``mode.Worker`` with the hub's stop: the watchdog armed by the first signal, a second one exits at once,
    and the loop's own wind-down (mode waits up to ~2 s for stray tasks and a sentinel sleep) kept short."""

    def __init__(self, *services: mode.ServiceT, watchdog: Watchdog, **kwargs: Any) -> None:
        super().__init__(*services, **kwargs)
        self._watchdog = watchdog

    def _on_sigint(self) -> None:
        if not self._watchdog.on_signal(signal.SIGINT):
            self._schedule_shutdown(signal.SIGINT)

    def _on_sigterm(self) -> None:
        if not self._watchdog.on_signal(signal.SIGTERM):
            self._schedule_shutdown(signal.SIGTERM)

    def _gather_all(self) -> None:
        # aiokafka's background tasks of clients whose stop was cut short: give them a moment, then cancel
        for _ in range(3):
            if not asyncio.all_tasks(self.loop):
                break
            self.loop.run_until_complete(asyncio.sleep(0.05))
        for task in asyncio.all_tasks(self.loop):
            task.cancel()

    async def _sentinel_task(self) -> None:
        await asyncio.sleep(0.05)
