"""The federation's pure core: names, schema id translation, lineage, MM2's configuration, link status."""

from __future__ import annotations

import json

import pytest

from hub.contract import H_EVENT_ID, H_GRANT, H_LINEAGE, H_RESOURCE
from hub.federation.gateway import crossing_of, partition_for
from hub.federation.model import (
    UNKNOWN_SCHEMA_ID,
    FederationConfig,
    Link,
    continued_lineage,
    link_status,
    mirrored_resource_id,
    mirrored_resource_spec,
    mm2_properties,
    properties_text,
    translate_frame,
)
from hub.registry import framing

UP = Link(source="shanghai", target="national", export_node="national", peer_node="region.shanghai",
          resources=("municipal.market.business-licence",))
DOWN = Link(source="national", target="shanghai", export_node="region.shanghai", peer_node="national")


def config(**extra: object) -> FederationConfig:
    return FederationConfig.model_validate({
        "platforms": {"shanghai": {"bootstrap": "127.0.0.1:9092", "api": "http://a", "token": "t"},
                      "national": {"bootstrap": "127.0.0.1:9192", "api": "http://b", "token": "u"}},
        "links": [UP.model_dump(), DOWN.model_dump()], **extra})


def test_translate_frame_rewrites_only_the_schema_id() -> None:
    body = b"\x02abc\x00"
    assert translate_frame(framing.frame(7, body), {7: 41}) == framing.frame(41, body)


def test_an_id_without_translation_never_keeps_its_source_id() -> None:
    # source id 7 may name an unrelated schema in the receiving registry: the record must be quarantined there
    assert framing.split(translate_frame(framing.frame(7, b"x"), {8: 9}))[0] == UNKNOWN_SCHEMA_ID


@pytest.mark.parametrize("value", [None, b"", b"\x00\x00", b"\x01\x00\x00\x00\x07body"])
def test_values_that_are_not_framed_pass_unchanged_for_the_receiving_hub_to_reject(value: bytes | None) -> None:
    assert translate_frame(value, {7: 1}) == value


def test_names_on_the_receiving_side() -> None:
    assert UP.source_topic == "feed.national"
    assert UP.target_topic == "shanghai.feed.national"
    assert UP.ingress == "ingress.region.shanghai"
    assert mirrored_resource_id("region.shanghai", "municipal.market.business-licence") == \
        "region.shanghai.municipal_market_business-licence"
    assert DOWN.target_topic == "national.feed.region.shanghai"


def test_mirrored_spec_is_provided_by_the_peer_under_the_mirrored_subject() -> None:
    remote = {"id": "municipal.market.business-licence", "title": "Licences", "provider": "municipal.market",
              "tier": "municipal", "subject": "municipal.market.business-licence-value", "sharing": "unconditional",
              "field_levels": {"uscc": "L1"}, "primary_key": ["uscc"], "locality_field": "district",
              "return_to_locality": True, "report_up": True, "version": 3,
              "quality_rules": [{"field": "uscc", "rule": "uscc", "args": {}},
                                {"field": "uscc", "rule": "reference", "args": {"resource": "municipal.x.y"}}]}
    spec = mirrored_resource_spec(remote, UP)
    assert spec["provider"] == "region.shanghai" and spec["tier"] == "region"
    assert spec["subject"] == "shanghai.municipal.market.business-licence-value"
    assert spec["report_up"] is True and spec["field_levels"] == {"uscc": "L1"}
    assert spec["quality_rules"] == [{"field": "uscc", "rule": "uscc", "args": {}}]  # references name the source's
    assert "locality_field" not in spec and "return_to_locality" not in spec and "version" not in spec


def test_lineage_keeps_the_hops_on_the_other_platform() -> None:
    prior = json.dumps(["municipal.market", "hub", "national"]).encode()
    assert json.loads(continued_lineage(prior, "region.shanghai", "national", "hub")) == [
        "municipal.market", "hub", "national", "region.shanghai", "hub", "national"]


@pytest.mark.parametrize("prior", [b"not json", b'{"a": 1}', json.dumps(["x"] * 100).encode(), b"[1, 2]"])
def test_a_malformed_lineage_is_dropped_not_trusted(prior: bytes) -> None:
    assert json.loads(continued_lineage(prior, "p", "c", "hub")) == ["p", "hub", "c"]


