"""Apply the ACL plan to a real broker: node users (SCRAM), their ACLs, removal of what nodes no longer have.

The hub connects as its privileged principal (``User:hub``, a super user): the ``HUB_KAFKA_*`` credentials if
set, else those of the secure local broker of this state dir (``hub broker start --secure``).
Each node's Kafka user is its node id; its password is generated once into
``<state_dir>/kafka-users/<node>.password`` (0600) and handed to the node's operators out of band.

Which nodes: the live control plane, never the seed file (the seed only seeds an empty control plane when the
hub starts). :func:`registered_nodes` reads the compacted ``hub.nodes`` topic itself, as the privileged
principal, with the same decoding as the API (:class:`hub.control.view.ControlView`), rather than calling
``GET /v1/nodes``: the topic is the source of truth the API only serves from, and reading it needs nothing but
the broker credentials the sync needs anyway. ``hub acl sync`` therefore works whether or not the API is up,
without the operator token or the API's address, and cannot be misled by an API of another state dir. The
value schemas are read from ``_schemas`` on the same broker (or from ``HUB_REGISTRY_URL`` when an external
registry holds them, as the API does). A node flagged removed on ``hub.nodes`` is left out, so the sync
takes its user and ACLs away; an empty control plane (never seeded) is refused rather than read as "no nodes".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.acl.plan import (
    AclSpec,
    nodes_from_control,
    plan_sync,
)
from hub.broker.kafka_config import confluent_config, with_credentials
from hub.broker.manager import LocalBroker, new_password, write_secret
from hub.contract import NODES_TOPIC
from hub.settings import Settings

SCRAM_ITERATIONS = 8192


class AclSyncError(RuntimeError):
    """The sync could not be done; the message says why and what to do."""


def registered_nodes(settings: Settings, timeout: float = 60.0) -> list[str]:
    """The node ids the broker must know: the live nodes of the control plane (without ``hub`` itself).

    Blocking (runs its own event loop): for the CLI. In a process that keeps the control plane (the API),
    use ``nodes_from_control(control.state.nodes.values())`` instead.
    """
    return nodes_from_control(asyncio.run(control_plane_nodes(settings, timeout=timeout)))


async def control_plane_nodes(settings: Settings, timeout: float = 60.0) -> list[Any]:
    """Every node entry on ``hub.nodes`` (removed ones too, flagged), read to the end as the privileged principal.

    AclSyncError when there is no control plane on the broker (no ``hub.nodes``), when it holds no node at all
    (never seeded: syncing from it would delete every node's user), or when it cannot be read.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    from hub.broker.kafka_config import kafka_client_kwargs
    from hub.control.schemas import LocalSchemas, SchemaSource
    from hub.control.view import ControlView
    from hub.registry.client import RegistryClient
    from hub.registry.service import RegistryService

    admin_s, bootstrap = admin_settings(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                                **kafka_client_kwargs(admin_s))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        topics = set(await asyncio.wait_for(admin.list_topics(), timeout))
    except Exception as exc:
        raise AclSyncError(f"cannot list the topics of {bootstrap}: {exc or type(exc).__name__}") from exc
    finally:
        await admin.close()
    if NODES_TOPIC not in topics:
        raise AclSyncError(
            f"no control plane on {bootstrap}: the topic {NODES_TOPIC} does not exist. Start the hub on this "
            "broker (`hub up`) first: it seeds the empty control plane from the seed file; then sync again"
        )
    registry: RegistryService | None = None
    client: RegistryClient | None = None
    view: ControlView | None = None
    try:
        schemas: SchemaSource | RegistryClient
        if settings.registry_url:  # the API keeps the control schemas in this external registry (reads are open)
            client = schemas = RegistryClient(settings.registry_url)
        else:
            registry = RegistryService(admin_s, bootstrap=bootstrap, start_timeout=timeout)
            await registry.start()
            schemas = LocalSchemas(registry)
        view = ControlView(admin_s, schemas, bootstrap=bootstrap, start_timeout=timeout)
        await view.start()
        nodes = list(view.state.nodes.values())
    except AclSyncError:
        raise
    except Exception as exc:
        raise AclSyncError(f"cannot read the control plane ({NODES_TOPIC}) on {bootstrap}: "
                           f"{exc or type(exc).__name__}") from exc
    finally:
        if view is not None:
            await view.stop()
        if registry is not None:
            await registry.stop()
        if client is not None:
            await client.aclose()
    if not nodes:
        raise AclSyncError(
            f"the control plane on {bootstrap} has no nodes ({NODES_TOPIC} is empty): it was never seeded. "
            "Start the hub (`hub up`) to seed it, or register nodes with POST /v1/nodes; syncing now would "
            "delete every node's Kafka user"
        )
    return nodes


# ---------------------------------------------------------------- connection
def admin_settings(settings: Settings) -> tuple[Settings, str]:
    """``(settings as the hub's privileged principal, bootstrap)``.

    ``HUB_BOOTSTRAP`` + ``HUB_KAFKA_*`` when given; otherwise the running secure broker of this state dir and
    the ``hub`` user's password it recorded.
    """
    local = LocalBroker(settings).status()
    bootstrap = settings.bootstrap or (local.bootstrap if local else None)
    if bootstrap is None:
        raise AclSyncError("no Kafka to connect to: set HUB_BOOTSTRAP (and HUB_KAFKA_*), or run "
                           "`hub broker start --secure`")
    if settings.kafka_username:
        return settings, bootstrap
    if local is not None and local.bootstrap == bootstrap and local.secure:
        password = local.admin_password()
        if not password or not local.admin_username:
            raise AclSyncError(f"the secure local broker recorded no admin password ({local.admin_password_file})")
        return with_credentials(settings, local.admin_username, password,
                                mechanism=local.sasl_mechanism or "SCRAM-SHA-256",
                                protocol=local.security_protocol), bootstrap
    raise AclSyncError(
        f"no credentials for the hub's privileged principal on {bootstrap}: set HUB_KAFKA_SECURITY_PROTOCOL, "
        "HUB_KAFKA_SASL_MECHANISM, HUB_KAFKA_USERNAME and HUB_KAFKA_PASSWORD, or use the local broker started "
        "with `hub broker start --secure`"
    )


def password_dir(settings: Settings) -> Path:
    return settings.state_dir / "kafka-users"


def password_file(settings: Settings, node_id: str) -> Path:
    return password_dir(settings) / f"{node_id}.password"


def node_password(settings: Settings, node_id: str) -> tuple[str, bool]:
    """``(password, created_now)``: the node's Kafka password, generated (0600) unless one is on file."""
    path = password_file(settings, node_id)
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value, False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = new_password()
    write_secret(path, value)
    return value, True


# ---------------------------------------------------------------- report
@dataclass
class SyncReport:
    bootstrap: str
    admin: str
    nodes: list[str]
    users_created: list[str] = field(default_factory=list)
    users_updated: list[str] = field(default_factory=list)
    users_unchanged: list[str] = field(default_factory=list)
    users_deleted: list[str] = field(default_factory=list)
    acls_created: list[AclSpec] = field(default_factory=list)
    acls_deleted: list[AclSpec] = field(default_factory=list)
    acls_kept: int = 0
    dry_run: bool = False
    passwords: dict[str, str] = field(default_factory=dict)  # node -> password, only when asked to show them

    @property
    def changed(self) -> bool:
        return bool(self.users_created or self.users_updated or self.users_deleted or self.acls_created
                    or self.acls_deleted)

    def to_json(self, settings: Settings) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bootstrap": self.bootstrap, "admin": self.admin, "dry_run": self.dry_run, "nodes": self.nodes,
            "users": {"created": self.users_created, "updated": self.users_updated,
                      "unchanged": self.users_unchanged, "deleted": self.users_deleted},
            "acls": {"created": [a.to_json() for a in sorted(self.acls_created)],
                     "deleted": [a.to_json() for a in sorted(self.acls_deleted)], "kept": self.acls_kept},
            "password_files": {n: str(password_file(settings, n)) for n in self.nodes},
        }
        if self.passwords:
            out["passwords"] = self.passwords
        return out


