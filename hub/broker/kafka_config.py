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
