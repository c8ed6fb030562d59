"""Connection settings shared by every aiokafka client the hub builds (security protocol, SASL, TLS)."""

from __future__ import annotations

from typing import Any

from hub.settings import Settings


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin), except ``bootstrap_servers``.

    PLAINTEXT locally; ``SASL_PLAINTEXT`` / ``SASL_SSL`` with the configured mechanism (e.g. SCRAM-SHA-256)
    and credentials in production; ``SSL`` / ``SASL_SSL`` verify the broker with the system CAs.
    """
    protocol = settings.kafka_security_protocol.upper()
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        if settings.kafka_username is not None:
            kwargs["sasl_plain_username"] = settings.kafka_username
        if settings.kafka_password is not None:
            kwargs["sasl_plain_password"] = settings.kafka_password.get_secret_value()
    if protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        kwargs["ssl_context"] = create_ssl_context()
    return kwargs


def confluent_config(settings: Settings, bootstrap: str | None = None) -> dict[str, str]:
    """The same connection settings for a ``confluent_kafka`` (librdkafka) client: Producer, Consumer, AdminClient.

    ``bootstrap`` adds ``bootstrap.servers``. SCRAM: ``HUB_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT``,
    ``HUB_KAFKA_SASL_MECHANISM=SCRAM-SHA-256``, ``HUB_KAFKA_USERNAME``, ``HUB_KAFKA_PASSWORD``.
    """
    protocol = settings.kafka_security_protocol.upper()
    conf: dict[str, str] = {"security.protocol": protocol}
    if bootstrap:
        conf["bootstrap.servers"] = bootstrap
    if protocol.startswith("SASL"):
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        if settings.kafka_username is not None:
            conf["sasl.username"] = settings.kafka_username
        if settings.kafka_password is not None:
            conf["sasl.password"] = settings.kafka_password.get_secret_value()
    if protocol.endswith("SSL"):
        conf["ssl.ca.location"] = "probe"  # the system CAs, as kafka_client_kwargs does for aiokafka
    return conf


def java_client_properties(settings: Settings, password: str | None = None) -> dict[str, str]:
    """The same connection settings for a Java client (MirrorMaker 2): ``security.protocol``, ``sasl.mechanism``
    and a ``sasl.jaas.config`` naming the SCRAM (or PLAIN) login module with the hub's credentials.

    ``password`` replaces the password written into the JAAS line, e.g. ``${env:HUB_KAFKA_PASSWORD}`` for a
    properties file read with Kafka's ``EnvVarConfigProvider``. Empty for PLAINTEXT.
    """
    protocol = settings.kafka_security_protocol.upper()
    if not protocol.startswith("SASL"):
        return {"security.protocol": protocol} if protocol != "PLAINTEXT" else {}
    mechanism = (settings.kafka_sasl_mechanism or "PLAIN").upper()
    module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if mechanism == "PLAIN"
              else "org.apache.kafka.common.security.scram.ScramLoginModule")
    secret = password if password is not None else (
        settings.kafka_password.get_secret_value() if settings.kafka_password is not None else "")
    return {
        "security.protocol": protocol,
        "sasl.mechanism": mechanism,
        "sasl.jaas.config": f'{module} required username="{settings.kafka_username or ""}" password="{secret}";',
    }


def with_credentials(settings: Settings, username: str, password: str, *, mechanism: str = "SCRAM-SHA-256",
                     protocol: str = "SASL_PLAINTEXT") -> Settings:
    """``settings`` with the Kafka principal replaced (e.g. the hub's own ``hub`` user of a secure local broker)."""
    from pydantic import SecretStr

    return settings.model_copy(update={
        "kafka_security_protocol": protocol, "kafka_sasl_mechanism": mechanism,
        "kafka_username": username, "kafka_password": SecretStr(password),
    })
