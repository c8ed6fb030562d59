"""One typed settings object for the whole hub; every field can be set by a ``HUB_*`` variable."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.contract import CONTROL_AUDIT_TOPIC

DEFAULT_STATE_DIR = Path.home() / ".local" / "state" / "hub"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "hub"
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Hub configuration. ``HUB_<FIELD>`` overrides each field (e.g. ``HUB_BOOTSTRAP``)."""

    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    # --- Kafka ---
    bootstrap: str | None = Field(
        None, description="host:port of an existing Kafka cluster; unset means the hub's local broker"
    )
    kafka_security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. SCRAM-SHA-256")
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    topic_partitions: int = Field(1, ge=1, description="partitions of every topic the hub creates")
    topic_replication: int | None = Field(
        None, ge=1, description="replication factor of the topics the hub creates; unset: 3 (with "
        "min.insync.replicas=2) when the cluster has 3 or more brokers, else 1",
    )

    # --- local broker (hub broker start) ---
    kafka_version: str = "4.4.0"
    broker_port: int = Field(9092, description="PLAINTEXT listener of the local broker")
    broker_controller_port: int = Field(9093, description="KRaft controller listener of the local broker")
    broker_nodes: int = Field(1, ge=1, description="nodes of the local Kafka: 1, or a KRaft cluster (3 survives "
                              "the loss of one); `hub broker start --nodes N` overrides it")
    broker_heap: str = "768m"
    broker_start_timeout: float = 120.0

    # --- files ---
    state_dir: Path = Field(DEFAULT_STATE_DIR, description="broker data, pid files, operator token")
    cache_dir: Path = Field(DEFAULT_CACHE_DIR, description="downloaded Kafka jars (outside the repo)")

    # --- HTTP API and registry ---
    api_host: str = "127.0.0.1"
    api_port: int = 8081
    registry_url: str | None = Field(
        None, description="Confluent-compatible registry the workers use; unset means the hub's own API"
    )
    worker_metrics_port: int = Field(0, description="Prometheus port of a standalone worker; 0 = none")
    token: SecretStr | None = Field(
        None, description="this node's API token (`hub catalog`/`node`/`scenario`, registry writes of a standalone "
        "worker); unset: the operator token file, when readable",
    )

    # --- exchange ---
    seed_config: Path = Field(
        REPO_ROOT / "config" / "seed.yaml",
        description="nodes, resources, scenarios and subscriptions that seed an empty control plane (read once)",
    )
    app_id: str = Field("hub", description="the workers' consumer group (also prefixes internal group ids)")
    batch_max: int = Field(2000, ge=1, description="records taken from the ingress and call topics per poll batch")
    test_audit_delay_ms: float = Field(
        0, ge=0, description="testing only: hold each batch's audit write this long after its acknowledgements, "
        "so tests can stop a worker with batches in flight. Always 0 in production",
    )
    log_level: str = Field("WARNING", description="level of the hub's own log (DEBUG, INFO, WARNING, ERROR)")
    restart_on_write_failure: bool = Field(
        True, description="a worker whose batch could not be written (the broker gone past the producer's timeout) "
        "starts itself again (same process, same command) after a short pause, rather than exiting with 70 for a "
        "supervisor to restart",
    )
    stop_grace: float = Field(
        5.0, gt=0, description="seconds after SIGINT/SIGTERM that the shutdown steps (finish and commit what is in "
        "flight, leave the group, flush) may take together; a step still waiting then is skipped",
    )
    stop_timeout: float = Field(
        8.0, gt=0, description="hard deadline after SIGINT/SIGTERM: the process exits with code 75, skipping "
        "whatever still waits (uncommitted input is read again; nothing accepted is lost)",
    )
    broker_unreachable_warn: float = Field(
        30.0, gt=0, description="seconds without reaching the Kafka broker before the hub logs a WARNING about it",
    )
    consumer_session_timeout: float = Field(
        10.0, gt=0, description="seconds before a silent worker's partitions move to the others"
    )

    # --- audit log (hub.audit.chain) ---
    audit_hmac_key: SecretStr | None = Field(
        None, description="operator key: the audit chain's hashes become HMAC-SHA256, so only key holders can "
        "re-seal records; `hub audit verify` needs the same key. Unset: plain SHA-256 chain",
    )
    audit_checkpoint_every: int = Field(1000, ge=1, description="audit records per checkpoint record")
    audit_checkpoint_seconds: float = Field(
        60.0, gt=0, description="at most this long between a partition's audit records and their checkpoint"
    )
    control_audit_topic: str = Field(
        CONTROL_AUDIT_TOPIC, description="the API's control-plane audit log (grants, auth failures, control "
        "changes): one partition, one writer (the API); give each API instance its own",
    )

    # --- API security ---
    auth_failure_limit: int = Field(
        10, ge=1, description="failed authentications per client address or claimed node within "
        "auth_failure_window before the API answers 429",
    )
    auth_failure_window: float = Field(60.0, gt=0, description="seconds of the failed-authentication window")
    grant_expiry_interval: float = Field(
        30.0, gt=0, description="seconds between the API's writes of due grant expiries (the worker stops delivery "
        "at valid_to regardless)",
    )
    # objections (DB3208/T 219-2024): the time limit of each step, in seconds (calendar time, see docs/objections.md)
    objection_accept_limit: float = Field(86_400.0, gt=0, description="seconds the hub has to accept a filed objection")
    objection_flag_limit: float = Field(86_400.0, gt=0, description="seconds to flag the record once accepted")
    objection_verify_limit: float = Field(
        5 * 86_400.0, gt=0, description="seconds the provider has to correct the record or reject the objection")
    objection_unflag_limit: float = Field(86_400.0, gt=0, description="seconds to lift the flag once verified")
    objection_archive_limit: float = Field(3 * 86_400.0, gt=0, description="seconds to archive once unflagged")
    objection_check_interval: float = Field(
        30.0, gt=0, description="seconds between the API's checks for objections past their time limit")
    objection_window_days: float = Field(
        90.0, gt=0, description="days after a delivery its recipient may still object to it: the retention of "
        "hub.recipients (who received which record)")

    @property
    def audit_key(self) -> bytes | None:
        """The audit HMAC key as bytes (UTF-8 of ``HUB_AUDIT_HMAC_KEY``), or None for a plain chain."""
        return self.audit_hmac_key.get_secret_value().encode() if self.audit_hmac_key else None

    @property
    def broker_dir(self) -> Path:
        return self.state_dir / "broker"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def effective_registry_url(self) -> str:
        return self.registry_url or self.api_url

    @property
    def operator_token_file(self) -> Path:
        return self.state_dir / "operator.token"

    def client_token(self) -> str | None:
        """The token this process presents to the hub's API: HUB_TOKEN, else the operator token file."""
        if self.token is not None:
            return self.token.get_secret_value().strip() or None
        try:
            return self.operator_token_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