# ---------------------------------------------------------------- Kafka calls
def admin_client(settings: Settings, client_id: str = "hub-acl") -> tuple[Any, str]:
    """``(confluent_kafka AdminClient as the hub's privileged principal, bootstrap)``."""
    from confluent_kafka.admin import AdminClient

    admin_s, bootstrap = admin_settings(settings)
    conf = {**confluent_config(admin_s, bootstrap), "client.id": client_id, "log_level": 4}
    return AdminClient(conf), bootstrap


def _kafka_error(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else exc
    name = getattr(err, "name", None)
    text = err.str() if hasattr(err, "str") else str(err)
    return f"{name()}: {text}" if callable(name) else text


def _to_spec(binding: Any) -> AclSpec:
    return AclSpec(
        principal=binding.principal, resource_type=binding.restype.name, name=binding.name,
        pattern=binding.resource_pattern_type.name, operation=binding.operation.name,
        permission=binding.permission_type.name, host=binding.host,
    )


def _to_binding(spec: AclSpec) -> Any:
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    return AclBinding(ResourceType[spec.resource_type], spec.name, ResourcePatternType[spec.pattern],
                      spec.principal, spec.host, AclOperation[spec.operation], AclPermissionType[spec.permission])


def _to_filter(spec: AclSpec) -> Any:
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return AclBindingFilter(ResourceType[spec.resource_type], spec.name, ResourcePatternType[spec.pattern],
                            spec.principal, spec.host, AclOperation[spec.operation],
                            AclPermissionType[spec.permission])


def current_acls(admin: Any, timeout: float = 15.0) -> set[AclSpec]:
    """Every ACL on the cluster."""
    from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType
    from confluent_kafka.admin import ResourceType as RT

    everything = AclBindingFilter(RT.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    try:
        bindings = admin.describe_acls(everything, request_timeout=timeout).result(timeout)
    except Exception as exc:
        text = _kafka_error(exc)
        if "SECURITY_DISABLED" in text or "ecurity features are disabled" in text:
            raise AclSyncError("the broker has no authorizer (ACLs are disabled): run a secure broker, "
                               "`hub broker start --secure`") from exc
        raise AclSyncError(f"cannot list the broker's ACLs: {text}") from exc
    return {_to_spec(b) for b in bindings}


def current_users(admin: Any, timeout: float = 15.0) -> dict[str, set[str]]:
    """SCRAM users on the cluster -> their mechanisms."""
    try:
        described = admin.describe_user_scram_credentials(request_timeout=timeout).result(timeout)
    except Exception as exc:
        raise AclSyncError(f"cannot list the broker's SCRAM users: {_kafka_error(exc)}") from exc
    return {user: {info.mechanism.name.replace("_", "-") for info in desc.scram_credential_infos}
            for user, desc in described.items()}


def _wait_all(futures: dict[Any, Any], what: str, timeout: float) -> None:
    failures = []
    for key, fut in futures.items():
        try:
            fut.result(timeout)
        except Exception as exc:
            failures.append(f"{key}: {_kafka_error(exc)}")
    if failures:
        raise AclSyncError(f"{what} failed:\n  " + "\n  ".join(failures))


# ---------------------------------------------------------------- the sync
def sync(
    settings: Settings,
    node_ids: Iterable[str] | None = None,
    *,
    scope: Iterable[str] | None = None,
    dry_run: bool = False,
    reset_credentials: bool = False,
    keep_existing_users: bool = False,
    show_passwords: bool = False,
    timeout: float = 30.0,
) -> SyncReport:
    """Make the broker's node users and ACLs exactly those of ``node_ids`` (default: ``registered_nodes``, the
    live nodes of the control plane).

    * a SCRAM-SHA-256 user per node, created when missing (or when its password file is new, or with
      ``reset_credentials``), with the password on file;
    * the planned ACLs created; ACLs of node principals that the plan no longer has deleted;
    * users of nodes no longer registered deleted (with their password files).
    ``scope`` limits all of this to some nodes (see ``hub.acl.plan.plan_sync``): the follower syncs the nodes
    just registered or removed and leaves every other principal as it is. ``keep_existing_users`` creates
    missing users only and never re-stores the password of an existing one (the follower: a process whose state
    dir lacks a node's password file must not change the password the node was given).
    ACLs and users of other principals (the hub's own, operators' tools) are left alone. Blocking.
    """
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    wanted = registered_nodes(settings) if node_ids is None else list(node_ids)
    admin_s, _ = admin_settings(settings)
    admin, bootstrap = admin_client(settings, "hub-acl-sync")
    users = current_users(admin, timeout)
    try:
        plan = plan_sync(wanted, users, current_acls(admin, timeout), scope)
    except ValueError as exc:
        raise AclSyncError(str(exc)) from exc
    nodes = list(plan.nodes)
    report = SyncReport(bootstrap=bootstrap, admin=f"User:{admin_s.kafka_username}", nodes=nodes, dry_run=dry_run,
                        acls_created=sorted(plan.acls_created), acls_deleted=sorted(plan.acls_deleted),
                        acls_kept=plan.acls_kept, users_deleted=list(plan.users_deleted))

    # 1. users
    upserts = []
    for node in nodes:
        if keep_existing_users and node not in plan.users_missing:
            report.users_unchanged.append(node)
            continue
        if dry_run:
            password, fresh = "", not password_file(settings, node).exists()
        else:
            password, fresh = node_password(settings, node)
        if show_passwords and not dry_run:
            report.passwords[node] = password
        if node in plan.users_missing:
            report.users_created.append(node)
        elif fresh or reset_credentials:
            report.users_updated.append(node)
        else:
            report.users_unchanged.append(node)
            continue
        upserts.append(UserScramCredentialUpsertion(
            node, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, SCRAM_ITERATIONS), password.encode()))
    deletions = [UserScramCredentialDeletion(u, ScramMechanism[m.replace("-", "_")])
                 for u in plan.users_deleted for m in sorted(users[u])]
    if dry_run:
        return report

    # 2. Shrink first (ACL deletions, then users), then grant: a node never holds more than old ∪ new rights.
    if plan.acls_deleted:
        _wait_all(admin.delete_acls([_to_filter(a) for a in sorted(plan.acls_deleted)], request_timeout=timeout),
                  "deleting ACLs", timeout)
    if deletions:
        _wait_all(admin.alter_user_scram_credentials(deletions, request_timeout=timeout), "deleting users",
                  timeout)
        for user in plan.users_deleted:
            password_file(settings, user).unlink(missing_ok=True)
    if upserts:
        _wait_all(admin.alter_user_scram_credentials(upserts, request_timeout=timeout),
                  "creating/updating users", timeout)
    if plan.acls_created:
        _wait_all(admin.create_acls([_to_binding(a) for a in sorted(plan.acls_created)], request_timeout=timeout),
                  "creating ACLs", timeout)
    return report


def node_env(settings: Settings, node_id: str, bootstrap: str) -> dict[str, str]:
    """``HUB_*`` variables connecting a hub client as ``node_id`` (its password must be on file)."""
    path = password_file(settings, node_id)
    if not path.exists():
        raise AclSyncError(f"no Kafka password on file for {node_id} ({path}): run `hub acl sync` first")
    return {
        "HUB_BOOTSTRAP": bootstrap, "HUB_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HUB_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "HUB_KAFKA_USERNAME": node_id,
        "HUB_KAFKA_PASSWORD": path.read_text().strip(),
    }


def admin_env(settings: Settings) -> dict[str, str]:
    """``HUB_*`` variables that make a hub process (worker, API, ``hub up --bootstrap``) the privileged principal."""
    admin_s, bootstrap = admin_settings(settings)
    return {
        "HUB_BOOTSTRAP": bootstrap, "HUB_KAFKA_SECURITY_PROTOCOL": admin_s.kafka_security_protocol,
        "HUB_KAFKA_SASL_MECHANISM": admin_s.kafka_sasl_mechanism or "",
        "HUB_KAFKA_USERNAME": admin_s.kafka_username or "",
        "HUB_KAFKA_PASSWORD": admin_s.kafka_password.get_secret_value() if admin_s.kafka_password else "",
    }
