"""``hub``: the command line of the exchange hub (thin wiring around the packages that do the work)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hub.broker.cluster import LocalCluster
from hub.broker.manager import BrokerError, LocalBroker
from hub.cli import exchange as exchange_cli
from hub.cli.acl import acl_app
from hub.cli.audit import audit_app
from hub.cli.control import catalog_app, node_app, scenario_app
from hub.cli.grant import grant_app
from hub.cli.objection import objection_app
from hub.cli.quarantine import quarantine_app
from hub.cli.stats import stats as stats_command
from hub.cli.top import top as top_command
from hub.settings import Settings

app = typer.Typer(help="Streaming public-data exchange hub.", no_args_is_help=True, add_completion=False)
broker_app = typer.Typer(help="The hub's local Apache Kafka (KRaft): one broker, or a cluster with --nodes.",
                         no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(catalog_app, name="catalog")
app.add_typer(node_app, name="node")
app.add_typer(scenario_app, name="scenario")
app.add_typer(acl_app, name="acl")
app.add_typer(audit_app, name="audit")
app.command("publish")(exchange_cli.publish)
app.command("subscribe")(exchange_cli.subscribe)
app.command("call")(exchange_cli.call)
app.add_typer(grant_app, name="grant")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(objection_app, name="objection")
# ---- federation (hub.cli.federation): MirrorMaker 2 links to other platforms' hubs
from hub.cli.federation import federation_app  # noqa: E402 - kept in one block: `hub up` is edited elsewhere

app.add_typer(federation_app, name="federation")

console = Console()
err = Console(stderr=True)

BootstrapOpt = Annotated[
    str | None, typer.Option("--bootstrap", help="host:port of an existing Kafka cluster (else HUB_BOOTSTRAP)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def settings_with(**overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**values) if values else Settings()


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# ---------------- broker ----------------
@broker_app.command("start")
def broker_start(
    as_json: JsonOpt = False,
    secure: Annotated[bool, typer.Option(
        "--secure", help="SCRAM-SHA-256 (SASL_PLAINTEXT) + ACLs; needs its own HUB_STATE_DIR and ports")] = False,
    nodes: Annotated[int | None, typer.Option(
        "--nodes", min=1, help="a local KRaft cluster of N combined broker+controller nodes (else HUB_BROKER_NODES, "
        "default 1); node i listens on HUB_BROKER_PORT+2(i-1)")] = None,
) -> None:
    """Fetch Kafka (first time), format storage and start the broker; a no-op if it already runs."""
    settings = Settings()
    size = nodes or settings.broker_nodes
    if size > 1 or LocalCluster(settings).status() is not None:
        if secure:
            fail("a secure local cluster is not offered: use `hub broker start --secure` (one node) for ACLs")
        _start_cluster(settings, size if size > 1 else None, as_json)
        return
    broker = LocalBroker(settings)
    try:
        with console.status("starting the Kafka broker (the first run downloads its jars)..."):
            info, started = broker.start(secure=True if secure else None)
    except BrokerError as exc:
        fail(str(exc))
        return
    if as_json:
        print(json.dumps({**info.to_json(), "started": started}))
    elif started:
        console.print(f"Kafka {info.kafka_version} broker started: [bold]{info.bootstrap}[/] (pid {info.pid})")
    else:
        console.print(f"Kafka broker already running: [bold]{info.bootstrap}[/] (pid {info.pid})")
    if info.secure and not as_json:
        console.print(f"  {info.security_protocol} {info.sasl_mechanism}, ACLs enforced; hub principal "
                      f"[bold]{info.admin_username}[/], password in {info.admin_password_file}")


def _start_cluster(settings: Settings, size: int | None, as_json: bool) -> None:
    cluster = LocalCluster(settings)
    try:
        with console.status("starting the Kafka cluster (the first run downloads its jars)..."):
            info, started = cluster.start(size)
    except BrokerError as exc:
        fail(str(exc))
        return
    if as_json:
        print(json.dumps({**info.to_json(), "started": started}))
        return
    what = "started" if started else "already running"
    console.print(f"Kafka {info.kafka_version} cluster of {info.size} nodes {what}: [bold]{info.bootstrap}[/]")
    for node_id, node in sorted(info.nodes.items()):
        console.print(f"  node {node_id}: broker 127.0.0.1:{node.port}, controller 127.0.0.1:{node.controller_port} "
                      f"(pid {node.pid})")
    console.print("  topics get 3 replicas and min.insync.replicas=2" if info.size >= 3 else
                  "  topics get 1 replica (3 nodes are needed for 3 replicas)")


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Download the Kafka jars from Maven Central into the cache (done by `start` when needed)."""
    broker = LocalBroker(Settings())
    try:
        with console.status(f"fetching Apache Kafka {broker.settings.kafka_version} jars from Maven Central..."):
            libs = broker.ensure_jars()
    except BrokerError as exc:
        fail(str(exc))
        return
    console.print(f"Kafka jars ready in {libs}")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the broker (or every node of the cluster) that ``hub broker start`` started, and only that."""
    cluster = LocalCluster(Settings()).stop()
    if cluster is not None:
        console.print(f"stopped the Kafka cluster ({len(cluster.nodes)} running nodes)")
        return
    info = LocalBroker(Settings()).stop()
    console.print(f"stopped the Kafka broker (pid {info.pid})" if info else "no hub broker is running")


@broker_app.command("status")
def broker_status(as_json: JsonOpt = False) -> None:
    """Whether the local broker runs, and its bootstrap address. Exit code 1 if it does not run."""
    cluster = LocalCluster(Settings()).status()
    if cluster is not None:
        if as_json:
            print(json.dumps({"running": True, **cluster.to_json()}))
            return
        console.print(f"running: cluster of {cluster.size} nodes, [bold]{cluster.bootstrap}[/] "
                      f"({len(cluster.nodes)} of {cluster.size} nodes up, Kafka {cluster.kafka_version})")
        for node_id, node in sorted(cluster.nodes.items()):
            console.print(f"  node {node_id}: 127.0.0.1:{node.port} (pid {node.pid})")
        return
    info = LocalBroker(Settings()).status()
    if as_json:
        print(json.dumps({"running": info is not None, **(info.to_json() if info else {})}))
    elif info:
        console.print(f"running: [bold]{info.bootstrap}[/] (pid {info.pid}, Kafka {info.kafka_version})")
        if info.secure:
            console.print(f"  {info.security_protocol} {info.sasl_mechanism}, ACLs enforced; hub principal "
                          f"[bold]{info.admin_username}[/], password in {info.admin_password_file}")
    else:
        console.print("not running")
    if info is None:
        raise typer.Exit(1)


# ---------------- up / worker / status ----------------
def resolve_bootstrap(
    settings: Settings, *, start_owned: bool,
) -> tuple[str, LocalBroker | LocalCluster | None, Settings]:
    """--bootstrap / HUB_BOOTSTRAP, else a running ``hub broker start`` broker, else (if asked) our own.

    A running secure local broker (``hub broker start --secure``) is joined as its privileged ``hub`` user,
    unless Kafka credentials are set explicitly.
    """
    if settings.bootstrap:
        return settings.bootstrap, None, settings
    cluster = LocalCluster(settings)
    running_cluster = cluster.status()
    if running_cluster is not None:
        return running_cluster.bootstrap, None, settings
    if start_owned and settings.broker_nodes > 1:
        with console.status(f"starting a {settings.broker_nodes}-node Kafka cluster..."):
            cluster_info, _ = cluster.start(settings.broker_nodes, owned=True)
        return cluster_info.bootstrap, cluster, settings
    broker = LocalBroker(settings)
    running = broker.status()
    if running is not None:
        password = running.admin_password() if running.secure else None
        if password and running.admin_username and settings.kafka_username is None:
            from hub.broker.kafka_config import with_credentials

            settings = with_credentials(settings, running.admin_username, password)
        # a broker this very process started before it restarted itself (hub.worker.service.restart_in_place)
        ours = start_owned and os.environ.get(OWNED_BROKER_ENV) == str(running.pid)
        return running.bootstrap, broker if ours else None, settings
    if not start_owned:
        fail("no Kafka to connect to: give --bootstrap, set HUB_BOOTSTRAP or run `hub broker start`")
    with console.status("starting the Kafka broker (the first run downloads its jars)..."):
        info, _ = broker.start(owned=True)
    os.environ[OWNED_BROKER_ENV] = str(info.pid)
    return info.bootstrap, broker, settings


OWNED_BROKER_ENV = "HUB_OWNED_BROKER_PID"  # not a setting: how `hub up` knows its broker again after a restart


@app.command()
def up(
    bootstrap: BootstrapOpt = None,
    api_port: Annotated[int | None, typer.Option(help="port of the HTTP API (else HUB_API_PORT)")] = None,
) -> None:
    """Everything on one machine: a local Kafka broker (unless --bootstrap), the worker and the HTTP API.

    Ctrl-C or SIGTERM stops it within ``HUB_STOP_TIMEOUT`` seconds whatever the broker's state (exit 0; 75 if
    the deadline cut the stop short). See docs/operations.md."""
    from hub.runtime import ensure_operator_token, run_worker
    from hub.shutdown import install_watchdog

    settings = settings_with(bootstrap=bootstrap, api_port=api_port)
    owned: LocalBroker | None = None
    try:
        dog = install_watchdog(settings.stop_timeout)  # from here on, a signal stops within the deadline
        try:
            address, owned, settings = resolve_bootstrap(settings, start_owned=True)
        except BrokerError as exc:
            fail(str(exc))
            return
        if owned is not None:  # a forced exit must not leave our broker behind (paused, it ignores SIGTERM)
            dog.last_resort.append(owned.kill)
        token_file = ensure_operator_token(settings)
        status = {
            "bootstrap": address, "api": settings.api_url, "metrics": f"{settings.api_url}/metrics",
            "registry": settings.effective_registry_url, "operator_token_file": str(token_file), "pid": _pid(),
        }
        console.print("[bold green]hub up[/]")
        for name, value in status.items():
            if name != "pid":
                console.print(f"  {name:<20} {value}")
        console.print("  Ctrl-C stops everything.")
        run_worker(settings, address, with_api=True, status=status)
    except KeyboardInterrupt:  # a signal while starting: stopped as asked
        raise typer.Exit(0) from None
    finally:
        if owned is not None:
            owned.stop(timeout=_broker_stop_time(settings))
            console.print("stopped the Kafka broker")


def _broker_stop_time(settings: Settings) -> float:
    """What is left of the hard deadline for our broker's stop (SIGKILL after it), at least one second."""
    import time

    from hub.shutdown import time_left, watchdog

    dog = watchdog()
    if dog is None or dog.first_signal_at is None:
        return 30.0  # not a stop on a signal (the start failed): the broker's usual grace
    return max(1.0, time_left(dog.first_signal_at + settings.stop_timeout - 0.5, time.monotonic()))


