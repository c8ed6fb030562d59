"""``hub acl``: each node's Kafka user and ACLs on a secure broker, derived from the live control plane.

``hub acl sync`` reads the nodes from the ``hub.nodes`` topic (what ``POST``/``DELETE /v1/nodes`` change), not
from the seed file; see ``hub.acl.sync`` for why the topic rather than the API. While the API runs against a
secure broker, ``hub.acl.follow.AclFollower`` applies each registration or removal by itself.
"""

from __future__ import annotations

import json
import shlex
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.contract import NODES_TOPIC
from hub.settings import Settings

acl_app = typer.Typer(help="Broker-level isolation: node users (SCRAM) and ACLs.", no_args_is_help=True)

console = Console()
err = Console(stderr=True)

BootstrapOpt = Annotated[
    str | None, typer.Option("--bootstrap", help="host:port of the Kafka cluster (else HUB_BOOTSTRAP or the "
                                                 "secure local broker)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def _settings(bootstrap: str | None) -> Settings:
    return Settings(bootstrap=bootstrap) if bootstrap else Settings()


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


@acl_app.command("sync")
def acl_sync(
    bootstrap: BootstrapOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would change, change nothing")] = False,
    reset_credentials: Annotated[
        bool, typer.Option("--reset-credentials", help="re-store every node's password on file in the broker")
    ] = False,
    show_passwords: Annotated[
        bool, typer.Option("--show-passwords", help="print the nodes' Kafka passwords (else only their files)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create/update the SCRAM user and ACLs of each live node of the control plane (hub.nodes); remove those of
    removed nodes or shrunk rights."""
    from hub.acl.sync import AclSyncError, sync

    settings = _settings(bootstrap)
    try:
        report = sync(settings, dry_run=dry_run, reset_credentials=reset_credentials,
                      show_passwords=show_passwords)
    except (AclSyncError, ValueError) as exc:
        _fail(str(exc))
        return
    if as_json:
        print(json.dumps(report.to_json(settings), indent=2))
        return
    _print_report(report, settings)


def _print_report(report: Any, settings: Settings) -> None:
    from hub.acl.sync import password_dir

    verb = " would be" if report.dry_run else ""
    console.print(f"[bold]hub acl sync[/] on {report.bootstrap} as {report.admin}, nodes from the control plane "
                  f"({NODES_TOPIC})" + (" [yellow](dry run)[/]" if report.dry_run else ""))
    table = Table(show_header=True, header_style="bold")
    table.add_column("node")
    table.add_column("user")
    table.add_column("ACLs +", justify="right")
    table.add_column("ACLs -", justify="right")
    if report.passwords:
        table.add_column("password")
    created = {n: 0 for n in report.nodes}
    deleted: dict[str, int] = {}
    for acl in report.acls_created:
        node = acl.principal.removeprefix("User:")
        created[node] = created.get(node, 0) + 1
    for acl in report.acls_deleted:
        node = acl.principal.removeprefix("User:")
        deleted[node] = deleted.get(node, 0) + 1
    state = {n: "created" for n in report.users_created}
    state |= {n: "updated" for n in report.users_updated}
    state |= {n: "unchanged" for n in report.users_unchanged}
    state |= {n: "[red]deleted[/]" for n in report.users_deleted}
    for node in sorted(set(report.nodes) | set(deleted) | set(report.users_deleted)):
        row = [node, state.get(node, "-"), str(created.get(node, 0)), str(deleted.get(node, 0))]
        if report.passwords:
            row.append(report.passwords.get(node, ""))
        table.add_row(*row)
    console.print(table)
    for acl in report.acls_deleted:
        console.print(f"  [red]-[/] {acl}")
    for acl in report.acls_created:
        console.print(f"  [green]+[/] {acl}")
    console.print(
        f"{len(report.nodes)} nodes; users{verb} created {len(report.users_created)}, updated "
        f"{len(report.users_updated)}, deleted {len(report.users_deleted)}; ACLs{verb} created "
        f"{len(report.acls_created)}, deleted {len(report.acls_deleted)}, unchanged {report.acls_kept}"
    )
    console.print(f"node passwords: {password_dir(settings)}/<node>.password (0600)")


@acl_app.command("list")
def acl_list(
    bootstrap: BootstrapOpt = None,
    node: Annotated[str | None, typer.Option("--node", help="only this node's ACLs")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The ACLs on the broker now (all principals, or one node's)."""
    from hub.acl.sync import AclSyncError, admin_client, current_acls

    settings = _settings(bootstrap)
    try:
        acls = sorted(current_acls(admin_client(settings)[0]))
    except AclSyncError as exc:
        _fail(str(exc))
        return
    if node:
        acls = [a for a in acls if a.principal == f"User:{node}"]
    if as_json:
        print(json.dumps([a.to_json() for a in acls], indent=2))
        return
    for acl in acls:
        console.print(str(acl))
    console.print(f"{len(acls)} ACLs")


@acl_app.command("env")
def acl_env(
    bootstrap: BootstrapOpt = None,
    node: Annotated[str | None, typer.Option("--node", help="a node's credentials instead of the hub's")] = None,
) -> None:
    """Print ``export HUB_...`` lines for the hub's privileged principal (or --node): `eval "$(hub acl env)"`."""
    from hub.acl.sync import AclSyncError, admin_env, admin_settings, node_env

    settings = _settings(bootstrap)
    try:
        env = admin_env(settings) if node is None else node_env(settings, node, admin_settings(settings)[1])
    except AclSyncError as exc:
        _fail(str(exc))
        return
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
