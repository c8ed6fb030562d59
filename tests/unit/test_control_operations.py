"""Control-plane operations (pure): who may do what, and every validation rule of a catalogue entry, with the
message a user sees; tokens; import idempotence; the seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.contract import AUDIT_SUBJECT, CATALOG_TOPIC, GRANTS_TOPIC, NODES_TOPIC, SCENARIOS_TOPIC
from hub.control import grants as grant_ops
from hub.control import operations as ops
from hub.control import tokens
from hub.control.errors import Conflict, ControlError, Forbidden, Invalid, NotFound
from hub.control.seed import load_seed, seed_changes
from hub.control.state import ControlState, NodeEntry
from hub.settings import Settings

NOW = 1_700_000_000_000
FIELDS = frozenset({"record_id", "resident_id", "name", "district", "dose_number"})
SUBJECT = "municipal.health.vaccination-value"


def lookup(subject: str) -> ops.SchemaInfo | None:
    known = {SUBJECT: FIELDS, "municipal.health.other-value": FIELDS, "municipal.market.licence-value": FIELDS}
    return ops.SchemaInfo(subject, 1, 7, known[subject]) if subject in known else None


def state_with_nodes() -> ControlState:
    state = ControlState()
    for node_id in ("hub", "municipal.health", "municipal.market", "district.310115", "national"):
        state.apply_node(node_id, NodeEntry(id=node_id, created_at=NOW, updated_at=NOW))
    return state


def spec(**changes: object) -> ops.ResourceSpec:
    data: dict = {
        "id": "municipal.health.vaccination", "title": "Vaccination", "provider": "municipal.health",
        "field_levels": {"record_id": "L1", "resident_id": "L4", "name": "L3", "district": "L1"},
        "primary_key": ["record_id"], "locality_field": "district", "return_to_locality": True,
        "quality_rules": [{"field": "record_id", "rule": "required"},
                          {"field": "dose_number", "rule": "range", "args": {"min": 1, "max": 10}}],
    }
    data.update(changes)
    return ops.ResourceSpec.model_validate(data)


def created(state: ControlState, **changes: object) -> ControlState:
    entry = ops.create_resource(state, spec(**changes), "municipal.health", NOW, lookup)
    state.apply_catalog(entry.key, entry)
    return state


def refused(kind: type[ControlError], match: str, call, *args, **kwargs) -> ControlError:  # noqa: ANN001
    with pytest.raises(kind, match=match) as info:
        call(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------- tokens

def test_tokens_verify_only_themselves_and_never_show_in_repr() -> None:
    first, second = tokens.issue(), tokens.issue()
    assert tokens.verify(first.token, first.token_hash)
    assert not tokens.verify(second.token, first.token_hash)
    assert not tokens.verify(first.token + "x", first.token_hash)
    assert first.token_id == first.token.split(".")[0] and first.token not in first.token_hash
    assert first.token not in repr(first)
    for broken in (None, "", "md5$00$11", "sha256$zz$11", "sha256$00"):
        assert not tokens.verify(first.token, broken)
    for malformed in ("", "no-dot", ".secret", "short.secret"):
        assert tokens.split(malformed) is None


# ---------------------------------------------------------------- nodes

def test_only_the_operator_registers_nodes_and_each_gets_a_token() -> None:
    state = state_with_nodes()
    token = tokens.issue()
    entry = ops.register_node(state, ops.NodeSpec(id="region.js", title="Jiangsu"), "hub", NOW, token)
    assert entry.tier == "region" and entry.token_id == token.token_id and entry.token_hash == token.token_hash
    refused(Forbidden, "only the hub operator can register nodes", ops.register_node, state,
            ops.NodeSpec(id="region.js"), "municipal.health", NOW, token)


@pytest.mark.parametrize(("node_id", "kind", "match"), [
    ("municipal.health", Conflict, "already registered"),
    ("hub", Conflict, "operator token file"),
    ("Municipal.Health", Invalid, "invalid node id"),
    ("district.310102", Invalid, "not one of Shanghai's 16 district codes"),
    ("district.31011", Invalid, "invalid node id"),
    ("province.js", Invalid, "invalid node id"),
])
def test_bad_node_registrations(node_id: str, kind: type[ControlError], match: str) -> None:
    refused(kind, match, ops.register_node, state_with_nodes(), ops.NodeSpec(id=node_id), "hub", NOW, tokens.issue())


def test_tokens_rotate_by_the_node_itself_or_the_operator() -> None:
    state = state_with_nodes()
    token = tokens.issue()
    assert ops.rotate_token(state, "national", "national", NOW, token).token_id == token.token_id
    assert ops.rotate_token(state, "national", "hub", NOW, token).updated_by == "hub"
    refused(Forbidden, "acts only as itself", ops.rotate_token, state, "national", "municipal.health", NOW, token)
    refused(Invalid, "operator_token_file", ops.rotate_token, state, "hub", "hub", NOW, token)
    refused(NotFound, "no registered node", ops.rotate_token, state, "region.zj", "hub", NOW, token)


def test_removing_a_node_drops_its_token_and_re_registering_revives_it() -> None:
    state = state_with_nodes()
    removed = ops.remove_node(state, "national", "hub", NOW + 1)
    assert removed.removed and removed.token_hash is None
    state.apply_node("national", removed)
    refused(NotFound, "no registered node", ops.remove_node, state, "national", "hub", NOW)
    revived = ops.register_node(state, ops.NodeSpec(id="national"), "hub", NOW + 2, tokens.issue())
    assert not revived.removed and revived.created_at == NOW
    refused(Invalid, "cannot be removed", ops.remove_node, state, "hub", "hub", NOW)
    refused(Forbidden, "only the hub operator", ops.remove_node, state, "municipal.market", "municipal.health", NOW)


def state_with_grants() -> ControlState:
    """municipal.health provides vaccination (unconditional) and records (authorised); municipal.market provides
    licence. Grants: national on vaccination (active), district on records (requested), health on licence
    (active), district on licence (active, expired by time), national on licence (active, unrelated)."""
    state = created(state_with_nodes())
    created(state, id="municipal.health.records", subject="municipal.health.other-value", sharing="authorised")
    licence = ops.create_resource(state, spec(id="municipal.market.licence", provider="municipal.market",
                                              subject="municipal.market.licence-value"), "municipal.market", NOW,
                                  lookup)
    state.apply_catalog(licence.key, licence)
    scenario = ops.create_scenario(state, ops.ScenarioSpec(id="follow-up", legal_basis="a law"), "hub", NOW)
    state.apply_scenario("follow-up", scenario)
    for consumer, resource, valid_to in (
        ("national", "municipal.health.vaccination", None),
        ("district.310115", "municipal.health.records", None),
        ("municipal.health", "municipal.market.licence", None),
        ("district.310115", "municipal.market.licence", NOW + 10),
        ("national", "municipal.market.licence", None),
    ):
        request = grant_ops.GrantRequest(resource=resource, scenario="follow-up", consumer=consumer, valid_to=valid_to)
        grant = grant_ops.request_grant(state, request, "hub", NOW)
        state.apply_grant(grant.id, grant)
    return state


def test_removing_a_node_ends_its_grants_as_consumer_and_as_provider_and_retires_its_entries() -> None:
    state = state_with_grants()
    by_pair = {(g.consumer, g.resource): g for g in state.grants.values()}
    assert by_pair[("district.310115", "municipal.health.records")].state == "requested"
    removal = grant_ops.node_removal(state, "municipal.health", "hub", NOW + 100)
    assert removal.node.removed and removal.node.token_hash is None and removal.node.updated_at == NOW + 100
    ended = {(g.consumer, g.resource): g for g in removal.grants}
    assert set(ended) == {  # as provider (vaccination, records) and as consumer (licence); not others' grants
        ("national", "municipal.health.vaccination"), ("district.310115", "municipal.health.records"),
        ("municipal.health", "municipal.market.licence")}
    assert ended[("national", "municipal.health.vaccination")].state == "revoked"
    assert ended[("municipal.health", "municipal.market.licence")].state == "revoked"
    assert ended[("district.310115", "municipal.health.records")].state == "denied"  # requested: never granted
    for grant in removal.grants:
        assert (grant.reason, grant.decided_by, grant.updated_at) == ("node removed", "hub", NOW + 100)
        assert grant.id == by_pair[(grant.consumer, grant.resource)].id  # a new version, not a new grant
    assert sorted((e.id, e.version, e.retired) for e in removal.retired) == [
        ("municipal.health.records", 2, True), ("municipal.health.vaccination", 2, True)]
    assert all(e.updated_by == "hub" for e in removal.retired)

    for grant in removal.grants:
        state.apply_grant(grant.id, grant)
    for entry in removal.retired:
        state.apply_catalog(entry.key, entry)
    state.apply_node("municipal.health", removal.node)
    # its old token authenticates no more, the history stays: every version of its entries, the node itself
    assert state.node_by_token_id(removal.node.token_id or "") is None and state.node("municipal.health") is None
    assert state.nodes["municipal.health"].removed
    assert [e.version for e in state.history("municipal.health.vaccination")] == [1, 2]
    assert [e.id for e in state.entries()] == ["municipal.market.licence"]
    request = grant_ops.GrantRequest(resource="municipal.health.vaccination", scenario="follow-up",
                                     consumer="national", mode="call")
    refused(Conflict, "is retired", grant_ops.request_grant, state, request, "hub", NOW + 200)
    # grants of other nodes are untouched; an expired one is left to the expiry job
    assert by_pair[("national", "municipal.market.licence")] == state.grants[
        by_pair[("national", "municipal.market.licence")].id]
    assert grant_ops.node_removal(state_with_grants(), "district.310115", "hub", NOW + 100).grants == (
        by_pair[("district.310115", "municipal.health.records")].model_copy(update={
            "state": "denied", "decided_by": "hub", "reason": "node removed", "updated_at": NOW + 100}),)
    refused(NotFound, "no registered node", grant_ops.node_removal, state, "municipal.health", "hub", NOW)
    refused(Forbidden, "only the hub operator", grant_ops.node_removal, state_with_grants(), "national",
            "municipal.market", NOW)


def test_node_updates() -> None:
    state = state_with_nodes()
    changed = ops.update_node(state, "national", ops.NodePatch(clearance="L4"), "hub", NOW + 5)
    assert changed is not None and changed.clearance == "L4" and changed.updated_at == NOW + 5
    assert ops.update_node(state, "national", ops.NodePatch(clearance="L2"), "hub", NOW) is None
    refused(Forbidden, "operator", ops.update_node, state, "national", ops.NodePatch(), "national", NOW)


# ---------------------------------------------------------------- scenarios

def test_scenarios_are_operator_managed_and_versioned() -> None:
    state = ControlState()
    sspec = ops.ScenarioSpec(id="follow-up", legal_basis="a law")
    entry = ops.create_scenario(state, sspec, "hub", NOW)
    assert entry.version == 1 and entry.scenario.legal_basis == "a law"
    state.apply_scenario("follow-up", entry)
    refused(Conflict, "already registered", ops.create_scenario, state, sspec, "hub", NOW)
    refused(Forbidden, "only the hub operator", ops.create_scenario, ControlState(), sspec, "national", NOW)
    newer = ops.update_scenario(state, "follow-up", ops.ScenarioPatch(title="Follow-up"), "hub", NOW)
    assert newer is not None and newer.version == 2
    assert ops.update_scenario(state, "follow-up", ops.ScenarioPatch(legal_basis="a law"), "hub", NOW) is None
    refused(NotFound, "no scenario", ops.update_scenario, state, "other", ops.ScenarioPatch(), "hub", NOW)
    with pytest.raises(ValueError, match="legal_basis"):
        ops.ScenarioSpec(id="x", legal_basis="   ")
    with pytest.raises(ValueError, match="slug"):
        ops.ScenarioSpec(id="Follow Up", legal_basis="law")


# ---------------------------------------------------------------- catalogue

def test_a_provider_catalogues_its_own_resource() -> None:
    entry = ops.create_resource(state_with_nodes(), spec(), "municipal.health", NOW, lookup)
    assert entry.version == 1 and entry.updated_by == "municipal.health" and not entry.retired
    assert entry.resource.tier == "municipal" and entry.resource.subject == SUBJECT


def test_the_operator_may_catalogue_for_a_provider() -> None:
    assert ops.create_resource(state_with_nodes(), spec(), "hub", NOW, lookup).updated_by == "hub"


def test_a_provider_cannot_catalogue_as_another_node() -> None:
    error = refused(Forbidden, "municipal.market cannot catalogue resources of municipal.health", ops.create_resource,
                    state_with_nodes(), spec(), "municipal.market", NOW, lookup)
    assert error.status == 403 and "acts only as itself" in error.message


@pytest.mark.parametrize(("changes", "code", "match"), [
    ({"provider": "municipal.planning"}, "invalid_resource_id", "must be <provider>.<name>"),
    ({"id": "municipal.planning.x", "provider": "municipal.planning"}, "unknown_provider",
     "municipal.planning is not a registered node"),
    ({"id": "municipal.health.Bad Name"}, "invalid_resource_id", "lowercase"),
    ({"id": "municipal.health.x@2"}, "invalid_resource_id", "<provider>.<name>"),
    ({"provider": "nobody"}, "invalid_provider", "invalid node id"),
    ({"tier": "district"}, "tier_mismatch", "differs from the tier of provider municipal.health"),
    ({"sharing": "none"}, "legal_basis_required", "sharing 'none'.*needs a legal_basis"),
    ({"sharing": "none", "legal_basis": "  "}, "legal_basis_required", "legal_basis"),
    ({"subject": AUDIT_SUBJECT}, "reserved_subject", "reserved"),
    ({"subject": "municipal.health.missing-value"}, "unknown_subject",
     "municipal.health.missing-value has no live version in the registry"),
    ({"field_levels": {"record_id": "L1", "phone": "L3"}}, "invalid_entry", r"field_levels: phone\..*Its fields"),
    ({"primary_key": ["id"]}, "invalid_entry", "primary_key: id"),
    ({"primary_key": ["record_id", "record_id"]}, "invalid_entry", "repeats"),
    ({"locality_field": "district_code"}, "invalid_entry", "locality_field: district_code"),
    ({"quality_rules": [{"field": "phone", "rule": "required"}]}, "invalid_entry", "quality_rules: phone"),
    ({"quality_rules": [{"field": "name", "rule": "spellcheck"}]}, "invalid_entry", "'spellcheck' .* unknown"),
    ({"quality_rules": [{"field": "dose_number", "rule": "range"}]}, "invalid_entry", "needs args min and/or max"),
    ({"quality_rules": [{"field": "dose_number", "rule": "range", "args": {"min": 5, "max": 1}}]}, "invalid_entry",
     "above max"),
    ({"quality_rules": [{"field": "dose_number", "rule": "range", "args": {"min": "one"}}]}, "invalid_entry",
     "must be numbers"),
    ({"quality_rules": [{"field": "name", "rule": "regex", "args": {"pattern": "("}}]}, "invalid_entry",
     "does not compile"),
    ({"quality_rules": [{"field": "name", "rule": "enum", "args": {"values": []}}]}, "invalid_entry",
     "at least one value"),
    ({"quality_rules": [{"field": "name", "rule": "required", "args": {"x": 1}}]}, "invalid_entry", "takes no args"),
    ({"quality_rules": [{"field": "name", "rule": "after", "args": {"field": "started"}}]}, "invalid_entry",
     "quality_rules: started"),  # the other field of a cross-field rule must be in the schema too
    ({"quality_rules": [{"field": "site_uscc", "rule": "reference", "args": {"resource": "municipal.x.y"}}]},
     "invalid_entry", "municipal.x.y is not catalogued"),
    ({"quality_rules": [{"field": "name", "rule": "date_range", "args": {"min": "2020-02-30"}}]}, "invalid_entry",
     "not a date"),
    ({"locality_field": None}, "invalid_entry", "return_to_locality needs a locality"),
])
def test_invalid_entries_say_what_is_wrong(changes: dict, code: str, match: str) -> None:
    error = refused(Invalid, match, ops.create_resource, state_with_nodes(), spec(**changes), "hub", NOW, lookup)
    assert error.code == code and error.status == 422


def test_every_missing_field_is_named_at_once() -> None:
    bad = spec(field_levels={"nope": "L1"}, primary_key=["gone"], locality_field="where",
               quality_rules=[{"field": "absent", "rule": "required"}])
    message = refused(Invalid, "not in the schema", ops.create_resource, state_with_nodes(), bad, "hub", NOW,
                      lookup).message
    for part in ("field_levels: nope", "primary_key: gone", "locality_field: where", "quality_rules: absent",
                 "version 1", "dose_number"):
        assert part in message


def test_locality_from_resident_id_uses_the_resident_id_field() -> None:
    ok = spec(locality_field=None, locality_from_resident_id=True, return_to_locality=False)
    assert ops.create_resource(state_with_nodes(), ok, "hub", NOW, lookup).resource.locality_from_resident_id


def test_a_subject_belongs_to_one_provider() -> None:
    state = created(state_with_nodes())
    other = spec(id="municipal.market.licence", provider="municipal.market", subject=SUBJECT)
    refused(Conflict, "bound to catalogue entries of municipal.health", ops.create_resource, state, other, "hub", NOW,
            lookup)
    # the same provider may bind a second entry to it
    assert ops.create_resource(state, spec(id="municipal.health.other", subject=SUBJECT), "hub", NOW, lookup)


def test_updates_make_versions_and_keep_history_rules() -> None:
    state = created(state_with_nodes())
    rid = "municipal.health.vaccination"
    refused(Conflict, "already catalogued", ops.create_resource, state, spec(), "municipal.health", NOW, lookup)
    assert ops.update_resource(state, rid, spec(), "municipal.health", NOW, lookup) is None  # equal: no version
    newer = ops.update_resource(state, rid, spec(title="Vaccinations"), "municipal.health", NOW + 1, lookup)
    assert newer is not None and newer.version == 2 and newer.resource.title == "Vaccinations"
    refused(Forbidden, "acts only as itself", ops.update_resource, state, rid, spec(title="x"), "municipal.market",
            NOW, lookup)
    refused(Invalid, "differs from the path", ops.update_resource, state, rid, spec(id="municipal.health.other"),
            "hub", NOW, lookup)
    refused(Invalid, "cannot change", ops.update_resource, state, rid,
            spec(id=rid, provider="municipal.market"), "hub", NOW, lookup)
    refused(NotFound, "not catalogued", ops.update_resource, state, "municipal.health.none", spec(), "hub", NOW,
            lookup)


def test_patches_merge_onto_the_current_version() -> None:
    state = created(state_with_nodes())
    rid = "municipal.health.vaccination"
    patched = ops.patch_resource(state, rid, ops.ResourcePatch(sharing="authorised"), "municipal.health", NOW, lookup)
    assert patched is not None and patched.resource.sharing == "authorised" and patched.resource.title == "Vaccination"
    assert ops.patch_resource(state, rid, ops.ResourcePatch(title="Vaccination"), "hub", NOW, lookup) is None
    refused(Invalid, "legal_basis", ops.patch_resource, state, rid, ops.ResourcePatch(sharing="none"), "hub", NOW,
            lookup)


def test_retiring_is_a_version_and_a_retired_entry_can_be_catalogued_again() -> None:
    state = created(state_with_nodes())
    rid = "municipal.health.vaccination"
    refused(Forbidden, "cannot retire", ops.retire_resource, state, rid, "national", NOW)
    retired = ops.retire_resource(state, rid, "municipal.health", NOW)
    assert retired.version == 2 and retired.retired
    state.apply_catalog(retired.key, retired)
    refused(Conflict, "retired in version 2", ops.retire_resource, state, rid, "hub", NOW)
    refused(Conflict, "retired", ops.update_resource, state, rid, spec(title="x"), "hub", NOW, lookup)
    again = ops.create_resource(state, spec(), "municipal.health", NOW, lookup)
    assert again.version == 3 and not again.retired


def test_import_reports_each_entry_and_changes_nothing_the_second_time() -> None:
    state = state_with_nodes()
    items = [
        spec().model_dump(),
        spec(id="municipal.health.other", subject="municipal.health.other-value").model_dump(),
        {**spec().model_dump(), "id": "municipal.market.licence", "provider": "municipal.market",
         "subject": "municipal.market.licence-value"},
        {**spec().model_dump(), "id": "municipal.health.bad", "subject": "municipal.health.bad-value"},
        {"id": "municipal.health.x", "provider": "municipal.health", "colour": "blue"},
        "not an object",
        {**spec().model_dump(), "title": "a second version in the same import"},
    ]
    outcomes, entries = ops.import_resources(state, items, "municipal.health", NOW, lookup)
    assert [o.status for o in outcomes] == ["created", "created", "rejected", "rejected", "rejected", "rejected",
                                            "updated"]
    assert "acts only as itself" in outcomes[2].message and outcomes[2].status_code == 403
    assert "has no live version in the registry" in outcomes[3].message and outcomes[3].status_code == 422
    assert "colour: unknown field" in outcomes[4].message
    assert "not an object" in outcomes[5].message and outcomes[5].id is None
    assert outcomes[6].version == 2
    # every version is written, in order: the history has no gap
    assert [(e.id, e.version) for e in entries] == [("municipal.health.vaccination", 1),
                                                    ("municipal.health.other", 1),
                                                    ("municipal.health.vaccination", 2)]
    for e in entries:
        state.apply_catalog(e.key, e)
    # importing the catalogue as it now is (one item per id) changes nothing
    current = [items[1], items[6]]
    again, none = ops.import_resources(state, current, "municipal.health", NOW, lookup)
    assert [o.status for o in again] == ["unchanged", "unchanged"] and none == []
    assert [o.version for o in again] == [1, 2]


def test_filters() -> None:
    state = created(state_with_nodes())
    entry = ops.create_resource(state, spec(id="municipal.health.other", subject="municipal.health.other-value",
                                            sharing="none", legal_basis="law", description="Dose records"),
                                "hub", NOW, lookup)
    state.apply_catalog(entry.key, entry)
    entries = state.entries()
    assert [e.id for e in ops.filter_entries(entries, sharing="none")] == ["municipal.health.other"]
    assert [e.id for e in ops.filter_entries(entries, text="DOSE")] == ["municipal.health.other"]
    assert len(ops.filter_entries(entries, tier="municipal", provider="municipal.health")) == 2
    assert ops.filter_entries(entries, tier="district") == []


# ---------------------------------------------------------------- the seed

def test_the_seed_is_complete_and_idempotent() -> None:
    seed = load_seed(Settings().seed_config)
    fields: dict[str, frozenset[str]] = {}
    for resource in seed.config.resources:
        path = resource.schema_path()
        assert path is not None
        fields[resource.subject] = ops.schema_fields(__import__("json").loads(Path(path).read_text()))

    def seed_lookup(subject: str) -> ops.SchemaInfo | None:
        return ops.SchemaInfo(subject, 1, 1, fields[subject]) if subject in fields else None

    state = ControlState()
    changes, skipped = seed_changes(state, seed, NOW, seed_lookup)
    assert skipped == []
    by_topic: dict[str, int] = {}
    for topic, entity in changes:
        by_topic[topic] = by_topic.get(topic, 0) + 1
        key = entity.key if topic == CATALOG_TOPIC else entity.id
        state.apply(topic, key, entity)
    assert by_topic == {NODES_TOPIC: len(seed.config.nodes), SCENARIOS_TOPIC: len(seed.scenarios),
                        CATALOG_TOPIC: len(seed.config.resources), GRANTS_TOPIC: len(seed.config.subscriptions)}
    assert all(g.state == "active" and g.mode == "subscribe" for g in state.grants.values())
    assert state.grants["seed-pudong-vaccination"].row_scope == "own_district"
    assert {g.scenario for g in state.grants.values()} <= set(state.scenarios)
    assert seed_changes(state, seed, NOW + 1, seed_lookup) == ([], [])
    # an entry changed through the API is not overwritten by the seed
    rid = "municipal.health.vaccination"
    newer = state.entry(rid).model_copy(update={"version": 2})
    state.apply_catalog(newer.key, newer)
    assert seed_changes(state, seed, NOW + 2, seed_lookup) == ([], [])


def test_the_seed_skips_what_it_cannot_catalogue() -> None:
    seed = load_seed(Settings().seed_config)
    changes, skipped = seed_changes(ControlState(), seed, NOW, lambda subject: None)
    assert not any(topic in (CATALOG_TOPIC, GRANTS_TOPIC) for topic, _ in changes)
    assert any("has no live version in the registry" in reason for reason in skipped)
    assert any(reason.startswith("subscription seed-") for reason in skipped)


def test_the_process_token_comes_from_the_option_the_setting_or_the_operator_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUB_TOKEN", raising=False)
    settings = Settings(state_dir=tmp_path)
    assert tokens.process_token(settings) is None
    settings.operator_token_file.write_text("operator\n")
    assert tokens.process_token(settings) == "operator"
    assert tokens.process_token(Settings(state_dir=tmp_path, token="node.token")) == "node.token"
    assert tokens.process_token(Settings(state_dir=tmp_path, token="node.token"), " explicit ") == "explicit"


def test_recursive_schemas_are_found() -> None:
    from hub.control.operations import is_recursive

    flat = {"type": "record", "name": "R", "namespace": "a", "fields": [
        {"name": "x", "type": ["null", {"type": "record", "name": "Inner", "fields": [{"name": "y", "type": "long"}]}]},
        {"name": "z", "type": {"type": "array", "items": "a.Inner"}}]}
    assert not is_recursive(flat)
    linked = {"type": "record", "name": "Node", "namespace": "a", "fields": [
        {"name": "next", "type": ["null", "Node"]}]}
    assert is_recursive(linked)
    deep = {"type": "record", "name": "Tree", "namespace": "a", "fields": [
        {"name": "kids", "type": {"type": "array", "items": {"type": "record", "name": "Kid", "fields": [
            {"name": "sub", "type": {"type": "map", "values": "a.Tree"}}]}}}]}
    assert is_recursive(deep)


def test_a_recursive_schema_cannot_be_catalogued() -> None:
    def recursive(subject: str) -> ops.SchemaInfo | None:
        return ops.SchemaInfo(subject, 1, 7, FIELDS, recursive=True)

    refused(ops.Invalid, "recursive", ops.create_resource, state_with_nodes(), spec(), "municipal.health", NOW,
            recursive)
    # never delivered, so never masked: a "none" entry may have one
    ops.create_resource(state_with_nodes(), spec(sharing="none", legal_basis="a law"), "municipal.health", NOW,
                        recursive)
