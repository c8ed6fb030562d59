"""Secure local broker configuration and client settings for SCRAM, without starting Java."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from hub.broker.kafka_config import confluent_config, kafka_client_kwargs, with_credentials
from hub.broker.manager import BrokerError, BrokerInfo, LocalBroker
from hub.settings import Settings


def props(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def test_secure_config(tmp_path: Path) -> None:
    broker = LocalBroker(Settings(state_dir=tmp_path))
    broker.dir.mkdir(parents=True)
    broker._write_config(19092, 19093, secure=True)
    p = props(broker.config_file)
    assert p["listeners"] == "CLIENT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert p["advertised.listeners"] == "CLIENT://127.0.0.1:19092"
    assert p["listener.security.protocol.map"] == "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert "PLAINTEXT://" not in p["listeners"]  # no unauthenticated listener at all
    assert p["sasl.enabled.mechanisms"] == p["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-256"
    assert p["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert p["super.users"] == "User:hub;User:hub-controller"  # no User:ANONYMOUS
    assert p["allow.everyone.if.no.acl.found"] == "false"
    password = broker.admin_password_file.read_text().strip()
    assert f'username="hub" password="{password}"' in p["listener.name.client.scram-sha-256.sasl.jaas.config"]
    for secret in (broker.config_file, broker.admin_password_file, broker.controller_password_file):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    broker._write_config(19092, 19093, secure=True)  # restart: same passwords
    assert broker.admin_password_file.read_text().strip() == password


def test_plaintext_config_unchanged(tmp_path: Path) -> None:
    broker = LocalBroker(Settings(state_dir=tmp_path))
    broker.dir.mkdir(parents=True)
    broker._write_config(19092, 19093)
    p = props(broker.config_file)
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert "authorizer.class.name" not in p and not broker.admin_password_file.exists()


@pytest.mark.parametrize(("formatted_secure", "ask"), [(False, True), (True, False)])
def test_a_state_dir_keeps_its_mode(tmp_path: Path, formatted_secure: bool, ask: bool) -> None:
    broker = LocalBroker(Settings(state_dir=tmp_path))
    broker.data_dir.mkdir(parents=True)
    (broker.data_dir / "meta.properties").write_text("node.id=1\n")
    if formatted_secure:
        broker.security_file.write_text(json.dumps({"secure": True}))
    assert broker.formatted_secure() is formatted_secure
    with pytest.raises(BrokerError, match="needs its own state dir"):
        broker.start(secure=ask)


def test_broker_info_reads_old_records() -> None:
    old = {"pid": 1, "port": 2, "controller_port": 3, "bootstrap": "127.0.0.1:2", "data_dir": "d", "log_file": "l",
           "kafka_version": "4.4.0", "started_at": 0.0}
    info = BrokerInfo(**old)
    assert not info.secure and info.security_protocol == "PLAINTEXT" and info.admin_password() is None


def test_scram_client_configs() -> None:
    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                        kafka_username="hub", kafka_password=SecretStr("s3cret"))
    assert confluent_config(settings, "127.0.0.1:9092") == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "hub", "sasl.password": "s3cret",
    }
    kwargs = kafka_client_kwargs(settings)
    assert kwargs == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                      "sasl_plain_username": "hub", "sasl_plain_password": "s3cret"}
    assert confluent_config(Settings()) == {"security.protocol": "PLAINTEXT"}
    node = with_credentials(Settings(), "district.310115", "pw")
    assert confluent_config(node)["sasl.username"] == "district.310115"
    assert kafka_client_kwargs(node)["sasl_plain_password"] == "pw"
