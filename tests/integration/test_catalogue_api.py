"""The catalogue, nodes and scenarios on the real hub (``hub up`` on the session broker), through HTTP, the
Confluent registry client and the ``hub`` CLI: seeding, token auth, registry write rights, every bad input's
4xx and message, import idempotence, statistics and metrics, and persistence across a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from hub.broker.manager import free_port
from hub.settings import REPO_ROOT

from .hubproc import HubProcess, start_hub

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "record", "name": "Permit", "namespace": "cn.gov.sh.test", "doc": "A test permit.",
    "fields": [
        {"name": "permit_id", "type": "string", "doc": "id"},
        {"name": "holder_uscc", "type": "string", "doc": "holder"},
        {"name": "district", "type": "string", "doc": "district code"},
        {"name": "issued_on", "type": "string", "doc": "date"},
    ],
}
V2 = {**SCHEMA, "fields": [*SCHEMA["fields"], {"name": "note", "type": ["null", "string"], "default": None,
                                                "doc": "note"}]}


def operator(hub: HubProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {(hub.state_dir / 'operator.token').read_text().strip()}"}


def api(hub: HubProcess, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return httpx.request(method, f"{hub.api}{path}", headers=headers, timeout=30, **kwargs)


def register_node(hub: HubProcess, node_id: str, clearance: str = "L3") -> str:
    response = api(hub, "POST", "/v1/nodes", operator(hub), json={"id": node_id, "title": node_id,
                                                                     "clearance": clearance})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def entry(rid: str, provider: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": rid, "title": "Permits", "provider": provider, "sharing": "authorised",
        "field_levels": {"permit_id": "L1", "holder_uscc": "L2", "district": "L1", "issued_on": "L1"},
        "primary_key": ["permit_id"], "locality_field": "district",
        "quality_rules": [{"field": "holder_uscc", "rule": "uscc", "args": {}}],
    }
    data.update(changes)
    return data


def catalogue_gauge(hub: HubProcess, tier: str) -> float:
    return hub.metrics().get(("hub_catalog_resources", (("tier", tier),)), 0.0)


def run_cli(hub: HubProcess, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HUB_API_PORT=hub.api.rsplit(":", 1)[1], HUB_STATE_DIR=str(hub.state_dir),
               COLUMNS="200")
    env.pop("HUB_TOKEN", None)
    if token:
        env["HUB_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "hub.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120)


# ---------------------------------------------------------------- seed, stats, metrics

def test_the_seed_is_catalogued_counted_and_every_call_needs_a_token(hub: HubProcess) -> None:
    assert api(hub, "GET", "/v1/resources").status_code == 401
    resources = {r["id"]: r for r in api(hub, "GET", "/v1/resources", operator(hub)).json()}
    seed = yaml.safe_load((REPO_ROOT / "config/catalog.seed.yaml").read_text())["resources"]
    assert {e["id"] for e in seed} <= set(resources)
    vaccination = resources["municipal.health.vaccination"]
    assert vaccination["provider"] == "municipal.health" and vaccination["field_levels"]["resident_id"] == "L4"
    nodes = {n["id"] for n in api(hub, "GET", "/v1/nodes", operator(hub)).json()}
    assert len([n for n in nodes if n.startswith("district.")]) >= 16 and {"national", "region.js", "hub"} <= nodes
    scenarios = {s["id"]: s for s in api(hub, "GET", "/v1/scenarios", operator(hub)).json()}
    assert scenarios["vaccination-follow-up"]["legal_basis"]
    stats = api(hub, "GET", "/v1/stats", operator(hub)).json()["catalogue"]
    assert stats["by_tier"]["municipal"] >= 9 and stats["by_sharing"]["none"] >= 1
    assert stats["by_provider"]["national"] >= 2 and stats["resources"] == len(resources)
    assert catalogue_gauge(hub, "municipal") == stats["by_tier"]["municipal"]
    assert catalogue_gauge(hub, "national") == stats["by_tier"]["national"]


# ---------------------------------------------------------------- a provider catalogues a resource

def test_a_provider_registers_its_schema_and_catalogues_it(hub: HubProcess, unique_id: str) -> None:
    provider, other = f"municipal.p{unique_id}", f"municipal.o{unique_id}"
    token, other_token = register_node(hub, provider), register_node(hub, other)
    subject = f"{provider}.permits-value"
    anonymous = SchemaRegistryClient({"url": hub.api})
    with pytest.raises(SchemaRegistryError) as refused:
        anonymous.register_schema(subject, Schema(json.dumps(SCHEMA), "AVRO"))
    assert refused.value.http_status_code == 401
    registry = SchemaRegistryClient({"url": hub.api, "basic.auth.user.info": f"{provider}:{token}"})
    registry.register_schema(subject, Schema(json.dumps(SCHEMA), "AVRO"))
    # an unchanged registration is a lookup: producers with auto.register.schemas need no token for it
    assert anonymous.register_schema(subject, Schema(json.dumps(SCHEMA), "AVRO")) >= 1

    before = catalogue_gauge(hub, "municipal")
    rid = f"{provider}.permits"
    as_other = api(hub, "POST", "/v1/resources", bearer(other_token), json=entry(rid, provider))
    assert as_other.status_code == 403
    assert f"{other} cannot catalogue resources of {provider}" in as_other.json()["message"]
    created = api(hub, "POST", "/v1/resources", bearer(token), json=entry(rid, provider))
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["subject"] == subject
    assert catalogue_gauge(hub, "municipal") == before + 1

    # the subject is now bound to the entry: only its provider and the operator may write it
    other_registry = SchemaRegistryClient({"url": hub.api, "basic.auth.user.info": f"{other}:{other_token}"})
    with pytest.raises(SchemaRegistryError) as forbidden:
        other_registry.register_schema(subject, Schema(json.dumps(V2), "AVRO"))
    assert forbidden.value.http_status_code == 403 and provider in str(forbidden.value)
    registry.register_schema(subject, Schema(json.dumps(V2), "AVRO"))
    assert api(hub, "DELETE", f"/subjects/{subject}").status_code == 401

    # the new field can now be graded; a field the schema lacks cannot
    updated = api(hub, "PUT", f"/v1/resources/{rid}", bearer(token),
                  json=entry(rid, provider, field_levels={**entry(rid, provider)["field_levels"], "note": "L2"}))
    assert updated.status_code == 200 and updated.json()["version"] == 2 and updated.json()["changed"]
    missing = api(hub, "PATCH", f"/v1/resources/{rid}", bearer(token), json={"primary_key": ["permit_no"]})
    assert missing.status_code == 422 and "primary_key: permit_no" in missing.json()["message"]
    listed = api(hub, "GET", "/v1/resources", bearer(other_token), params={"provider": provider}).json()
    assert [(r["id"], r["version"]) for r in listed] == [(rid, 2)]
    history = api(hub, "GET", f"/v1/resources/{rid}/versions", bearer(token)).json()
    assert [v["version"] for v in history] == [1, 2] and "note" not in history[0]["field_levels"]
    retired = api(hub, "DELETE", f"/v1/resources/{rid}", bearer(token))
    assert retired.json()["retired"] and retired.json()["version"] == 3
    assert catalogue_gauge(hub, "municipal") == before


# ---------------------------------------------------------------- bad inputs

def test_every_bad_input_gets_its_4xx_and_a_message(hub: HubProcess, unique_id: str) -> None:
    provider, other = f"municipal.b{unique_id}", f"municipal.c{unique_id}"
    token, other_token = register_node(hub, provider), register_node(hub, other)
    subject = f"{provider}.permits-value"
    register = api(hub, "POST", f"/subjects/{subject}/versions", bearer(token), json={"schema": json.dumps(SCHEMA)})
    assert register.status_code == 200, register.text
    rid = f"{provider}.permits"
    good = entry(rid, provider)
    junk = "a.b" + "c" * 3
    cases: list[tuple[str, str, dict[str, str], dict[str, Any], int, str]] = [
        ("POST", "/v1/resources", {}, {"json": good}, 401, "needs a token"),
        ("POST", "/v1/resources", bearer(f"{junk}.{junk}"), {"json": good}, 401, "not valid"),
        ("POST", "/v1/resources", bearer(other_token), {"json": good}, 403,
         f"{other} cannot catalogue resources of {provider}"),
        ("POST", "/v1/resources", bearer(token), {"json": entry(rid, provider, field_levels={"salary": "L3"})}, 422,
         "field_levels: salary"),
        ("POST", "/v1/resources", bearer(token), {"json": entry(rid, provider, primary_key=["no_such"])}, 422,
         "primary_key: no_such"),
        ("POST", "/v1/resources", bearer(token), {"json": entry(rid, provider, locality_field="district_code")}, 422,
         "locality_field: district_code"),
        ("POST", "/v1/resources", bearer(token),
         {"json": entry(rid, provider, quality_rules=[{"field": "phone", "rule": "required"}])}, 422,
         "quality_rules: phone"),
        ("POST", "/v1/resources", bearer(token), {"json": entry(rid, provider, sharing="none")}, 422,
         "needs a legal_basis"),
        ("POST", "/v1/resources", bearer(token), {"json": entry(f"{provider}.other", provider)}, 422,
         f"{provider}.other-value has no live version in the registry"),
        ("POST", "/v1/resources", bearer(token), {"json": entry(rid, provider, tier="district")}, 422,
         "differs from the tier"),
        ("POST", "/v1/resources", bearer(token), {"json": {**good, "owner": "me"}}, 422, "owner: unknown field"),
        ("POST", "/v1/resources", bearer(token),
         {"content": b'{"id": "x", "provider": ', "headers": {"Content-Type": "application/json"}}, 400,
         "not valid JSON"),
        ("POST", "/v1/resources", bearer(token),
         {"content": json.dumps(good).encode(), "headers": {"Content-Type": "text/plain"}}, 415, "must be JSON"),
        ("POST", "/v1/resources", bearer(token),
         {"content": b"id=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, "must be JSON"),
        ("GET", f"/v1/resources/{provider}.nothing", bearer(token), {}, 404, "not catalogued"),
        ("POST", "/v1/nodes", bearer(token), {"json": {"id": "region.x"}}, 403, "only the hub operator"),
        ("POST", "/v1/nodes", operator(hub), {"json": {"id": "district.310103"}}, 422, "16 district codes"),
        ("POST", "/v1/scenarios", operator(hub), {"json": {"id": f"s{unique_id}"}}, 422, "legal_basis"),
        ("POST", "/v1/scenarios", bearer(token), {"json": {"id": f"s{unique_id}", "legal_basis": "x"}}, 403,
         "only the hub operator"),
    ]
    for method, path, headers, kwargs, status, fragment in cases:
        merged = {**headers, **kwargs.pop("headers", {})}
        response = api(hub, method, path, merged, **kwargs)
        assert response.status_code == status, (method, path, status, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert fragment in response.json()["message"], (fragment, response.text)
    # none of that catalogued anything
    assert api(hub, "GET", f"/v1/resources/{rid}", bearer(token)).status_code == 404
    assert api(hub, "POST", "/v1/resources", bearer(token), json=good).status_code == 201


# ---------------------------------------------------------------- the CLI

def test_cli_import_reports_each_entry_and_re_importing_changes_nothing(
    hub: HubProcess, unique_id: str, tmp_path: Path
) -> None:
    provider = f"municipal.i{unique_id}"
    registered = run_cli(hub, "node", "register", provider, "--title", "Import test", "--clearance", "L3", "--json")
    assert registered.returncode == 0, registered.stderr
    token = json.loads(registered.stdout)["token"]
    (tmp_path / "permit.avsc").write_text(json.dumps(SCHEMA))
    entries = [{**entry(f"{provider}.permits-{i}", provider), "schema_file": "permit.avsc"} for i in range(5)]
    entries.append({**entry(f"{provider}.broken", provider, primary_key=["missing_field"]),
                    "schema_file": "permit.avsc"})
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump({"resources": entries}, allow_unicode=True))

    first = run_cli(hub, "catalog", "import", str(catalogue), "--json", token=token)
    assert first.returncode == 1, first.stderr  # one entry rejected
    report = json.loads(first.stdout)
    assert (report["created"], report["rejected"]) == (5, 1)
    broken = next(e for e in report["entries"] if e["status"] == "rejected")
    assert broken["id"] == f"{provider}.broken" and "primary_key: missing_field" in broken["message"]

    again = run_cli(hub, "catalog", "import", str(catalogue), token=token)
    assert again.returncode == 1
    assert "0 created, 0 updated, 5 unchanged, 1 rejected" in again.stdout
    assert again.stdout.count("unchanged") >= 5 and "missing_field" in again.stdout

    listed = run_cli(hub, "catalog", "list", "--provider", provider, "--json", token=token)
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == [f"{provider}.permits-{i}" for i in range(5)]
    assert all(r["version"] == 1 for r in json.loads(listed.stdout))
    shown = run_cli(hub, "catalog", "show", f"{provider}.permits-0", token=token)
    assert shown.returncode == 0 and "holder_uscc=L2" in shown.stdout
    updated = run_cli(hub, "catalog", "update", f"{provider}.permits-0", "--title", "Renamed", "--json", token=token)
    assert json.loads(updated.stdout)["version"] == 2
    retired = run_cli(hub, "catalog", "retire", f"{provider}.permits-1", token=token)
    assert retired.returncode == 0 and "retired" in retired.stdout
    denied = run_cli(hub, "catalog", "retire", "municipal.health.vaccination", token=token)
    assert denied.returncode == 1 and "cannot retire resources of municipal.health" in denied.stderr

    scenario = f"cli-test-{unique_id}"
    made = run_cli(hub, "scenario", "create", scenario, "--legal-basis", "《上海市数据条例》", "--json")
    assert made.returncode == 0 and json.loads(made.stdout)["version"] == 1
    assert scenario in run_cli(hub, "scenario", "list").stdout
    nodes = json.loads(run_cli(hub, "node", "list", "--json").stdout)
    assert provider in {n["id"] for n in nodes} and all("token" not in n for n in nodes)
    assert run_cli(hub, "node", "show", provider, "--json", token=token).returncode == 0


# ---------------------------------------------------------------- restart

def test_everything_survives_a_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A hub of its own (stopped and started again) on the session broker's control topics."""
    port, uid = free_port(), uuid.uuid4().hex[:8]
    first = start_hub(kafka_bootstrap, tmp_path / "state", port, f"hub-restart-{uid}")
    provider = f"municipal.r{uid}"
    rid = f"{provider}.permits"
    try:
        token = register_node(first, provider)
        subject = f"{rid}-value"
        api(first, "POST", f"/subjects/{subject}/versions", bearer(token), json={"schema": json.dumps(SCHEMA)})
        assert api(first, "POST", "/v1/resources", bearer(token), json=entry(rid, provider)).status_code == 201
        assert api(first, "PATCH", f"/v1/resources/{rid}", bearer(token), json={"title": "v2"}).status_code == 200
        scenario = {"id": f"restart-{uid}", "legal_basis": "a law"}
        assert api(first, "POST", "/v1/scenarios", operator(first), json=scenario).status_code == 201
        before = api(first, "GET", "/v1/stats", operator(first)).json()
        seeded = api(first, "GET", "/v1/resources/municipal.health.vaccination", bearer(token)).json()
    finally:
        assert first.stop() == 0
    second = start_hub(kafka_bootstrap, tmp_path / "state", port, f"hub-restart-{uid}")
    try:
        history = api(second, "GET", f"/v1/resources/{rid}/versions", bearer(token))
        assert history.status_code == 200, history.text  # the node's token still authenticates
        assert [(v["version"], v["title"]) for v in history.json()] == [(1, "Permits"), (2, "v2")]
        assert api(second, "GET", f"/v1/scenarios/restart-{uid}", bearer(token)).status_code == 200
        assert api(second, "GET", "/v1/stats", operator(second)).json()["catalogue"] == before["catalogue"]
        # seeding again changed nothing
        assert api(second, "GET", "/v1/resources/municipal.health.vaccination", bearer(token)).json() == seeded
        assert catalogue_gauge(second, "municipal") == before["catalogue"]["by_tier"]["municipal"]
    finally:
        assert second.stop() == 0


