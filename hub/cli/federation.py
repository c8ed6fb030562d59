"""``hub federation start|stop|status``: MirrorMaker 2 and the gateways linking this hub with other platforms."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hub.broker.manager import BrokerError
from hub.federation.model import FederationConfig, load_federation_config
from hub.federation.observe import link_statuses
from hub.federation.processes import MM2_VERSION, Gateway, MirrorMaker
from hub.settings import Settings

federation_app = typer.Typer(
    help=f"Federation with other platforms' hubs through Apache Kafka MirrorMaker 2 ({MM2_VERSION}).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option(
    "--config", envvar="HUB_FEDERATION_CONFIG", exists=True, dir_okay=False, resolve_path=True,
    help="the federation file: platforms (bootstrap, API, operator token) and links "
         "(see config/federation.example.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def _load(path: Path) -> FederationConfig:
    try:
        return load_federation_config(path)
    except (ValueError, OSError) as exc:
        err.print(f"[bold red]error:[/] {path}: {exc}")
        raise typer.Exit(1) from exc


@federation_app.command("start")
def start(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Start MirrorMaker 2 (every link, one process) and one gateway per link; already running ones are kept."""
    settings = Settings()
    fed = _load(config)
    try:
        with console.status("starting MirrorMaker 2 (the first run downloads its jars)..."):
            mm2, mm2_new = MirrorMaker(settings, fed).start()
    except BrokerError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    gateways = [(link.name, *Gateway(settings, config, link).start()) for link in fed.links]
    if as_json:
        console.print_json(json.dumps({"mm2": {**mm2.to_json(), "started": mm2_new, "version": MM2_VERSION},
                                       "gateways": [{"link": n, **g.to_json(), "started": s}
                                                    for n, g, s in gateways]}))
        return
    console.print(f"MirrorMaker 2 {MM2_VERSION}: pid {mm2.pid} ({'started' if mm2_new else 'already running'}), "
                  f"log {mm2.log_file}")
    for name, info, started in gateways:
        console.print(f"gateway {name}: pid {info.pid} ({'started' if started else 'already running'}), "
                      f"log {info.log_file}")


@federation_app.command("stop")
def stop(config: ConfigOpt) -> None:
    """Stop the gateways and MirrorMaker 2 that `start` started."""
    settings = Settings()
    fed = _load(config)
    for link in fed.links:
        info = Gateway(settings, config, link).stop()
        console.print(f"gateway {link.name}: {f'stopped pid {info.pid}' if info else 'not running'}")
    info = MirrorMaker(settings, fed).stop()
    console.print(f"MirrorMaker 2: {f'stopped pid {info.pid}' if info else 'not running'}")


@federation_app.command("status")
def status(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """The links (source -> target, topics), their replication lag and last transfer time, and the processes."""
    settings = Settings()
    fed = _load(config)
    mm2 = MirrorMaker(settings, fed).status()
    gateways = {link.name: Gateway(settings, config, link).status() for link in fed.links}
    links = asyncio.run(link_statuses(fed))
    if as_json:
        console.print_json(json.dumps({
            "mm2": mm2.to_json() if mm2 else None, "mm2_version": MM2_VERSION,
            "links": [{**s.to_json(), "gateway_pid": gateways[s.link].pid if gateways[s.link] else None}
                      for s in links]}))
        return
    console.print(f"MirrorMaker 2 {MM2_VERSION}: {f'pid {mm2.pid}' if mm2 else 'not running'}")
    now = time.time() * 1000
    for s in links:  # one line per link: readable at any width, and greppable
        last = (f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s.last_transfer_ms / 1000))} "
                f"({(now - s.last_transfer_ms) / 1000:.1f} s ago)" if s.last_transfer_ms else "never")
        gw = gateways[s.link]
        console.print(f"{s.link}: {s.source_topic} -> {s.target_topic}  lag {s.lag} "
                      f"(source end {s.source_end}, target end {s.target_end})  last transfer {last}  "
                      f"gateway {f'pid {gw.pid}' if gw else 'down'}", soft_wrap=True)
