"""``hub audit``: verify the tamper-evident audit log (``hub.audit``) from the terminal.

``hub audit verify`` exits 0 when every partition's hash chain holds, 1 when one is broken (printing the
partition, offset and kind of the first broken link), 2 when it could not verify (no broker or registry,
no such topic, a keyed chain without its key).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hub.broker.topics import AUDIT_TOPIC
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.audit.verify import AuditVerification

audit_app = typer.Typer(help="The tamper-evident audit log (hub.audit): verify its hash chains.",
                        no_args_is_help=True)

console = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_BROKEN, EXIT_ERROR = 0, 1, 2


@audit_app.command("verify")
def verify(
    bootstrap: Annotated[str | None, typer.Option(
        "--bootstrap", help="host:port of the Kafka cluster (else HUB_BOOTSTRAP, else the local broker)")] = None,
    topic: Annotated[str, typer.Option(help="the audit topic to verify")] = AUDIT_TOPIC,
    registry: Annotated[str | None, typer.Option(
        help="schema registry URL (else HUB_REGISTRY_URL, else the hub's API)")] = None,
    require_start: Annotated[bool, typer.Option(
        "--require-start", help="fail if a partition's first records are gone (for a topic kept forever)")] = False,
    no_anchors: Annotated[bool, typer.Option(
        "--no-anchors", help="do not check the heads the previous verification saw (e.g. after a reset)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
) -> None:
    """Stream every partition of the audit log, check its hash chain and report the first broken link.

    Changed, removed, reordered and inserted records are each reported with their partition and offset.
    With HUB_AUDIT_HMAC_KEY set, the chain is checked with that key. The result is saved under the state
    directory for hub_audit_chain_ok.
    """
    from aiokafka.errors import KafkaError

    from hub.audit.verify import (
        AuditTopicMissing,
        VerificationStalled,
        latest_verification,
        save_verification,
        verify_topic,
    )
    from hub.registry.client import RegistryClientError

    settings = Settings(bootstrap=bootstrap) if bootstrap else Settings()
    address = _bootstrap(settings)
    previous = None if no_anchors else latest_verification(settings, topic)
    progress = Progress(
        TextColumn(f"verifying {topic}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=as_json or not err.is_terminal,
    )
    task = progress.add_task("records", total=None)
    try:
        with progress:
            result = asyncio.run(verify_topic(
                settings, address, topic, registry_url=registry, key=settings.audit_key,
                anchors=previous.anchors if previous else None, require_start=require_start,
                on_total=lambda n: progress.update(task, total=n),
                on_progress=lambda n: progress.advance(task, n),
            ))
    except AuditTopicMissing as exc:
        _fail(str(exc))
    except (KafkaError, VerificationStalled, RegistryClientError, OSError) as exc:
        _fail(f"could not read {topic}: {exc}")
    save_verification(settings, result)
    if as_json:
        print(json.dumps(result.to_json()))
    else:
        _print(result)
    first = result.first_break
    if first is not None and first[1].kind == "unverifiable":
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_BROKEN)


def _bootstrap(settings: Settings) -> str:
    if settings.bootstrap:
        return settings.bootstrap
    from hub.broker.manager import LocalBroker

    running = LocalBroker(settings).status()
    if running is None:
        _fail("no Kafka to connect to: give --bootstrap, set HUB_BOOTSTRAP or run `hub broker start`")
    return running.bootstrap


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(EXIT_ERROR)


def _print(result: AuditVerification) -> None:
    table = Table(title=f"{result.topic}: {result.records:,} records in {result.duration_s:.1f} s"
                  + (" (HMAC-keyed)" if result.keyed else ""))
    for name in ("partition", "offsets", "records", "checkpoints", "head seq", "status"):
        table.add_column(name, justify="right" if name != "status" else "left")
    for p in result.partitions:
        r = p.result
        offsets = f"{p.start_offset}-{p.end_offset - 1}" if p.end_offset > p.start_offset else "empty"
        brk = r.first_break
        status = "[green]ok[/]" if brk is None else f"[bold red]{brk.kind}[/] at offset {brk.offset}"
        table.add_row(str(p.partition), offsets, f"{r.count:,}", str(r.checkpoints),
                      "-" if r.head_seq is None else str(r.head_seq), status)
    console.print(table)
    first = result.first_break
    if first is None:
        console.print(f"[bold green]verified[/]: every partition of {result.topic} holds its hash chain")
    else:
        partition, brk = first
        console.print(f"[bold red]BROKEN[/] partition {partition} offset {brk.offset}: {brk.kind} - {brk.message}")
        for p in result.partitions:
            b = p.result.first_break
            if b is not None and p.partition != partition:
                console.print(f"  also partition {p.partition} offset {b.offset}: {b.kind} - {b.message}")
