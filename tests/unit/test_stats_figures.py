"""The exchange figures (docs/domain.md) from counters (pure), and ``/v1/stats`` serving them over a date range."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from hub.api.app import create_api
from hub.registry.service import RegistryService
from hub.settings import Settings
from hub.stats.counts import CountTable, count_key, day_of
from hub.stats.figures import FIGURE_IDS, breakdowns, exchange_figures, figures_by_id, in_range

from .test_control_api import OPERATOR_TOKEN, FakeSchemas, MemoryControl

VAX = "municipal.health.vaccination"
LICENCE = "municipal.market.business-licence"


def audit(action: str, *, ts: int = 1_767_225_600_000, from_tier: str = "municipal", to_tier: str = "municipal",
          direction: str | None = None, resource: str | None = VAX, decision: str = "allow",
          reason: str = "subscription", deliveries: list[dict] | None = None) -> dict:
    record = {"action": action, "ts": ts, "from_tier": from_tier, "to_tier": to_tier, "direction": direction,
              "resource": resource, "decision": decision, "reason": reason}
    if deliveries is not None:
        record["deliveries"] = deliveries
    return record


DAY1 = 1_767_225_600_000  # 2026-01-01 08:00 China time
DAY2 = DAY1 + 86_400_000


def delivery(to_tier: str, direction: str, reason: str = "subscription", decision: str = "allow") -> dict:
    return {"counterparty": "n", "to_tier": to_tier, "direction": direction, "decision": decision, "reason": reason}


def sample_audits() -> list[dict]:
    """Audit records as the hub writes them: an event's publish lists its deliveries and refusals."""
    return [
        audit("publish", reason="accepted", deliveries=[
            delivery("district", "down", "locality-return"), delivery("district", "down"),
            delivery("municipal", "lateral")]),
        audit("publish", resource=LICENCE, reason="accepted", ts=DAY2, deliveries=[
            delivery("region", "regional"), delivery("region", "regional"), delivery("national", "up", "report-up"),
            delivery("district", "down", "locality-return")]),
        audit("call", to_tier="municipal", resource="municipal.big-data.natural-person"),
        audit("call", to_tier="national", resource="national.enterprise-credit", ts=DAY2),
        audit("call", to_tier="national", resource="national.enterprise-credit", ts=DAY2, decision="deny",
              reason="no_grant"),
        audit("deny", from_tier="district", to_tier="municipal", decision="deny", reason="no_grant"),  # as older
        # hubs wrote a refusal: its own record (logs keep them; they count as they did)
        audit("quarantine", resource=None, decision="deny", reason="bad_magic"),
        {"action": "checkpoint", "ts": DAY1},  # not an exchange event
        {"action": "grant", "ts": DAY1},
    ]


def sample_table() -> CountTable:
    table = CountTable()
    table.add(sample_audits())
    return table


def test_a_publish_counts_as_the_separate_records_it_replaces() -> None:
    """The same traffic audited one record per act (the format before ``deliveries``) gives the same table."""
    separate = []
    for record in sample_audits():
        separate.append({k: v for k, v in record.items() if k != "deliveries"})
        for d in record.get("deliveries", ()):
            action = "deliver" if d["decision"] == "allow" else "deny"
            separate.append(audit(action, ts=record["ts"], from_tier=record["from_tier"], to_tier=d["to_tier"],
                                  direction=d["direction"], resource=record["resource"], decision=d["decision"],
                                  reason=d["reason"]))
    table = CountTable()
    table.add(separate)
    assert table == sample_table() and len(separate) == 16
    assert sum(table.counts.values()) == 14  # checkpoint and grant are not exchange events


def test_days_are_china_standard_time() -> None:
    assert day_of(DAY1) == "2026-01-01"
    assert day_of(datetime(2025, 12, 31, 16, 0, tzinfo=UTC)) == "2026-01-01"  # midnight in Shanghai
    assert day_of(datetime(2025, 12, 31, 15, 59, tzinfo=UTC)) == "2025-12-31"
    assert count_key({"action": "checkpoint", "ts": DAY1}) is None


def test_every_domain_figure_with_its_definition() -> None:
    out = exchange_figures(sample_table(), catalogue_by_tier={"municipal": 9, "district": 2, "national": 4})
    values = figures_by_id(out)
    assert tuple(values) == FIGURE_IDS
    assert values == {
        "calls_lateral_municipal": 1,  # the denied call is not a call made
        "records_down": 3,
        "records_regional": 2,
        "calls_to_national": 1,
        "records_up": 1,
        "locality_returns": 2,
        "catalogue_municipal": 9,
        "catalogue_district": 2,
    }
    for figure in out["figures"]:
        assert figure["label"] and figure["definition"] and figure["reported"]
    assert out["from"] is None and out["to"] is None


def test_a_date_range_selects_days_and_catalogue_sizes_stay_current() -> None:
    day1 = figures_by_id(exchange_figures(sample_table(), "2026-01-01", "2026-01-01", {"municipal": 9}))
    assert day1["records_down"] == 2 and day1["records_regional"] == 0 and day1["calls_to_national"] == 0
    assert day1["catalogue_municipal"] == 9 and day1["catalogue_district"] == 0
    day2 = figures_by_id(exchange_figures(sample_table(), first="2026-01-02"))
    assert day2["records_down"] == 1 and day2["records_up"] == 1 and day2["calls_to_national"] == 1
    nothing = exchange_figures(sample_table(), "2027-01-01", "2027-12-31")
    assert all(v in (0, None) for v in figures_by_id(nothing).values())
    assert nothing["counts"]["total"] == 0
    assert figures_by_id(exchange_figures(sample_table()))["catalogue_district"] is None  # no control state given