@app.command()
def worker(
    bootstrap: BootstrapOpt = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics on this port")] = None,
) -> None:
    """One exchange worker; run several (same HUB_APP_ID) to share the work of one consumer group.

    Ctrl-C or SIGTERM stops it within ``HUB_STOP_TIMEOUT`` seconds (exit 0; 75 if the deadline cut it short)."""
    from hub.runtime import run_worker
    from hub.shutdown import install_watchdog

    settings = settings_with(bootstrap=bootstrap, worker_metrics_port=metrics_port)
    try:
        install_watchdog(settings.stop_timeout)
        address, _, settings = resolve_bootstrap(settings, start_owned=False)
        run_worker(settings, address, with_api=False, metrics_port=settings.worker_metrics_port)
    except KeyboardInterrupt:  # a signal while starting: stopped as asked
        raise typer.Exit(0) from None


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Endpoints of the running hub (bootstrap, api, metrics, operator_token_file). Exit 1 if none runs."""
    from hub.runtime import status_file

    settings = Settings()
    path = status_file(settings)
    data = json.loads(path.read_text()) if path.exists() else None
    if data is not None and not _alive(int(data.get("pid", 0))):
        data = None
    if as_json:
        print(json.dumps(data or {"running": False}))
    elif data:
        for name, value in data.items():
            console.print(f"{name:<20} {value}")
    else:
        console.print("the hub is not running (start it with `hub up`)")
    if data is None:
        raise typer.Exit(1)


@app.command()
def demo(
    bootstrap: BootstrapOpt = None,
    records: Annotated[int, typer.Option(help="records each department publishes")] = 200,
    api_port: Annotated[int | None, typer.Option(help="port of the HTTP API")] = None,
) -> None:
    """A small simulated city on top of `hub up`: departments publish, districts receive; counts at the end."""
    from hub.demo.run import run_demo

    settings = settings_with(bootstrap=bootstrap, api_port=api_port)
    code = run_demo(settings, records_per_department=records, console=console)
    raise typer.Exit(code)


app.command("stats")(stats_command)
app.command("top")(top_command)


def _pid() -> int:
    import os

    return os.getpid()


def _alive(pid: int) -> bool:
    return pid > 0 and Path(f"/proc/{pid}").exists()


def main() -> None:
    try:
        app()
    except BrokerError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
