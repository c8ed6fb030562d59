"""Confluent schema references against a real ``hub up``: confluent-kafka's SchemaRegistryClient registers a
schema referencing another subject's, its AvroSerializer/AvroDeserializer round-trip a record, the hub's own
RegistryClient decodes the same bytes, and the registry answers referencedby and 42206 as Confluent does."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT

from .hubproc import HubProcess

pytestmark = pytest.mark.integration


def rec(name: str, *fields: dict[str, object]) -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "com.example", "fields": list(fields)})


ADDRESS = rec("Address", {"name": "street", "type": "string"}, {"name": "city", "type": "string"})
CUSTOMER = rec("Customer", {"name": "id", "type": "long"}, {"name": "address", "type": "com.example.Address"})


def test_confluent_clients_register_and_round_trip_a_schema_with_references(hub: HubProcess) -> None:
    tag = uuid.uuid4().hex[:8]
    address_subject, topic = f"refs-{tag}.address-value", f"refs-{tag}.customers"
    customer_subject = f"{topic}-value"
    registry = SchemaRegistryClient({"url": hub.api, "basic.auth.user.info": f"hub:{hub.token}"})

    address_id = registry.register_schema(address_subject, Schema(ADDRESS, "AVRO"))
    reference = SchemaReference("com.example.Address", address_subject, 1)
    customer_id = registry.register_schema(customer_subject, Schema(CUSTOMER, "AVRO", [reference]))
    assert customer_id != address_id
    fetched = registry.get_schema(customer_id)
    assert [(r.name, r.subject, r.version) for r in fetched.references] == [
        ("com.example.Address", address_subject, 1)
    ]
    latest = registry.get_latest_version(customer_subject)
    assert latest.schema_id == customer_id and len(latest.schema.references) == 1
    found = registry.lookup_schema(customer_subject, Schema(CUSTOMER, "AVRO", [reference]))
    assert found.schema_id == customer_id

    serializer = AvroSerializer(
        registry, None, conf={"auto.register.schemas": False, "use.latest.version": True}
    )
    deserializer = AvroDeserializer(registry)
    ctx = SerializationContext(topic, MessageField.VALUE)
    value = {"id": 42, "address": {"street": "Storgata 1", "city": "Oslo"}}
    data = serializer(value, ctx)
    assert data is not None and framing.split(data)[0] == customer_id
    assert deserializer(data, ctx) == value

    async def hub_decodes() -> dict[str, object]:
        async with RegistryClient(hub.api) as client:
            schema = await client.schema_by_id(customer_id)
            return framing.decode_body(framing.split(data)[1], schema.parsed)

    assert asyncio.run(hub_decodes()) == value

    referenced_by = httpx.get(f"{hub.api}/subjects/{address_subject}/versions/1/referencedby", timeout=10)
    assert referenced_by.json() == [customer_id]
    with pytest.raises(SchemaRegistryError) as refused:
        registry.delete_version(address_subject, 1)
    assert (refused.value.http_status_code, refused.value.error_code) == (422, 42206)
    assert f"subject={address_subject},version=1" in refused.value.error_message

    missing = SchemaReference("com.example.Address", f"refs-{tag}.nowhere-value", 1)
    with pytest.raises(SchemaRegistryError) as unresolved:
        registry.register_schema(f"refs-{tag}.other-value", Schema(CUSTOMER, "AVRO", [missing]))
    assert (unresolved.value.http_status_code, unresolved.value.error_code) == (422, 42201)


async def test_a_catalogued_resource_whose_schema_has_references_flows_through_the_worker(hub: HubProcess) -> None:
    """A catalogue entry whose schema references another subject's type: a record framed by confluent-kafka's
    Producer + AvroSerializer is validated by the worker against the resolved schema and delivered."""
    from confluent_kafka import Producer

    from hub.contract import H_EVENT_ID, H_RESOURCE, feed_topic, ingress_topic

    from .hubproc import TopicReader

    tag = uuid.uuid4().hex[:8]
    provider, consumer = "municipal.market", "municipal.civil-affairs"
    resource = f"{provider}.refs-{tag}"
    address_subject, subject = f"refs-{tag}.address-value", f"{resource}-value"
    customer = rec("Customer", {"name": "id", "type": "string"}, {"name": "address", "type": "com.example.Address"})
    registry = SchemaRegistryClient({"url": hub.api, "basic.auth.user.info": f"hub:{hub.token}"})
    registry.register_schema(address_subject, Schema(ADDRESS, "AVRO"))
    registry.register_schema(subject, Schema(customer, "AVRO", [SchemaReference("com.example.Address",
                                                                               address_subject, 1)]))
    headers = {"Authorization": f"Bearer {hub.token}"}
    async with httpx.AsyncClient(base_url=hub.api, headers=headers, timeout=30) as http:
        created = await http.post("/v1/resources", json={
            "id": resource, "title": "Customers with addresses", "provider": provider, "subject": subject,
            "sharing": "unconditional", "primary_key": ["id"], "field_levels": {"id": "L1", "address": "L1"},
        })
        assert created.status_code == 201, created.text
        granted = await http.post("/v1/grants", json={"resource": resource, "scenario": "market-supervision",
                                                      "consumer": consumer})
        assert granted.status_code == 201 and granted.json()["state"] == "active", granted.text

    serializer = AvroSerializer(registry, None, conf={
        "auto.register.schemas": False, "use.latest.version": True,
        "subject.name.strategy": lambda ctx, record_name: subject,
    })
    value = {"id": f"c-{tag}", "address": {"street": "Huaihai Road 1", "city": "Shanghai"}}
    data = serializer(value, SerializationContext(ingress_topic(provider), MessageField.VALUE))
    reader = await TopicReader(hub.bootstrap).start([feed_topic(consumer)])
    sent: set[bytes] = set()
    try:
        deadline = asyncio.get_running_loop().time() + 90
        got: list = []
        while not got:  # the worker's control view learns the new entry and grant within moments
            event_id = str(uuid.uuid4()).encode()  # a new id each time: an earlier attempt may be quarantined
            sent.add(event_id)
            producer = Producer({"bootstrap.servers": hub.bootstrap})
            producer.produce(ingress_topic(provider), value=data, key=value["id"].encode(),
                             headers=[(H_RESOURCE, resource.encode()), (H_EVENT_ID, event_id)])
            assert producer.flush(30) == 0
            records = await reader.read_until(
                lambda rs: any(dict(r.headers).get(H_EVENT_ID) in sent for r in rs), timeout=10)
            got = [r for r in records if dict(r.headers).get(H_EVENT_ID) in sent]
            assert asyncio.get_running_loop().time() < deadline, "the record never reached the consumer's feed"
    finally:
        await reader.stop()
    delivered = got[0]
    assert AvroDeserializer(registry)(delivered.value, SerializationContext(feed_topic(consumer),
                                                                            MessageField.VALUE)) == value


async def test_referencing_another_departments_subject_is_allowed_writing_to_it_is_not(hub: HubProcess) -> None:
    """Reading is open, so a node may reference another department's subject; subject ownership still holds
    for the referenced subject itself."""
    vaccination = (REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text()
    owned = "municipal.health.vaccination-value"  # bound to municipal.health's catalogue entry
    async with RegistryClient(hub.api, token=hub.token) as operator:
        await operator.register(owned, json.dumps(json.loads(vaccination)))
    async with httpx.AsyncClient(base_url=hub.api, headers={"Authorization": f"Bearer {hub.token}"},
                                 timeout=30) as http:
        issued = await http.post("/v1/nodes/municipal.market/token")
        assert issued.status_code == 201, issued.text
    market = SchemaRegistryClient({"url": hub.api,
                                   "basic.auth.user.info": f"municipal.market:{issued.json()['token']}"})
    tag = uuid.uuid4().hex[:8]
    audit = rec("VaccinationAudit", {"name": "note", "type": "string"},
                {"name": "record", "type": "cn.gov.sh.health.VaccinationRecord"})
    reference = SchemaReference("cn.gov.sh.health.VaccinationRecord", owned, 1)
    assert market.register_schema(f"municipal.market.refs-{tag}-value", Schema(audit, "AVRO", [reference])) > 0
    with pytest.raises(SchemaRegistryError) as refused:
        market.register_schema(owned, Schema('{"type": "string"}', "AVRO"))
    assert refused.value.http_status_code == 403
