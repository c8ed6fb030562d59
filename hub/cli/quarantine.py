"""``hub quarantine list --node X``: a provider's rejected records with every reason, and which were fixed since.

Reads ``quarantine.<node>`` directly from Kafka, as ``hub subscribe`` reads ``feed.<node>`` (the broker's ACLs let
a node read its own quarantine topic; the connection uses the same settings and credentials). Whether a rejected
record was fixed is decided by ``hub.quality.resolution``: a later ``publish`` audit of the same node with the
same event id, or the same resource and record key. That needs read access to ``hub.audit`` (the operator's, as
``hub audit``): without it every entry's status is shown as unknown, and the rejects are listed all the same.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hub.calls.client import jsonable
from hub.cli.exchange import NodeOpt, _endpoints, _fail
from hub.contract import AUDIT_TOPIC, quarantine_topic
from hub.quality.resolution import epoch_ms, resolutions
from hub.registry.client import RegistryClient
from hub.settings import Settings
from hub.stats.reader import TopicMissing, new_consumer, partitions_of, read_audit

quarantine_app = typer.Typer(help="Records the hub rejected (quarantine.<node>), with every reason.",
                             no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@quarantine_app.command("list")
def list_quarantine(
    node: NodeOpt,
    limit: Annotated[int, typer.Option("--limit", help="show the newest N entries (0: all)")] = 100,
    open_only: Annotated[bool, typer.Option("--open", help="only entries not resolved by a later delivery")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
) -> None:
    """List quarantine.<node>: when, which event and resource, every failed rule with its field and message, and
    whether the fixed record was delivered since (resolved: a later publish with the same event id or record key).
    """
    settings = Settings()
    ends = _endpoints(settings)
    try:
        entries, audit_error = asyncio.run(_collect(settings, ends.bootstrap, ends.registry, node, limit))
    except TopicMissing:
        _fail(f"there is no topic {quarantine_topic(node)}: is {node} a registered node?")
        return
    except KafkaError as exc:
        _fail(f"cannot read {quarantine_topic(node)}: {exc}", 2)
        return
    if open_only:
        entries = [e for e in entries if e["status"] != "resolved"]
    if as_json:
        print(json.dumps({"node": node, "entries": entries, "resolution_error": audit_error}, ensure_ascii=False))
        return
    console.print(quarantine_table(node, entries))
    if audit_error:
        err.print(f"[yellow]resolution unknown:[/] cannot read {AUDIT_TOPIC} ({audit_error})")


async def _collect(settings: Settings, bootstrap: str, registry_url: str, node: str, limit: int) -> tuple[
    list[dict[str, Any]], str | None
]:
    registry = RegistryClient(registry_url)
    consumer = new_consumer(settings, bootstrap)
    await consumer.start()
    try:
        records = await _read_topic(consumer, registry, settings, bootstrap, quarantine_topic(node))
        records.sort(key=lambda r: epoch_ms(r["ts"]))
        if limit:
            records = records[-limit:]
        audit_error = None
        publishes: list[dict[str, Any]] = []
        if records:
            try:
                publishes = await _publishes_since(consumer, registry, settings, bootstrap, node,
                                                   min(epoch_ms(r["ts"]) for r in records))
            except (KafkaError, TopicMissing) as exc:
                audit_error = str(exc) or type(exc).__name__
        found = resolutions(records, publishes) if audit_error is None else [None] * len(records)
        return [entry(r, f, audit_error is None) for r, f in zip(records, found, strict=True)], audit_error
    finally:
        await consumer.stop()
        await registry.aclose()


async def _read_topic(consumer: Any, registry: RegistryClient, settings: Settings, bootstrap: str,
                      topic: str, since_ms: int | None = None) -> list[dict[str, Any]]:
    """Every decodable record of ``topic`` now (from ``since_ms`` if given), up to its end when called."""
    out: list[dict[str, Any]] = []
    for p in await partitions_of(settings, bootstrap, topic):
        tp = TopicPartition(topic, p)
        consumer.assign([tp])
        stop = (await consumer.end_offsets([tp]))[tp]
        start = (await consumer.beginning_offsets([tp]))[tp]
        if since_ms is not None:
            at = (await consumer.offsets_for_times({tp: since_ms}))[tp]
            start = at.offset if at is not None else stop
        await read_audit(consumer, registry, tp, start, stop,
                         lambda offset, record, error: out.append(record) if record is not None else None)
    return out


async def _publishes_since(consumer: Any, registry: RegistryClient, settings: Settings, bootstrap: str, node: str,
                           since_ms: int) -> list[dict[str, Any]]:
    """The node's publish audit records written at or after ``since_ms`` (all audit partitions)."""
    audits = await _read_topic(consumer, registry, settings, bootstrap, AUDIT_TOPIC, since_ms)
    return [a for a in audits if a.get("action") == "publish" and a.get("actor") == node]


def entry(record: dict[str, Any], fixed: dict[str, Any] | None, known: bool) -> dict[str, Any]:
    """One quarantine entry as shown: every reason, and its status (open, resolved, unknown)."""
    violations = record.get("violations") or []
    reasons = [{"rule": v["rule"], "field": v["field"], "message": v["message"]} for v in violations] or [
        {"rule": record["rule"], "field": None, "message": record["reason"]}]
    return {
        "ts": datetime.fromtimestamp(epoch_ms(record["ts"]) / 1000, UTC).isoformat(),
        "event_id": record["event_id"], "resource": record.get("resource"), "record_key": record.get("record_key"),
        "source": f"{record['topic']}/{record['partition']}/{record['offset']}",
        "rule": record["rule"], "reasons": jsonable(reasons),
        "status": "unknown" if not known else "resolved" if fixed is not None else "open",
        "resolved_by": None if fixed is None else {
            "event_id": fixed["event_id"], "ts": datetime.fromtimestamp(epoch_ms(fixed["ts"]) / 1000, UTC).isoformat(),
            "source": fixed.get("source")},
    }


def quarantine_table(node: str, entries: list[dict[str, Any]]) -> Table:
    table = Table(title=f"quarantine.{node}: {len(entries)} rejected record(s)", title_justify="left",
                  show_lines=True)
    for name in ("when (UTC)", "event id", "resource / key", "reasons", "status"):
        table.add_column(name, overflow="fold")
    for e in entries:
        # everything but the styling is a producer's data (ids, fields, messages quoting values): escaped
        reasons = "\n".join(f"[bold]{escape(r['rule'])}[/] {escape(r['field'] or '')}: {escape(r['message'])}"
                            .replace(" :", ":") for r in e["reasons"])
        status = {"open": "[red]open[/]", "unknown": "[yellow]unknown[/]"}.get(e["status"], "")
        if e["status"] == "resolved":
            status = f"[green]resolved[/] by {escape(e['resolved_by']['event_id'])} at {e['resolved_by']['ts'][:19]}"
        table.add_row(e["ts"][:19], Text(e["event_id"]),
                      Text(f"{e['resource'] or '-'}\n{e['record_key'] or ''}".strip()), reasons, status)
    return table
