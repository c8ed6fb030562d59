"""``hub grant``: request, list, show, approve, deny and revoke grants over ``/v1/grants``.

The caller is the node whose token is used (``--token``, else ``HUB_TOKEN``, else the operator token file): a
consumer requests for itself; the provider of the resource (or the operator) approves or denies; the provider,
the consumer or the operator revokes. Output is a table, or JSON with ``--json``; a refusal prints the API's
message and exits 1.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from hub.cli.control import ApiOpt, JsonOpt, TokenOpt, counted, detail_table, item_path, request_and_show, rows_table

grant_app = typer.Typer(help="Grants: a consumer asks for a resource for a scenario; the provider decides.",
                        no_args_is_help=True)

GrantIdArg = Annotated[str, typer.Argument(help="grant id")]
ReasonOpt = Annotated[str, typer.Option(help="why (required)")]
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
    return rows_table(
        counted(len(rows), "grant"), ("id", "consumer", "resource", "provider", "scenario", "mode", "state", "updated"),
        ((g["id"], g["consumer"], g["resource"], g.get("provider") or "-", g["scenario"], g["mode"], _state(g),
          _when(g["updated_at"])) for g in rows),
    )


def grant_detail(g: dict[str, Any]) -> Table:
    keys = ("consumer", "resource", "provider", "scenario", "mode", "row_scope", "daily_quota", "requested_by",
            "decided_by", "reason")
    fields = g.get("allowed_fields")
    until = _when(g.get("valid_to")) if g.get("valid_to") else "open"
    return detail_table(f"grant {g['id']}", [
        ("state", _state(g)),
        *((key, "-" if g.get(key) is None else str(g[key])) for key in keys),
        ("allowed_fields", ", ".join(fields) if fields else "all the consumer's clearance allows"),
        ("valid", f"{_when(g.get('valid_from'))} .. {until}"),
        ("requested_at", _when(g.get("requested_at"))),
        ("updated_at", _when(g.get("updated_at"))),
    ])


def _outcome(verb: str) -> Callable[[dict[str, Any]], str]:
    """The line a grant change prints: ``<verb> grant <id>: <state> - <reason>``."""
    return lambda grant: (f"{verb} grant [bold]{grant['id']}[/]: {_state(grant)}"
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
    request_and_show(api, token, as_json, "POST", "/v1/grants", body, show=_outcome("requested:"))


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
    request_and_show(api, token, as_json, "GET", "/v1/grants", params=params, show=grants_table)


@grant_app.command("show")
def grant_show(
    grant_id: GrantIdArg,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """One grant."""
    request_and_show(api, token, as_json, "GET", item_path("grants", grant_id), show=grant_detail)


def _decide(grant_id: str, verb: str, reason: str | None, api: str | None, token: str | None, as_json: bool) -> None:
    body = {"reason": reason} if reason else None
    request_and_show(api, token, as_json, "POST", item_path("grants", grant_id, verb), body,
                     show=_outcome({"approve": "approved", "deny": "denied", "revoke": "revoked"}[verb]))


@grant_app.command("approve")
def grant_approve(
    grant_id: GrantIdArg,
    reason: Annotated[str | None, typer.Option(help="justification (optional)")] = None,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Approve a requested grant (the resource's provider or the operator)."""
    _decide(grant_id, "approve", reason, api, token, as_json)


def _decision_command(verb: str, doc: str) -> None:
    """``hub grant deny`` and ``hub grant revoke``: the same command but for the verb (a reason is required)."""

    def command(
        grant_id: GrantIdArg, reason: ReasonOpt, api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
    ) -> None:
        _decide(grant_id, verb, reason, api, token, as_json)

    command.__doc__ = doc
    grant_app.command(verb)(command)


_decision_command("deny", "Deny a requested grant (the resource's provider or the operator).")
_decision_command("revoke", "Revoke an active grant (the provider, the consumer or the operator): delivery stops at "
                            "the next event.")
