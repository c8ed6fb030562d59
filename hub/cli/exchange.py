"""``hub publish``, ``hub subscribe``, ``hub call``: a node's side of the exchange from the terminal.

Kafka is ``HUB_BOOTSTRAP``, else the running hub's (``hub status``), else ``hub broker start``'s broker; the
registry is ``HUB_REGISTRY_URL``, else the running hub's API. Registry writes and catalogue reads present
``--token``, else ``HUB_TOKEN``, else the operator token file. Records are Confluent-framed Avro, exactly what
any Kafka client with a Confluent serializer would produce and read.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from aiokafka import TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub.broker.clients import describe_partitions, make_consumer, make_producer
from hub.calls.client import CallClient, Endpoints, endpoints, jsonable, read_json_lines, to_avro
from hub.contract import H_EVENT_ID, H_FLAG, H_OBJECTION, H_RESOURCE, H_SCENARIO, feed_topic, ingress_topic
from hub.control.tokens import process_token
from hub.registry import framing
from hub.registry.client import RegistryClient, RegistryClientError
from hub.settings import Settings

console = Console()
err = Console(stderr=True)

NodeOpt = Annotated[str, typer.Option("--node", help="the node acting (its own topics: ingress.<node>, feed.<node>, "
                                                     "call.<node>.*)")]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="node or operator token (else HUB_TOKEN, else the operator token file)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _endpoints(settings: Settings) -> Endpoints:
    try:
        return endpoints(settings)
    except RuntimeError as exc:
        _fail(str(exc), 2)
        raise  # unreachable


# ------------------------------------------------------------------------------------------------ publish


def _catalogue_entry(api: str, token: str | None, resource: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{api.rstrip('/')}/v1/resources/{quote(resource, safe='')}", headers=headers,
                             timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the hub API at {api} ({exc}); is `hub up` running?", 2)
    if response.status_code == 404:
        _fail(f"resource {resource} is not in the catalogue (`hub catalog list`)")
    if not response.is_success:
        try:
            message = response.json().get("message")
        except ValueError:
            message = response.text[:300]
        _fail(f"the catalogue answered {response.status_code}: {message}")
    return dict(response.json())


def publish(
    node: NodeOpt,
    resource: Annotated[str, typer.Option("--resource", help="catalogued resource id (provided by --node)")],
    file: Annotated[Path | None, typer.Option("--file", help="JSON-lines file, one record a line")] = None,
    record_json: Annotated[str | None, typer.Option("--json", help="one record (or a list of them) as JSON")] = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="register this .avsc under the resource's "
                                                                "subject first (needs the provider's token)")] = None,
    event_id: Annotated[str | None, typer.Option("--event-id", help="hub-event-id of a single record "
                                                                    "(default: a fresh UUID per record)")] = None,
    objection: Annotated[str | None, typer.Option(
        "--objection", help="publish a correction answering this flagged objection (hub-objection header)")] = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json-output", help="print the result (topic, schema id, event ids) "
                                                               "as JSON")] = False,
) -> None:
    """Publish records of one resource to ingress.<node>: Confluent-framed Avro with its registered schema."""
    if (file is None) == (record_json is None):
        _fail("give --file F.jsonl or --json '{...}' (one of them)")
    settings = Settings()
    ends = _endpoints(settings)
    secret = process_token(settings, token)
    try:
        if file is not None:
            records = read_json_lines(file)
        else:
            parsed = json.loads(record_json or "")
            records = parsed if isinstance(parsed, list) else [parsed]
            if not all(isinstance(r, dict) for r in records):
                raise ValueError("a record must be a JSON object")
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the records: {exc}")
    if event_id is not None and len(records) != 1:
        _fail("--event-id names the event of a single record")
    entry = _catalogue_entry(ends.registry, secret, resource)
    if entry.get("provider") != node:
        _fail(f"{resource} is provided by {entry.get('provider')}, not {node}: a node publishes only its own resources")
    result = asyncio.run(_publish(settings, ends, secret, node, entry, records, schema, event_id, not as_json,
                                  objection))
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        console.print(f"published [bold]{result['published']}[/] record(s) of {resource} to "
                      f"{result['topic']} (schema id {result['schema_id']})")


async def _publish(
    settings: Settings, ends: Endpoints, token: str | None, node: str, entry: dict[str, Any],
    records: list[dict[str, Any]], schema_file: Path | None, event_id: str | None, progress: bool,
    objection: str | None = None,
) -> dict[str, Any]:
    subject = entry["subject"]
    registry = RegistryClient(ends.registry, token=token)
    try:
        if schema_file is not None:
            schema_id = await registry.register(subject, json.dumps(json.loads(schema_file.read_text("utf-8"))))
            schema = await registry.schema_by_id(schema_id)
            text = schema.schema_str
        else:
            schema_id, _, text = await registry.latest(subject)
    except (RegistryClientError, OSError, ValueError) as exc:
        _fail(f"schema of {subject}: {exc}")
    finally:
        await registry.aclose()
    avro = json.loads(text)
    parsed = framing.parse_schema(avro)
    pk = list(entry.get("primary_key") or [])
    encoded: list[tuple[bytes | None, bytes, str]] = []
    for n, record in enumerate(records, 1):
        try:
            value = to_avro(record, avro)
            data = framing.encode(schema_id, parsed, value)
        except Exception as exc:  # fastavro says which field does not fit
            _fail(f"record {n} does not fit {subject} (schema id {schema_id}): {exc}")
        key = "|".join(str(record.get(f)) for f in pk).encode() if pk else None
        encoded.append((key, data, event_id or str(uuid.uuid4())))
    topic = ingress_topic(node)
    producer = make_producer(settings, ends.bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        with Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, disable=not progress or len(encoded) < 2, transient=True) as bar:
            task = bar.add_task("publish", total=len(encoded))
            for key, data, eid in encoded:
                headers = [(H_RESOURCE, entry["id"].encode()), (H_EVENT_ID, eid.encode())]
                if objection:
                    headers.append((H_OBJECTION, objection.encode()))
                fut = await producer.send(topic, data, key=key, headers=headers)
                fut.add_done_callback(lambda _: bar.advance(task))
                futures.append(fut)
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {"topic": topic, "resource": entry["id"], "subject": subject, "schema_id": schema_id,
            "published": len(encoded), "event_ids": [eid for _, _, eid in encoded]}


# ------------------------------------------------------------------------------------------------ subscribe


def subscribe(
    node: NodeOpt,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="from the feed's first record")] = False,
    max_records: Annotated[int | None, typer.Option("--max", help="stop after this many records")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="stop after this many seconds without a "
                                                                    "record (default: run until Ctrl-C)")] = None,
    group: Annotated[str | None, typer.Option("--group", help="consumer group (<node>.<name>): resume where it "
                                                             "stopped, offsets committed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines: topic, partition, offset, key, headers, "
                                                        "schema_id, record")] = False,
) -> None:
    """Read feed.<node>: each record decoded with the registry, printed as a table row or a JSON line."""
    if group is not None and not group.startswith(f"{node}."):
        _fail(f"a consumer group of {node} starts with '{node}.' (its ACLs allow only those)")
    settings = Settings()
    ends = _endpoints(settings)
    try:
        count = asyncio.run(_subscribe(settings, ends, node, from_beginning, max_records, timeout, group, as_json))
    except KeyboardInterrupt:
        return
    if not as_json:
        err.print(f"{count} record(s)")


async def _subscribe(
    settings: Settings, ends: Endpoints, node: str, from_beginning: bool, max_records: int | None,
    timeout: float | None, group: str | None, as_json: bool,
) -> int:
    topic = feed_topic(node)
    consumer = make_consumer(
        settings, ends.bootstrap, group_id=group, enable_auto_commit=group is not None,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    registry = RegistryClient(ends.registry)
    await consumer.start()
    count = 0
    try:
        if group is not None:
            consumer.subscribe([topic])
        else:
            error, partitions = await describe_partitions(settings, ends.bootstrap, topic)  # never creates it
            if error or not partitions:
                _fail(f"there is no topic {topic}: is {node} a registered node?")
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            if from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
        quiet_since = time.monotonic()
        while max_records is None or count < max_records:
            batch = await consumer.getmany(timeout_ms=500)
            msgs = sorted((m for ms in batch.values() for m in ms), key=lambda m: (m.timestamp, m.partition))
            if not msgs:
                if timeout is not None and time.monotonic() - quiet_since > timeout:
                    break
                continue
            quiet_since = time.monotonic()
            if max_records is not None:
                msgs = msgs[: max_records - count]
            rows = [await _decoded(registry, m) for m in msgs]
            count += len(rows)
            if as_json:
                for row in rows:
                    print(json.dumps(row, ensure_ascii=False), flush=True)
            else:
                console.print(_feed_table(rows))
    finally:
        await consumer.stop()
        await registry.aclose()
    return count


async def _decoded(registry: RegistryClient, msg: Any) -> dict[str, Any]:
    headers = {k: (v or b"").decode("utf-8", errors="replace") for k, v in msg.headers or ()}
    row: dict[str, Any] = {
        "topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
        "key": msg.key.decode("utf-8", errors="replace") if msg.key is not None else None, "headers": headers,
        "schema_id": None, "record": None,
    }
    try:
        schema_id, body = framing.split(msg.value)
        row["schema_id"] = schema_id
        schema = await registry.schema_by_id(schema_id)
        row["record"] = jsonable(framing.decode_body(body, schema.parsed))
    except (ValueError, RegistryClientError) as exc:
        row["error"] = str(exc)
    return row


def _feed_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(show_header=True, header_style="bold", expand=False)
    for name in ("offset", "resource", "event id", "scenario", "flag", "record"):
        table.add_column(name, overflow="fold")
    for row in rows:
        h = row["headers"]
        record = row["record"]
        shown = json.dumps(record, ensure_ascii=False) if record is not None else f"[red]{row.get('error')}[/]"
        table.add_row(f"{row['partition']}/{row['offset']}", h.get(H_RESOURCE, ""), h.get(H_EVENT_ID, ""),
                      h.get(H_SCENARIO, ""), h.get(H_FLAG, ""), shown)
    return table


# ------------------------------------------------------------------------------------------------ call


def call(
    node: NodeOpt,
    resource: Annotated[str, typer.Option("--resource", help="catalogued resource id")],
    scenario: Annotated[str | None, typer.Option("--scenario", help="the application scenario of the call")] = None,
    key: Annotated[str | None, typer.Option("--key", help="primary key value (composite: a JSON array)")] = None,
    field_name: Annotated[str | None, typer.Option("--field", help="look up by this field (the primary key or an "
                                                                   "indexed identifier field) ...")] = None,
    value: Annotated[str | None, typer.Option("--value", help="... having this value")] = None,
    fields: Annotated[str | None, typer.Option("--fields", help="comma-separated fields wanted (default: all the "
                                                                "grant allows)")] = None,
    grant: Annotated[str | None, typer.Option("--grant", help="the grant to call under (default: hub picks)")] = None,
    wait: Annotated[float, typer.Option("--timeout", help="seconds to wait for the reply")] = 30.0,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Call for one record: a CallRequest on call.<node>.request, its CallReply from call.<node>.reply.

    Exit code 0 when the status is ok, 1 for any other status, 2 when no reply came (or no hub to ask).
    """
    if key is None and (field_name is None or value is None):
        _fail("give --key K, or --field F --value V")
    settings = Settings()
    ends = _endpoints(settings)
    wanted = tuple(f.strip() for f in fields.split(",") if f.strip()) if fields else ()

    async def run() -> Any:
        registry = RegistryClient(ends.registry, token=process_token(settings, token))
        try:
            async with CallClient(ends.bootstrap, registry, node, settings) as client:
                return await client.call(resource, scenario=scenario, key=key, field_name=field_name, value=value,
                                         fields=wanted, grant=grant, timeout=wait)
        finally:
            await registry.aclose()

    try:
        result = asyncio.run(run())
    except TimeoutError:
        _fail(f"no reply on call.{node}.reply within {wait:.0f}s: is the hub running?", 2)
    except RegistryClientError as exc:
        _fail(f"registry: {exc}", 2)
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        _print_reply(result)
    raise typer.Exit(0 if result.status == "ok" else 1)


def _print_reply(result: Any) -> None:
    reply = result.reply
    colour = "green" if reply["status"] == "ok" else "yellow" if reply["status"] == "not_found" else "red"
    console.print(f"[bold {colour}]{reply['status']}[/] {reply['message']}".rstrip()
                  + f"  ({result.latency_s * 1000:.1f} ms)")
    if reply.get("grant"):
        console.print(f"grant {reply['grant']}, scenario {reply.get('scenario')}, schema id {reply.get('schema_id')}")
    if result.record is not None:
        table = Table(show_header=True, header_style="bold")
        table.add_column("field")
        table.add_column("value", overflow="fold")
        masked = set(reply.get("masked_fields") or ())
        for name, val in jsonable(result.record).items():
            table.add_row(name + (" [dim](masked)[/]" if name in masked else ""), json.dumps(val, ensure_ascii=False))
        console.print(table)
    if reply.get("masked_fields"):
        console.print(f"masked or dropped for you: {', '.join(reply['masked_fields'])}", style="dim")

