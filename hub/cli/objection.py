"""``hub objection``: file, list, show and move objections over ``/v1/objections`` (docs/objections.md).

The caller is the node whose token is used (``--token``, else ``HUB_TOKEN``, else the operator token file): a
consumer that received a record files; the operator accepts, flags, unflags and archives; the provider corrects
(after publishing the corrected record with the ``hub-objection`` header) or rejects with a reason. Output is a
table, or JSON with ``--json``; a refusal prints the API's message and exits 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from hub.cli.control import ApiOpt, JsonOpt, TokenOpt, counted, detail_table, item_path, request_and_show, rows_table
from hub.cli.grant import _when

objection_app = typer.Typer(
    help="Objections (异议): a consumer disputes a record it received; the provider corrects or rejects it.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="objection id")]
STATE_STYLE = {"filed": "yellow", "accepted": "yellow", "flagged": "red", "verified": "cyan", "unflagged": "green",
               "archived": "dim"}


def _state(o: dict[str, Any]) -> str:
    shown = f"[{STATE_STYLE.get(o['state'], 'white')}]{o['state']}[/]"
    if o.get("overdue"):
        shown += " [bold red]overdue[/]"
    if o.get("escalated"):
        shown += " (escalated)"
    return shown


def objections_table(rows: list[dict[str, Any]]) -> Table:
    return rows_table(
        counted(len(rows), "objection"),
        ("id", "resource", "record", "filer", "provider", "state", "next", "deadline"),
        ((o["objection_id"], o["resource"], o["record_key"], o["filer"], o["provider"], _state(o),
          " or ".join(o["next"]) or "-", _when(o.get("deadline"))) for o in rows),
    )


def objection_detail(o: dict[str, Any]) -> Table:
    keys = ("resource", "record_key", "event_id", "field", "proposed_value", "filer", "provider", "reason",
            "outcome", "resolution", "corrected_event_id")
    history = "\n".join(f"{_when(s['at'])} {s['state']} by {s['actor']}" + (f": {s['note']}" if s.get("note") else "")
                        for s in o["history"])
    return detail_table(f"objection {o['objection_id']}", [
        ("state", _state(o)),
        *((key, "-" if o.get(key) is None else str(o[key])) for key in keys),
        ("recipients", ", ".join(o["recipients"]) or "-"),
        ("next", " or ".join(o["next"]) or "-"),
        ("deadline", _when(o.get("deadline"))),
        ("history", history),
    ])


def _outcome(verb: str) -> Callable[[dict[str, Any]], str]:
    return lambda o: f"{verb} objection [bold]{o['objection_id']}[/]: {_state(o)}"


@objection_app.command("file")
def objection_file(
    resource: Annotated[str, typer.Argument(help="resource id of the record")],
    record_key: Annotated[str, typer.Argument(help="primary key value of the disputed record")],
    reason: Annotated[str, typer.Option(help="why the record is wrong (required)")],
    field: Annotated[str | None, typer.Option(help="the disputed field (default: the whole record)")] = None,
    proposed: Annotated[str | None, typer.Option(help="what the value should be")] = None,
    event_id: Annotated[str | None, typer.Option("--event-id", help="hub-event-id of the delivery disputed")] = None,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """File an objection to a record the caller received."""
    body: dict[str, Any] = {"resource": resource, "record_key": record_key, "reason": reason}
    optional = {"field": field, "proposed_value": proposed, "event_id": event_id}
    body.update({k: v for k, v in optional.items() if v is not None})
    request_and_show(api, token, as_json, "POST", "/v1/objections", body, show=_outcome("filed"))


@objection_app.command("list")
def objection_list(
    state: Annotated[str | None, typer.Option(help="filed, accepted, flagged, verified, unflagged or archived")] = None,
    node: Annotated[str | None, typer.Option(help="a party: filer, provider or recipient")] = None,
    resource: Annotated[str | None, typer.Option(help="resource id")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="only those past their deadline")] = False,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """The objections the caller is a party to (the operator: all), newest change first."""
    params = {"state": state, "node": node, "resource": resource, "overdue": "true" if overdue else None}
    request_and_show(api, token, as_json, "GET", "/v1/objections", params=params, show=objections_table)


@objection_app.command("show")
def objection_show(objection_id: IdArg, api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """One objection with its history."""
    request_and_show(api, token, as_json, "GET", item_path("objections", objection_id), show=objection_detail)


def _move(objection_id: str, action: str, body: dict[str, Any] | None, api: str | None, token: str | None,
          as_json: bool) -> None:
    verb = {"accept": "accepted", "flag": "flagged", "correct": "corrected", "reject": "rejected",
            "unflag": "unflagged", "archive": "archived"}[action]
    request_and_show(api, token, as_json, "POST", item_path("objections", objection_id, action), body,
                     show=_outcome(verb))


def _operator_step(action: str, doc: str) -> None:
    def command(objection_id: IdArg, note: Annotated[str | None, typer.Option(help="comment")] = None,
                api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
        _move(objection_id, action, {"note": note} if note else None, api, token, as_json)

    command.__doc__ = doc
    objection_app.command(action)(command)


_operator_step("accept", "filed -> accepted (the operator).")
_operator_step("flag", "accepted -> flagged (the operator): deliveries of the record carry hub-flag.")
_operator_step("unflag", "verified -> unflagged (the operator).")
_operator_step("archive", "unflagged -> archived (the operator).")


@objection_app.command("correct")
def objection_correct(
    objection_id: IdArg,
    event_id: Annotated[str | None, typer.Option("--event-id", help="hub-event-id of the corrected record")] = None,
    note: Annotated[str | None, typer.Option(help="what was corrected")] = None,
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """flagged -> verified, corrected (the provider): publish the corrected record with the hub-objection header
    first (it reaches exactly the consumers that received the wrong one)."""
    body = {k: v for k, v in {"note": note, "corrected_event_id": event_id}.items() if v is not None}
    _move(objection_id, "correct", body or None, api, token, as_json)


@objection_app.command("reject")
def objection_reject(
    objection_id: IdArg,
    reason: Annotated[str, typer.Option(help="why the record stands (required)")],
    api: ApiOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """flagged -> verified, rejected (the provider), with the reason the record stands."""
    _move(objection_id, "reject", {"note": reason}, api, token, as_json)
