"""``hub grant``: request, list, show, approve, deny and revoke grants over ``/v1/grants``.

The caller is the node whose token is used (``--token``, else ``HUB_TOKEN``, else the operator token file): a
consumer requests for itself; the provider of the resource (or the operator) approves or denies; the provider,
the consumer or the operator revokes. Output is a table, or JSON with ``--json``; a refusal prints the API's
message and exits 1.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from hub.cli.control import ApiOpt, JsonOpt, TokenOpt, api_client, console, print_json

grant_app = typer.Typer(help="Grants: a consumer asks for a resource for a scenario; the provider decides.",
                        no_args_is_help=True)

STATE_STYLE = {"active": "green", "requested": "yellow", "denied": "red", "revoked": "red", "expired": "dim"}


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _state(g: dict[str, Any]) -> str:
    state = g["effective_state"]
    shown = f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"
    return shown if state == g["state"] else f"{shown} (stored {g['state']})"


def grants_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(rows)} grant{'s' if len(rows) != 1 else ''}")
    for column in ("id", "consumer", "resource", "provider", "scenario", "mode", "state", "updated"):
        table.add_column(column, overflow="fold")
    for g in rows:
        table.add_row(g["id"], g["consumer"], g["resource"], g.get("provider") or "-", g["scenario"], g["mode"],
                      _state(g), _when(g["updated_at"]))
    return table


def grant_detail(g: dict[str, Any]) -> Table:
    table = Table(title=f"grant {g['id']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("state", _state(g))
    for key in ("consumer", "resource", "provider", "scenario", "mode", "row_scope", "daily_quota", "requested_by",
                "decided_by", "reason"):
        value = g.get(key)
        table.add_row(key, "-" if value is None else str(value))
    fields = g.get("allowed_fields")
    table.add_row("allowed_fields", ", ".join(fields) if fields else "all the consumer's clearance allows")
    until = _when(g.get("valid_to")) if g.get("valid_to") else "open"
    table.add_row("valid", f"{_when(g.get('valid_from'))} .. {until}")
    table.add_row("requested_at", _when(g.get("requested_at")))
    table.add_row("updated_at", _when(g.get("updated_at")))
    return table


def _show(grant: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        print_json(grant)
        return
    console.print(f"{verb} grant [bold]{grant['id']}[/]: {_state(grant)}"
                  + (f" - {grant['reason']}" if grant.get("reason") else ""))


@grant_app.command("request")
def grant_request(
    resource: Annotated[str, typer.Argument(help="resource id, e.g. municipal.big-data.legal-person")],
    scenario: Annotated[str, typer.Option(help="the scenario the data is needed for (hub scenario list)")],
    consumer: Annotated[str | None, typer.Option(
        help="the node the grant is for (default: the caller; the operator requests on behalf of a node)")] = None,
    mode: Annotated[str, typer.Option(help="subscribe (a feed) or call (single records)")] = "subscribe",
    fields: Annotated[str | None, typer.Option(
        help="comma-separated fields wanted (default: all the consumer's clearance allows)")] = None,
    row_scope: Annotated[str, typer.Option("--row-scope", help="all, or own_district (districts)")] = "all",
    valid_to: Annotated[str | None, typer.Option(
        "--valid-to", help="end of validity: epoch ms or ISO-8601 with offset (default: open-ended)")] = None,
    quota: Annotated[int | None, typer.Option(help="calls per day (call grants)")] = None,
    reason: Annotated[str | None, typer.Option(help="why it is needed (shown to the provider)")] = None,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Request a grant: active at once (unconditional), requested until the provider decides (authorised), or
    denied with the legal basis (none)."""
    body: dict[str, Any] = {"resource": resource, "scenario": scenario, "mode": mode, "row_scope": row_scope}
    optional = {"consumer": consumer, "valid_to": valid_to, "daily_quota": quota, "reason": reason,
                "allowed_fields": [f.strip() for f in fields.split(",") if f.strip()] if fields else None}
    body.update({k: v for k, v in optional.items() if v is not None})
    with api_client(api, token) as client:
        grant = client.call("POST", "/v1/grants", body)
    _show(grant, as_json, "requested:")


@grant_app.command("list")
def grant_list(
    consumer: Annotated[str | None, typer.Option(help="consumer node id")] = None,
    resource: Annotated[str | None, typer.Option(help="resource id")] = None,
    provider: Annotated[str | None, typer.Option(help="provider of the resource")] = None,
    scenario: Annotated[str | None, typer.Option(help="scenario id")] = None,
    mode: Annotated[str | None, typer.Option(help="subscribe or call")] = None,
    state: Annotated[str | None, typer.Option(help="requested, active, revoked, expired or denied (now)")] = None,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """The grants the caller holds or provides (the operator: all), newest change first."""
    params = {"consumer": consumer, "resource": resource, "provider": provider, "scenario": scenario, "mode": mode,
              "state": state}
    with api_client(api, token) as client:
        rows = client.call("GET", "/v1/grants", params=params)
    if as_json:
        print_json(rows)
    else:
        console.print(grants_table(rows))


@grant_app.command("show")
def grant_show(
    grant_id: Annotated[str, typer.Argument(help="grant id")],
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """One grant."""
    with api_client(api, token) as client:
        grant = client.call("GET", f"/v1/grants/{quote(grant_id, safe='')}")
    if as_json:
        print_json(grant)
    else:
        console.print(grant_detail(grant))


def _decide(grant_id: str, verb: str, reason: str | None, api: str | None, token: str | None, as_json: bool) -> None:
    body = {"reason": reason} if reason else None
    with api_client(api, token) as client:
        grant = client.call("POST", f"/v1/grants/{quote(grant_id, safe='')}/{verb}", body)
    _show(grant, as_json, {"approve": "approved", "deny": "denied", "revoke": "revoked"}[verb])


@grant_app.command("approve")
def grant_approve(
    grant_id: Annotated[str, typer.Argument(help="grant id")],
    reason: Annotated[str | None, typer.Option(help="justification (optional)")] = None,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Approve a requested grant (the resource's provider or the operator)."""
    _decide(grant_id, "approve", reason, api, token, as_json)


@grant_app.command("deny")
def grant_deny(
    grant_id: Annotated[str, typer.Argument(help="grant id")],
    reason: Annotated[str, typer.Option(help="why (required)")],
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Deny a requested grant (the resource's provider or the operator)."""
    _decide(grant_id, "deny", reason, api, token, as_json)


@grant_app.command("revoke")
def grant_revoke(
    grant_id: Annotated[str, typer.Argument(help="grant id")],
    reason: Annotated[str, typer.Option(help="why (required)")],
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Revoke an active grant (the provider, the consumer or the operator): delivery stops at the next event."""
    _decide(grant_id, "revoke", reason, api, token, as_json)
