"""``hub audit``: verify the tamper-evident audit log (``hub.audit``) and reconcile the counts with it.

``hub audit verify`` checks ``hub.audit`` and the API's control audit log ``hub.audit.control`` (or the
``--topic`` given, repeatable) and exits 0 when every partition's hash chain holds, 1 when one is broken (printing the
partition, offset and kind of the first broken link), 2 when it could not verify (no broker or registry,
no such topic, a keyed chain without its key).

``hub audit reconcile`` recounts every counter from the audit log and compares it with the durable counts
(``hub.counts``): exit 0 equal, 1 differences or duplicates (with a table of them), 2 could not reconcile.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hub.contract import AUDIT_TOPIC, COUNTS_TOPIC
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.audit.reconcile import Reconciliation
    from hub.audit.verify import AuditVerification

audit_app = typer.Typer(help="The tamper-evident audit log (hub.audit): verify its hash chains, reconcile the "
                        "counts with it.", no_args_is_help=True)

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


@audit_app.command("reconcile")
def reconcile(
    bootstrap: Annotated[str | None, typer.Option(
        "--bootstrap", help="host:port of the Kafka cluster (else HUB_BOOTSTRAP, else the local broker)")] = None,
    registry: Annotated[str | None, typer.Option(
        help="schema registry URL (else HUB_REGISTRY_URL, else the hub's API)")] = None,
    topic: Annotated[str, typer.Option(help="the audit topic")] = AUDIT_TOPIC,
    counts_topic: Annotated[str, typer.Option("--counts-topic", help="the count snapshots topic")] = COUNTS_TOPIC,
    wait: Annotated[float, typer.Option(
        help="seconds to wait for count snapshots covering the log as it is now (0: compare what is covered)")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
) -> None:
    """Recount every counter from the audit log and compare it with the hub's durable counts (hub.counts).

    Each partition's current count snapshot is read first; the audit records below the offset it covers are
    recounted (checkpoints skipped, each audit id once, duplicates reported) and compared key by key (day,
    action, tiers, direction, resource, decision, reason). Exit 0: equal; 1: differences or duplicates;
    2: could not reconcile.
    """
    from aiokafka.errors import KafkaError

    from hub.audit.reconcile import reconcile as run_reconcile
    from hub.registry.client import RegistryClientError
    from hub.stats.reader import ReadStalled, TopicMissing

    settings = Settings(bootstrap=bootstrap) if bootstrap else Settings()
    address = _bootstrap(settings)
    progress = Progress(
        TextColumn(f"recounting {topic}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=as_json or not err.is_terminal,
    )
    task = progress.add_task("records", total=None)
    try:
        with progress:
            result = asyncio.run(run_reconcile(
                settings, address, registry_url=registry, audit_topic=topic, counts_topic=counts_topic, wait=wait,
                on_total=lambda n: progress.update(task, total=n), on_progress=lambda n: progress.advance(task, n),
            ))
    except TopicMissing as exc:
        _fail(str(exc))
    except (KafkaError, ReadStalled, RegistryClientError, OSError) as exc:
        _fail(f"could not read {topic}: {exc}")
    if as_json:
        print(json.dumps(result.to_json()))
    else:
        _print_reconciliation(result)
    raise typer.Exit(result.exit_code)


def _print_reconciliation(result: Reconciliation) -> None:
    table = Table(title=f"{result.audit_topic} recounted against {result.counts_topic} "
                  f"in {result.duration_s:.1f} s")
    for name in ("partition", "audit log", "counts cover", "recounted", "checkpoints", "newer (not compared)"):
        table.add_column(name, justify="right")
    for p in result.partitions:
        log = f"{p.log_start}-{p.log_end - 1}" if p.log_end > p.log_start else "empty"
        cover = "no snapshot" if p.snapshot_offset is None else f"< {p.snapshot_offset}"
        table.add_row(str(p.partition), log, cover, f"{p.recounted_records:,}", f"{p.checkpoints:,}",
                      f"{p.uncovered:,}")
    console.print(table)
    if result.differences:
        diff = Table(title=f"{len(result.differences)} difference(s)")
        for name in ("partition", "day", "action", "tiers", "direction", "resource", "decision/reason", "counted",
                     "audit log", "diff"):
            diff.add_column(name, justify="right" if name in ("partition", "counted", "audit log", "diff") else "left")
        for d in result.differences[:200]:
            day, action, from_tier, to_tier, direction, resource, decision, reason = d.key
            diff.add_row(str(d.partition), day, action, f"{from_tier}>{to_tier}", direction or "-", resource or "-",
                         f"{decision}/{reason}", f"{d.counted:,}", f"{d.recounted:,}", f"{d.counted - d.recounted:+,}")
        console.print(diff)
        if len(result.differences) > 200:
            console.print(f"... and {len(result.differences) - 200} more (--json lists all)")
    if result.duplicate_count:
        console.print(f"[bold red]{result.duplicate_count} duplicate audit record(s)[/] (counted once):")
        for d in result.duplicates[:20]:
            console.print(f"  partition {d.partition} offset {d.offset}: {d.node} {d.audit_id}")
    for u in result.undecodable[:20]:
        console.print(f"[bold red]undecodable[/] partition {u.partition} offset {u.offset}: {u.error}")
    for line in result.missing + result.unverifiable:
        console.print(f"[bold red]{line}[/]")
    if result.equal:
        console.print(f"[bold green]equal[/]: {result.counted_total:,} counted events, every counter recomputed "
                      "from the audit log matches")
    else:
        console.print(f"[bold red]{result.status.upper()}[/]: counters {result.counted_total:,}, "
                      f"audit log {result.recounted_total:,}")
