"""Apply the ACL plan to a real broker: node users (SCRAM), their ACLs, removal of what nodes no longer have.

The hub connects as its privileged principal (``User:hub``, a super user): the ``HUB_KAFKA_*`` credentials if
set, else those of the secure local broker of this state dir (``hub broker start --secure``).
Each node's Kafka user is its node id; its password is generated once into
``<state_dir>/kafka-users/<node>.password`` (0600) and handed to the node's operators out of band.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.acl.plan import AclSpec, desired_acls, diff, is_managed, node_of, principal_of
from hub.broker.kafka_config import confluent_config, with_credentials
from hub.broker.manager import LocalBroker, new_password, write_secret
from hub.contract import OPERATOR
from hub.settings import Settings

SCRAM_ITERATIONS = 8192


class AclSyncError(RuntimeError):
    """The sync could not be done; the message says why and what to do."""


def registered_nodes(settings: Settings) -> list[str]:
    """The node ids the broker must know (without ``hub`` itself).

    For now the seed file; this is the one place to point at the live node registry later.
    """
    from hub.catalogue.model import load_exchange_config

    config = load_exchange_config(settings.seed_config)
    return sorted(n.id for n in config.nodes if n.id != OPERATOR)


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
    dry_run: bool = False,
    reset_credentials: bool = False,
    show_passwords: bool = False,
    timeout: float = 30.0,
) -> SyncReport:
    """Make the broker's node users and ACLs exactly those of ``node_ids`` (default: ``registered_nodes``).

    * a SCRAM-SHA-256 user per node, created when missing (or when its password file is new, or with
      ``reset_credentials``), with the password on file;
    * the planned ACLs created; ACLs of node principals that the plan no longer has deleted;
    * users of nodes no longer registered deleted (with their password files).
    ACLs and users of other principals (the hub's own, operators' tools) are left alone.
    """
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    nodes = sorted(set(registered_nodes(settings) if node_ids is None else node_ids) - {OPERATOR})
    for node in nodes:
        if node_of(principal_of(node)) is None:
            raise AclSyncError(f"{node!r} is not a valid node id")
    admin_s, _ = admin_settings(settings)
    admin, bootstrap = admin_client(settings, "hub-acl-sync")
    report = SyncReport(bootstrap=bootstrap, admin=f"User:{admin_s.kafka_username}", nodes=nodes, dry_run=dry_run)

    # 1. users
    users = current_users(admin, timeout)
    upserts = []
    for node in nodes:
        if dry_run:
            password, fresh = "", not password_file(settings, node).exists()
        else:
            password, fresh = node_password(settings, node)
        if show_passwords and not dry_run:
            report.passwords[node] = password
        exists = "SCRAM-SHA-256" in users.get(node, set())
        if not exists:
            report.users_created.append(node)
        elif fresh or reset_credentials:
            report.users_updated.append(node)
        else:
            report.users_unchanged.append(node)
            continue
        upserts.append(UserScramCredentialUpsertion(
            node, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, SCRAM_ITERATIONS), password.encode()))
    removed_users = sorted(u for u in users if is_managed(f"User:{u}") and u not in nodes)
    report.users_deleted = removed_users
    deletions = [UserScramCredentialDeletion(u, ScramMechanism[m.replace("-", "_")])
                 for u in removed_users for m in sorted(users[u])]

    # 2. ACLs
    to_create, to_delete = diff(current_acls(admin, timeout), desired_acls(nodes))
    report.acls_created = sorted(to_create)
    report.acls_deleted = sorted(to_delete)
    report.acls_kept = len(desired_acls(nodes)) - len(to_create)
    if dry_run:
        return report

    # Shrink first (deletions), then grant: a node never holds more than old ∪ new rights.
    if to_delete:
        _wait_all(admin.delete_acls([_to_filter(a) for a in sorted(to_delete)], request_timeout=timeout),
                  "deleting ACLs", timeout)
    if deletions:
        _wait_all(admin.alter_user_scram_credentials(deletions, request_timeout=timeout), "deleting users",
                  timeout)
        for user in removed_users:
            password_file(settings, user).unlink(missing_ok=True)
    if upserts:
        _wait_all(admin.alter_user_scram_credentials(upserts, request_timeout=timeout),
                  "creating/updating users", timeout)
    if to_create:
        _wait_all(admin.create_acls([_to_binding(a) for a in sorted(to_create)], request_timeout=timeout),
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