def test_a_crossing_renames_the_resource_and_carries_event_id_and_lineage_only() -> None:
    headers = [(H_RESOURCE, b"municipal.market.business-licence"), (H_EVENT_ID, b"e-1"), (H_GRANT, b"g"),
               (H_LINEAGE, b'["municipal.market", "hub", "national"]')]
    out = crossing_of(b"k", framing.frame(3, b"body"), headers, 123, UP, {3: 30})
    assert out.headers == [(H_RESOURCE, b"region.shanghai.municipal_market_business-licence"), (H_EVENT_ID, b"e-1"),
                           (H_LINEAGE, b'["municipal.market", "hub", "national"]')]
    assert out.value == framing.frame(30, b"body") and out.key == b"k" and out.timestamp_ms == 123


def test_a_keyless_repeat_lands_on_the_partition_of_its_first_copy() -> None:
    assert partition_for(None, b"e-1", 4) == partition_for(None, b"e-1", 4) is not None
    assert partition_for(b"k", b"e-1", 4) is None  # the producer's key hash already does
    assert partition_for(None, b"e-1", 1) is None


def test_mm2_properties_mirror_each_link_with_checkpoints_and_group_offset_sync() -> None:
    props = mm2_properties(config())
    assert props["clusters"] == "national, shanghai"
    assert props["shanghai->national.enabled"] == "true"
    assert props["shanghai->national.topics"] == r"feed\.national"
    assert props["national->shanghai.topics"] == r"feed\.region\.shanghai"
    assert props["emit.checkpoints.enabled"] == props["sync.group.offsets.enabled"] == "true"
    assert props["national.bootstrap.servers"] == "127.0.0.1:9192"
    # a Java properties file reads "\\." as "\.": the topic regex survives
    assert "shanghai->national.topics=feed\\\\.national\n" in properties_text(props)


def test_config_rejects_dotted_aliases_and_unknown_platforms() -> None:
    with pytest.raises(ValueError):
        config(platforms={"sh.a": {"bootstrap": "x", "api": "y", "token": "t"}})
    with pytest.raises(ValueError):
        FederationConfig.model_validate({"platforms": {"shanghai": {"bootstrap": "x", "api": "y", "token": "t"}},
                                         "links": [UP.model_dump()]})


def test_link_status_lag_and_last_transfer() -> None:
    status = link_status(UP, {0: 10, 1: 5}, {0: 12, 1: 2}, [100, 250])
    assert (status.source_end, status.target_end, status.lag, status.last_transfer_ms) == (15, 14, 3, 250)
    assert link_status(UP, {0: 3}, {}, []).last_transfer_ms is None


def test_the_example_federation_file_is_valid() -> None:
    from hub.federation.model import load_federation_config
    from hub.settings import REPO_ROOT

    example = load_federation_config(REPO_ROOT / "config" / "federation.example.yaml")
    assert [link.name for link in example.links] == ["shanghai->national", "national->shanghai"]


def test_a_peer_node_is_national_or_regional() -> None:
    with pytest.raises(ValueError):
        Link(source="a", target="b", export_node="national", peer_node="municipal.health")


def test_mm2_properties_carry_the_hubs_sasl_settings_to_every_cluster() -> None:
    from pydantic import SecretStr

    from hub.broker.kafka_config import java_client_properties
    from hub.settings import Settings

    secure = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                      kafka_username="hub", kafka_password=SecretStr("s3cret"))
    client = java_client_properties(secure)
    assert client["sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="hub" password="s3cret";')
    assert java_client_properties(secure, "${env:HUB_KAFKA_PASSWORD}")["sasl.jaas.config"].endswith(
        'password="${env:HUB_KAFKA_PASSWORD}";')
    assert java_client_properties(Settings()) == {}
    from hub.federation.model import load_federation_config
    from hub.settings import REPO_ROOT

    config = load_federation_config(REPO_ROOT / "config" / "federation.example.yaml")
    props = mm2_properties(config, client)
    for alias in ("shanghai", "national"):
        assert props[f"{alias}.security.protocol"] == "SASL_PLAINTEXT"
        assert props[f"{alias}.sasl.mechanism"] == "SCRAM-SHA-256"