# ---------------------------------------------------------------- the worker's view

async def test_a_control_view_in_another_process_follows_the_api(hub: HubProcess, unique_id: str) -> None:
    """What a `hub worker` does: tail the control topics, decode through the registry, wait for changes."""
    from hub.control.view import ControlView
    from hub.policy.grants import GrantIndex
    from hub.registry.client import RegistryClient
    from hub.settings import Settings

    async with RegistryClient(hub.api) as registry:
        view = ControlView(Settings(bootstrap=hub.bootstrap), registry)
        await view.start()
        try:
            snap = view.snapshot()
            assert snap.version == view.version > 0
            assert snap.config.resource("municipal.health.vaccination") is not None
            assert {s.id for s in snap.config.subscriptions} >= {"seed-civil-vaccination", "seed-pudong-vaccination"}
            index = GrantIndex(snap.grants)
            assert index.get("seed-pudong-vaccination").row_scope == "own_district"  # type: ignore[union-attr]
            assert "vaccination-follow-up" in snap.scenarios

            provider = f"municipal.v{unique_id}"
            token = register_node(hub, provider)
            rid = f"{provider}.permits"
            api(hub, "POST", f"/subjects/{rid}-value/versions", bearer(token), json={"schema": json.dumps(SCHEMA)})
            assert api(hub, "POST", "/v1/resources", bearer(token), json=entry(rid, provider)).status_code == 201
            version = await view.sync(timeout=15)
            assert version >= snap.version + 2  # the node, then the entry
            fresh = view.snapshot()
            assert fresh.config.node(provider) is not None and fresh.config.resource(rid) is not None
            assert snap.config.resource(rid) is None  # snapshots are immutable
            waiter = view.wait_for(view.version + 1, timeout=15)
            assert api(hub, "DELETE", f"/v1/resources/{rid}", bearer(token)).status_code == 200
            await waiter
            assert view.snapshot().config.resource(rid) is None and view.state.entry(rid).retired  # type: ignore[union-attr]
        finally:
            await view.stop()