@pytest.mark.parametrize(("first", "last"), [("2026-13-01", None), ("yesterday", None), ("2026-01-02", "2026-01-01")])
def test_bad_ranges_are_refused(first: str, last: str | None) -> None:
    with pytest.raises(ValueError):
        in_range(sample_table(), first, last)


def test_breakdowns_by_action_direction_tiers_resource_reason_and_day() -> None:
    counts = breakdowns(sample_table())
    assert counts["total"] == 14
    assert counts["by_action"] == {"call": 3, "deliver": 7, "deny": 1, "publish": 2, "quarantine": 1}
    assert counts["by_direction"] == {"down": 3, "lateral": 1, "regional": 2, "up": 1}
    assert counts["by_tier_pair"]["deliver:municipal>district"] == 3
    assert counts["by_tier_pair"]["call:municipal>national"] == 2
    assert counts["by_resource"][LICENCE] == {"deliver": 4, "publish": 1}
    assert counts["by_resource"]["-"] == {"quarantine": 1}
    assert counts["by_reason"]["quarantine/deny/bad_magic"] == 1
    assert counts["by_day"] == {"2026-01-01": 7, "2026-01-02": 7}


# ---------------------------------------------------------------------------------------------- the API


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(bootstrap="127.0.0.1:1")
    control = MemoryControl(settings, FakeSchemas())
    table = sample_table()
    app = create_api(RegistryService(settings), CollectorRegistry(), control=control, operator_token=OPERATOR_TOKEN,
                     exchange_figures=lambda first, last, by_tier: exchange_figures(table, first, last, by_tier))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
        yield test_client


def test_v1_stats_serves_the_figures_for_a_range(client: TestClient) -> None:
    everything = client.get("/v1/stats").json()
    assert "catalogue" in everything
    assert figures_by_id(everything["exchange"])["records_regional"] == 2
    one_day = client.get("/v1/stats", params={"from": "2026-01-02", "to": "2026-01-02"}).json()["exchange"]
    assert one_day["from"] == one_day["to"] == "2026-01-02"
    assert figures_by_id(one_day)["records_down"] == 1
    assert one_day["counts"]["by_day"] == {"2026-01-02": 7}


@pytest.mark.parametrize(("params", "words"), [
    ({"from": "2026-02-30"}, "query from"),
    ({"to": "soon"}, "query to"),
    ({"from": "2026-01-02", "to": "2026-01-01"}, "is after to"),
])
def test_v1_stats_bad_range_is_a_422_with_a_message(client: TestClient, params: dict, words: str) -> None:
    response = client.get("/v1/stats", params=params)
    assert response.status_code == 422, response.text
    assert words in response.json()["message"]


def test_v1_stats_needs_a_token(client: TestClient) -> None:
    assert client.get("/v1/stats", headers={"Authorization": ""}).status_code == 401


def test_snapshots_round_trip_compressed_and_read_plain_json_too() -> None:
    import json as _json

    from hub.stats.counts import CountTable, decode_snapshot, encode_snapshot

    table = CountTable({("2026-11-25", "publish", "municipal", "municipal", "", "r", "allow", "accepted"): 3})
    value = encode_snapshot(42, table, "abc")
    assert value[:1] != b"{" and decode_snapshot(value) == (42, table, "abc")
    plain = _json.dumps({"audit_offset": 7, "chain_head": None, "counts": table.to_json()}).encode()
    assert decode_snapshot(plain) == (7, table, None)


def test_quality_score_per_resource_and_day() -> None:
    """The share of a resource's records accepted, from the publish and quarantine counters (reconcile covers it)."""
    table = CountTable()
    table.add([audit("publish", reason="accepted") for _ in range(9)]
              + [audit("quarantine", decision="deny", reason="resident_id")]
              + [audit("publish", reason="accepted", ts=DAY2)] * 3
              + [audit("quarantine", decision="deny", reason="range", ts=DAY2)]
              + [audit("quarantine", resource=None, decision="deny", reason="bad_magic")])  # names no resource
    quality = exchange_figures(table)["quality"]
    assert list(quality) == [VAX]
    vax = quality[VAX]
    assert (vax["passed"], vax["quarantined"], vax["score"]) == (12, 2, round(12 / 14, 4))
    assert vax["by_day"]["2026-01-01"] == {"passed": 9, "quarantined": 1, "score": 0.9, "rules": {"resident_id": 1}}
    assert vax["by_day"]["2026-01-02"]["score"] == 0.75
    assert exchange_figures(table, "2026-01-02", "2026-01-02")["quality"][VAX]["passed"] == 3


def test_the_stats_tables_print_data_as_text_never_as_markup() -> None:
    """A resource header or rule name is a producer's bytes: text like ``[/x]`` must print, not break rich."""
    from rich.console import Console

    from hub.cli.stats import counts_tables, quality_table

    console = Console(record=True, width=200)
    exchange = {"quality": {"bad[/x]": {"by_day": {"2026-12-07": {"passed": 1, "quarantined": 2, "score": 0.3,
                                                                  "rules": {"r[/b]": 2}}}}},
                "counts": {"by_resource": {"a[/z]": {"publish": 1}}, "by_action": {"x[/y]": 2}}}
    console.print(quality_table(exchange))
    for table in counts_tables(exchange):
        console.print(table)
    text = console.export_text()
    assert all(name in text for name in ("bad[/x]", "r[/b] 2", "a[/z]", "x[/y]"))
