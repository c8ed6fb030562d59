"""Idle cost: CPU share of an idle ``hub up`` (worker + API, no traffic) and of the broker beside it.

    python -m bench.idle_cpu [--seconds 60] [--settle 15]

Starts ``hub up`` on ``HUB_BOOTSTRAP`` or on a fresh local broker, waits until it answers and ``--settle``
seconds more (start-up work done), then reads utime+stime of the hub process and of the broker from
``/proc/<pid>/stat`` over ``--seconds``: the share of one core each used. Target: the hub under 2%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from bench.throughput import add_output_options, run_and_record, start_hub, stop_hub
from hub.broker.manager import free_port

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def broker_pid(marker: str) -> int | None:
    """The local broker this benchmark started: a java process whose command line names its state folder."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"java" in cmdline and marker.encode() in cmdline:
            return int(entry.name)
    return None


async def run(args: argparse.Namespace, bootstrap: str, state: Path) -> dict[str, Any]:
    api_port = free_port()
    env = dict(os.environ, HUB_BOOTSTRAP=bootstrap, HUB_API_PORT=str(api_port), HUB_STATE_DIR=str(state),
               HUB_APP_ID=f"idle-{uuid.uuid4().hex[:6]}")
    hub = start_hub(env, f"http://127.0.0.1:{api_port}")
    try:
        await asyncio.sleep(args.settle)  # a benchmark's measuring window, not a test's wait
        broker = None if os.environ.get("HUB_BOOTSTRAP") else broker_pid(str(state.parent))
        hub_before = cpu_seconds(hub.pid)
        broker_before = cpu_seconds(broker) if broker else 0.0
        start = time.monotonic()
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - start
        hub_share = (cpu_seconds(hub.pid) - hub_before) / elapsed
        broker_share = (cpu_seconds(broker) - broker_before) / elapsed if broker else float("nan")
    finally:
        stop_hub(hub)
    return {"seconds": round(elapsed, 1), "hub_core_share": hub_share, "broker_core_share": broker_share}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=15.0)
    add_output_options(parser, "idle_cpu")
    args = parser.parse_args()
    result = run_and_record(lambda bootstrap, state: run(args, bootstrap, state), args.out, "hub-bench-idle-")
    if args.json:
        print(json.dumps(result))
        return
    print(f"idle hub up over {result['seconds']:.0f} s: {100 * result['hub_core_share']:.2f}% of a core "
          f"(broker beside it: {100 * result['broker_core_share']:.2f}%)")


if __name__ == "__main__":
    main()
