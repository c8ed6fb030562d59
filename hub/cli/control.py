"""``hub catalog``, ``hub node``, ``hub scenario``: the control plane from the terminal, over the HTTP API.

The API is ``--api`` or ``settings.api_url`` (``HUB_API_HOST``/``HUB_API_PORT``); the token is ``--token``,
else ``HUB_TOKEN``, else the operator token file ``hub up`` wrote (``hub status`` names it). Output is a
table, or JSON with ``--json``; errors print the API's message and exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
import yaml
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub.control.tokens import process_token
from hub.settings import REPO_ROOT, Settings

catalog_app = typer.Typer(help="The resource catalogue: list, show, create, update, retire, import.",
                          no_args_is_help=True)
node_app = typer.Typer(help="Nodes (participants): list, register, show, token, remove.", no_args_is_help=True)
scenario_app = typer.Typer(help="Application scenarios (named purposes with a legal basis): list, create.",
                           no_args_is_help=True)

console = Console()
err = Console(stderr=True)

ApiOpt = Annotated[str | None, typer.Option("--api", help="URL of the hub API (else HUB_API_HOST/HUB_API_PORT)")]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="node or operator token (else HUB_TOKEN, else the operator token file)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HubApi:
    """A small synchronous client of the /v1 control plane (and registry writes) for the CLI."""

    def __init__(self, url: str, token: str | None, timeout: float = 60) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        content = json.dumps(body, ensure_ascii=False, default=str).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self.http.request(method, path, content=content, headers=headers,
                                         params={k: v for k, v in (params or {}).items() if v is not None})
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the hub API at {self.url} ({exc}); is `hub up` running?") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success:
            return data
        message = data.get("message") if isinstance(data, dict) else None
        raise ApiError(response.status_code, f"{response.status_code}: {message or response.text[:300]}")

    def register_schema(self, subject: str, schema_text: str) -> int:
        answer = self.call("POST", f"/subjects/{quote(subject, safe='')}/versions", {"schema": schema_text})
        return int(answer["id"])


@contextmanager
def api_client(api: str | None, token: str | None) -> Iterator[HubApi]:
    settings = Settings()
    client = HubApi(api or settings.api_url, process_token(settings, token))
    try:
        yield client
    except ApiError as exc:
        err.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        client.http.close()


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def item_path(collection: str, item_id: str, *rest: str) -> str:
    """``/v1/<collection>/<id>[/<rest>]``, the id quoted as one path segment."""
    return "/".join([f"/v1/{collection}", quote(item_id, safe=""), *rest])


def request_and_show(
    api: str | None, token: str | None, as_json: bool, method: str, path: str, body: Any = None, *,
    params: dict[str, Any] | None = None, show: Callable[[Any], Any],
) -> Any:
    """One API request (errors print the API's message and exit 1); prints the answer as JSON with ``--json``,
    else ``show(answer)`` (a table or a line of text); returns the answer."""
    with api_client(api, token) as client:
        answer = client.call(method, path, body, params)
    if as_json:
        print_json(answer)
    else:
        console.print(show(answer))
    return answer


def counted(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def rows_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def detail_table(title: str, fields: Iterable[tuple[str, str]]) -> Table:
    """One item as a two-column (field, value) table."""
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in fields:
        table.add_row(key, value)
    return table


def read_document(path: Path) -> Any:
    """A YAML or JSON file ('-': stdin); exits with a message if it cannot be read."""
    try:
        text = typer.get_text_stream("stdin").read() if str(path) == "-" else path.read_text(encoding="utf-8")
        return yaml.safe_load(text)
    except OSError as exc:
        err.print(f"[bold red]error:[/] cannot read {path}: {exc}")
    except yaml.YAMLError as exc:
        err.print(f"[bold red]error:[/] {path} is neither valid YAML nor JSON: {exc}")
    raise typer.Exit(1)


def _schema_path(name: str, base: Path) -> Path | None:
    for root in (base, Path.cwd(), REPO_ROOT):
        candidate = (root / name).resolve()
        if candidate.is_file():
            return candidate
    return None


def register_entry_schema(client: HubApi, entry: dict[str, Any], base: Path) -> None:
    """If an entry names a local ``schema_file``, register it under the entry's subject; drop the key."""
    name = entry.pop("schema_file", None)
    if not name:
        return
    path = _schema_path(str(name), base)
    if path is None:
        raise ApiError(0, f"schema_file {name} not found (looked next to the file, in the current directory, "
                          "and in the hub's repository)")
    try:
        text = json.dumps(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ApiError(0, f"schema_file {path} is not a readable JSON Avro schema: {exc}") from exc
    subject = entry.get("subject") or f"{entry.get('id')}-value"
    try:
        client.register_schema(str(subject), text)
    except ApiError as exc:
        raise ApiError(exc.status, f"registering {path.name} under {subject} failed: {exc.message}") from exc


# ---------------------------------------------------------------- tables

def resources_table(rows: list[dict[str, Any]]) -> Table:
    return rows_table(
        counted(len(rows), "catalogue entry", "catalogue entries"),
        ("id", "title", "provider", "tier", "sharing", "version", "fields"),
        ((r["id"], r["title"], r["provider"], r["tier"], r["sharing"] + (" (retired)" if r.get("retired") else ""),
          str(r["version"]), str(len(r.get("field_levels") or {}))) for r in rows),
    )


def resource_detail(r: dict[str, Any]) -> Table:
    keys = ("title", "provider", "tier", "subject", "sharing", "legal_basis", "primary_key", "locality_field",
            "locality_from_resident_id", "return_to_locality", "report_up", "update_frequency", "description",
            "updated_by", "updated_at")
    levels = r.get("field_levels") or {}
    rules = r.get("quality_rules") or []
    return detail_table(f"{r['id']} (version {r['version']}{', retired' if r.get('retired') else ''})", [
        *((key, _text(r.get(key))) for key in keys),
        ("field_levels", ", ".join(f"{k}={v}" for k, v in levels.items())),
        ("quality_rules", "\n".join(f"{q['field']}: {q['rule']} {q.get('args') or ''}".strip() for q in rules)),
    ])


def _text(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else "" if value is None else str(value)


def nodes_table(rows: list[dict[str, Any]]) -> Table:
    return rows_table(
        counted(len(rows), "node"), ("id", "title", "tier", "clearance", "token", "removed"),
        ((n["id"], n["title"], n["tier"], n["clearance"], n.get("token_id") or "-", "yes" if n.get("removed") else "")
         for n in rows),
    )


def token_text(node: dict[str, Any]) -> str:
    return (f"node [bold]{node['id']}[/] ({node['tier']}, clearance {node['clearance']})\n"
            f"token (shown only now; the hub keeps only its hash):\n[bold]{node['token']}[/]")


# ---------------------------------------------------------------- hub catalog

@catalog_app.command("list")
def catalog_list(
    tier: Annotated[str | None, typer.Option(help="national, municipal, district, region or hub")] = None,
    provider: Annotated[str | None, typer.Option(help="provider node id")] = None,
    sharing: Annotated[str | None, typer.Option(help="unconditional, authorised or none")] = None,
    search: Annotated[str | None, typer.Option("--search", "-q", help="text in id, title or description")] = None,
    retired: Annotated[bool, typer.Option("--retired", help="include retired entries")] = False,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Catalogue entries, filtered by tier, provider, sharing type and text."""
    request_and_show(api, token, as_json, "GET", "/v1/resources", params={
        "tier": tier, "provider": provider, "sharing": sharing, "q": search, "retired": retired or None,
    }, show=resources_table)


@catalog_app.command("show")
def catalog_show(
    resource_id: Annotated[str, typer.Argument(help="resource id, e.g. municipal.health.vaccination")],
    versions: Annotated[bool, typer.Option("--versions", help="every version, oldest first")] = False,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """One catalogue entry (or its history with --versions)."""
    if versions:
        request_and_show(api, token, as_json, "GET", item_path("resources", resource_id, "versions"),
                         show=lambda entries: Group(*map(resource_detail, entries)))
    else:
        request_and_show(api, token, as_json, "GET", item_path("resources", resource_id), show=resource_detail)


@catalog_app.command("create")
def catalog_create(
    file: Annotated[Path, typer.Argument(help="YAML or JSON file holding one entry ('-': stdin)")],
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Catalogue a resource from a file (its schema_file, if named, is registered first)."""
    entry = read_document(file)
    if not isinstance(entry, dict):
        err.print("[bold red]error:[/] the file must hold one catalogue entry (a mapping)")
        raise typer.Exit(1)
    with api_client(api, token) as client:
        register_entry_schema(client, entry, file.parent)
        created = client.call("POST", "/v1/resources", entry)
    if as_json:
        print_json(created)
    else:
        console.print(f"catalogued [bold]{created['id']}[/] (version {created['version']})")


@catalog_app.command("update")
def catalog_update(
    resource_id: Annotated[str, typer.Argument(help="resource id")],
    file: Annotated[Path | None, typer.Option("--file", "-f", help="the full new entry (YAML or JSON)")] = None,
    title: Annotated[str | None, typer.Option(help="new title")] = None,
    sharing: Annotated[str | None, typer.Option(help="unconditional, authorised or none")] = None,
    legal_basis: Annotated[str | None, typer.Option(help="legal basis (needed for sharing none)")] = None,
    description: Annotated[str | None, typer.Option(help="new description")] = None,
    update_frequency: Annotated[str | None, typer.Option(help="realtime, hourly, daily, ...")] = None,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """A new version of an entry: the whole entry from --file, or only the fields given as options."""
    path = item_path("resources", resource_id)
    with api_client(api, token) as client:
        if file is not None:
            entry = read_document(file)
            if not isinstance(entry, dict):
                err.print("[bold red]error:[/] the file must hold one catalogue entry (a mapping)")
                raise typer.Exit(1)
            register_entry_schema(client, entry, file.parent)
            result = client.call("PUT", path, entry)
        else:
            changes = {"title": title, "sharing": sharing, "legal_basis": legal_basis, "description": description,
                       "update_frequency": update_frequency}
            changes = {k: v for k, v in changes.items() if v is not None}
            if not changes:
                err.print("[bold red]error:[/] nothing to change: give --file or at least one field option")
                raise typer.Exit(1)
            result = client.call("PATCH", path, changes)
    if as_json:
        print_json(result)
    elif result.get("changed"):
        console.print(f"updated [bold]{result['id']}[/] to version {result['version']}")
    else:
        console.print(f"[bold]{result['id']}[/] unchanged (version {result['version']})")


@catalog_app.command("retire")
def catalog_retire(
    resource_id: Annotated[str, typer.Argument(help="resource id")],
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Retire an entry: no new grants, no deliveries; its history stays."""
    request_and_show(api, token, as_json, "DELETE", item_path("resources", resource_id),
                     show=lambda r: f"retired [bold]{r['id']}[/] (version {r['version']})")


def _entries_of(document: Any) -> list[Any] | None:
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and isinstance(document.get("resources"), list):
        return document["resources"]
    return None


@catalog_app.command("import")
def catalog_import(
    file: Annotated[Path, typer.Argument(help="YAML or JSON: a list of entries, or {resources: [...]} ('-': stdin)")],
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="entries sent per request")] = 200,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Load many entries: each is created, updated, unchanged or rejected (with why). Re-importing changes nothing.

    Entries naming a local ``schema_file`` have it registered under their subject first. Exit code 1 if any entry
    was rejected.
    """
    entries = _entries_of(read_document(file))
    if entries is None:
        err.print(f"[bold red]error:[/] {file} must hold a list of entries or a mapping with a 'resources' list")
        raise typer.Exit(1)
    report: list[dict[str, Any]] = []
    with api_client(api, token) as client, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=as_json, disable=not entries,
    ) as progress:
        task = progress.add_task(f"importing {file.name}", total=len(entries))
        for start in range(0, len(entries), batch):
            chunk, sent, positions = entries[start:start + batch], [], []
            for offset, entry in enumerate(chunk):
                index = start + offset
                if isinstance(entry, dict):
                    entry = dict(entry)
                    try:
                        register_entry_schema(client, entry, file.parent)
                    except ApiError as exc:
                        report.append({"index": index, "id": entry.get("id"), "status": "rejected",
                                       "message": exc.message, "version": None, "status_code": exc.status or None})
                        continue
                sent.append(entry)
                positions.append(index)
            if sent:
                answer = client.call("POST", "/v1/resources/import", {"resources": sent})
                for line in answer["entries"]:
                    report.append({**line, "index": positions[line["index"]]})
            progress.advance(task, len(chunk))
    report.sort(key=lambda line: line["index"])
    counts = {s: sum(1 for line in report if line["status"] == s) for s in ("created", "updated", "unchanged",
                                                                           "rejected")}
    if as_json:
        print_json({**counts, "entries": report})
    else:
        colours = {"created": "green", "updated": "cyan", "unchanged": "dim", "rejected": "bold red"}
        console.print(rows_table(f"import of {file.name}", ("#", "id", "status", "detail"), (
            (str(line["index"]), str(line["id"] or "?"), f"[{colours[line['status']]}]{line['status']}[/]",
             line["message"]) for line in report)))
        console.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if counts["rejected"]:
        raise typer.Exit(1)


# ---------------------------------------------------------------- hub node

@node_app.command("list")
def node_list(
    tier: Annotated[str | None, typer.Option(help="national, municipal, district, region or hub")] = None,
    removed: Annotated[bool, typer.Option("--removed", help="include removed nodes")] = False,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Registered nodes."""
    request_and_show(api, token, as_json, "GET", "/v1/nodes", params={"tier": tier, "removed": removed or None},
                     show=nodes_table)


@node_app.command("register")
def node_register(
    node_id: Annotated[str, typer.Argument(help="national, municipal.<dept>, district.<code> or region.<peer>")],
    title: Annotated[str, typer.Option(help="name of the organisation")] = "",
    clearance: Annotated[str, typer.Option(help="L1, L2, L3 or L4")] = "L2",
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Register a node (operator); prints its token, once."""
    request_and_show(api, token, as_json, "POST", "/v1/nodes", {"id": node_id, "title": title, "clearance": clearance},
                     show=token_text)


@node_app.command("show")
def node_show(
    node_id: Annotated[str, typer.Argument(help="node id")],
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """One node."""
    request_and_show(api, token, as_json, "GET", item_path("nodes", node_id), show=lambda node: nodes_table([node]))


@node_app.command("token")
def node_token(
    node_id: Annotated[str, typer.Argument(help="node id")],
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Issue a new token for a node (the operator, or the node itself); the previous one stops working."""
    request_and_show(api, token, as_json, "POST", item_path("nodes", node_id, "token"), show=token_text)


@node_app.command("remove")
def node_remove(
    node_id: Annotated[str, typer.Argument(help="node id")],
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Remove a node (operator): its token stops working."""
    request_and_show(api, token, as_json, "DELETE", item_path("nodes", node_id),
                     show=lambda node: f"removed [bold]{node['id']}[/]")


# ---------------------------------------------------------------- hub scenario

@scenario_app.command("list")
def scenario_list(api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Registered scenarios."""
    request_and_show(api, token, as_json, "GET", "/v1/scenarios", show=lambda rows: rows_table(
        counted(len(rows), "scenario"), ("id", "title", "legal basis", "version"),
        ((s["id"], s["title"], s["legal_basis"], str(s["version"])) for s in rows)))


@scenario_app.command("create")
def scenario_create(
    scenario_id: Annotated[str, typer.Argument(help="lowercase slug, e.g. vaccination-follow-up")],
    legal_basis: Annotated[str, typer.Option(help="law or decision allowing sharing for this purpose")],
    title: Annotated[str, typer.Option(help="name of the scenario")] = "",
    description: Annotated[str, typer.Option(help="what it is for")] = "",
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Register a scenario (operator)."""
    body = {"id": scenario_id, "title": title, "legal_basis": legal_basis, "description": description}
    request_and_show(api, token, as_json, "POST", "/v1/scenarios", body,
                     show=lambda scenario: f"registered scenario [bold]{scenario['id']}[/]")
