"""``hub audit``: verify the tamper-evident audit log (``hub.audit``) from the terminal.

``hub audit verify`` checks ``hub.audit`` and the API's control audit log ``hub.audit.control`` (or the
``--topic`` given, repeatable) and exits 0 when every partition's hash chain holds, 1 when one is broken (printing the
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
    topic: Annotated[list[str] | None, typer.Option(
        "--topic", help="an audit topic to verify (repeatable); default: hub.audit and the control audit log "
        "hub.audit.control")] = None,
    registry: Annotated[str | None, typer.Option(
        help="schema registry URL (else HUB_REGISTRY_URL, else the hub's API)")] = None,
    require_start: Annotated[bool, typer.Option(
        "--require-start", help="fail if a partition's first records are gone (for a topic kept forever)")] = False,
    no_anchors: Annotated[bool, typer.Option(
        "--no-anchors", help="do not check the heads the previous verification saw (e.g. after a reset)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
) -> None:
    """Stream every partition of the audit logs, check their hash chains and report the first broken link.

    By default both logs are verified: hub.audit (the workers') and hub.audit.control (the API's: grants,
    failed authentications, control changes). Changed, removed, reordered and inserted records are each
    reported with their partition and offset. With HUB_AUDIT_HMAC_KEY set, the chains are checked with that
    key. Each topic's result is saved under the state directory (hub_audit_chain_ok reads hub.audit's). With
    one topic, --json prints its result; with several, {"ok": ..., "topics": [...]}.
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
    explicit = bool(topic)
    topics = list(dict.fromkeys(topic or [AUDIT_TOPIC, settings.control_audit_topic]))
    results = []
    for name in topics:
        previous = None if no_anchors else latest_verification(settings, name)
        progress = Progress(
            TextColumn(f"verifying {name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=err, transient=True, disable=as_json or not err.is_terminal,
        )
        task = progress.add_task("records", total=None)
        try:
            with progress:
                result = asyncio.run(verify_topic(
                    settings, address, name, registry_url=registry, key=settings.audit_key,
                    anchors=previous.anchors if previous else None, require_start=require_start,
                    on_total=lambda n, task=task, progress=progress: progress.update(task, total=n),
                    on_progress=lambda n, task=task, progress=progress: progress.advance(task, n),
                ))
        except AuditTopicMissing as exc:
            # the control log of a hub whose API never ran is not there yet; once verified, it must stay
            if not explicit and name != AUDIT_TOPIC and previous is None:
                err.print(f"[dim]{name} does not exist yet (no control-plane act audited): skipped[/]")
                continue
            _fail(str(exc))
        except (KafkaError, VerificationStalled, RegistryClientError, OSError) as exc:
            _fail(f"could not read {name}: {exc}")
        save_verification(settings, result)
        results.append(result)
    if as_json:
        if len(topics) == 1:
            print(json.dumps(results[0].to_json()))
        else:
            print(json.dumps({"ok": all(r.ok for r in results), "topics": [r.to_json() for r in results]}))
    else:
        for result in results:
            _print(result)
    codes = [EXIT_OK if r.ok else EXIT_BROKEN for r in results]
    codes += [EXIT_ERROR for r in results if r.first_break is not None and r.first_break[1].kind == "unverifiable"]
    raise typer.Exit(max(codes, default=EXIT_OK))


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
