"""The exchange figures on the real hub: ``/v1/stats`` equals a count the test makes itself from the feeds,
``hub audit reconcile`` recomputes every counter from the audit log and finds them equal, and ``hub stats`` /
``hub top --once`` show the same figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.contract import H_EVENT_ID
from hub.stats.figures import figures_by_id

from .hubproc import HubProcess, TopicReader, header
from .stats_helpers import FEEDS, VAX, delta, get_stats, numbers, publish_mix, run_cli, settled_stats, wait_until

pytestmark = pytest.mark.integration


async def test_v1_stats_equals_the_feeds_and_reconcile_finds_no_difference(hub: HubProcess, tmp_path: Path) -> None:
    before_stats = await settled_stats(hub)
    before = numbers(before_stats)
    reader = await TopicReader(hub.bootstrap).start([*FEEDS, "quarantine.municipal.health"])
    try:
        good, bad = await publish_mix(hub, n_vax=120, n_licences=60, n_bad=5)

        def ours(records: list) -> list:
            return [r for r in records if (header(r, H_EVENT_ID) or b"").decode() in good.keys() | bad]

        def complete(records: list) -> bool:  # every good event reached its first subscriber, every bad one quarantine
            seen = {(r.topic, (header(r, H_EVENT_ID) or b"").decode()) for r in ours(records)}
            lateral = {e for t, e in seen if t in ("feed.municipal.civil-affairs", "feed.region.js")}
            quarantined = {e for t, e in seen if t.startswith("quarantine.")}
            return lateral >= set(good) and quarantined >= bad

        records = ours(await reader.read_until(complete, timeout=90, quiet=3))
    finally:
        await reader.stop()

    # the test's own count, from what the consumers received (distinct deliveries: at least once on the wire)
    delivered = {(r.topic, (header(r, H_EVENT_ID) or b"").decode()) for r in records}
    feeds = [(topic, event_id) for topic, event_id in delivered if topic.startswith("feed.")]
    down = [(t, e) for t, e in feeds if t.startswith("feed.district.")]
    own_district = [(t, e) for t, e in down if t == f"feed.district.{good[e][1]}"]
    expected = {
        "records_down": len(down),
        "locality_returns": len(own_district),
        "records_up": sum(1 for t, _ in feeds if t == "feed.national"),
        "records_regional": sum(1 for t, _ in feeds if t.startswith("feed.region.")),
        "direction:lateral": sum(1 for t, _ in feeds if t.startswith("feed.municipal.")),
        "action:publish": len(good),
        "action:deliver": len(feeds),
        "action:quarantine": sum(1 for t, _ in delivered if t.startswith("quarantine.")),
    }
    expected["direction:down"] = expected["records_down"]
    expected["direction:up"] = expected["records_up"]
    expected["direction:regional"] = expected["records_regional"]
    # what the routing promises, so the feeds themselves are checked too (a transfer the policy denies would be
    # listed as denied in its event's publish audit, counted as a deny, and reach no feed)
    vax = sum(1 for r, _ in good.values() if r == VAX[1])
    licences = len(good) - vax
    assert expected["records_down"] == expected["locality_returns"] == vax + licences
    assert expected["direction:lateral"] == vax and expected["records_up"] == licences
    assert expected["records_regional"] == 2 * licences and expected["action:quarantine"] == 5

    def moved() -> dict[str, int] | None:
        d = delta(numbers(get_stats(hub)), before)
        return d if all(d.get(k, 0) == v for k, v in expected.items()) else None

    assert await wait_until(moved), (delta(numbers(get_stats(hub)), before), expected)
    after_stats = await settled_stats(hub)
    moved_by = delta(numbers(after_stats), before)
    assert {k: moved_by.get(k, 0) for k in expected} == expected
    assert set(moved_by) - set(expected) <= {"action:deny"}, moved_by  # nothing else moved
    assert after_stats["exchange"]["figures"][0]["definition"]
    by_tier = after_stats["catalogue"]["by_tier"]
    figures = figures_by_id(after_stats["exchange"])
    assert figures["catalogue_municipal"] == by_tier["municipal"] and figures["catalogue_district"] == by_tier.get(
        "district", 0)

    # a range of days: today (China time) holds this test's events, a past year none
    today = after_stats["exchange"]["counts"]["by_day"]
    assert today and sum(today.values()) == after_stats["exchange"]["counts"]["total"]
    past = get_stats(hub, **{"from": "2001-01-01", "to": "2001-12-31"})["exchange"]
    assert past["counts"]["total"] == 0 and figures_by_id(past)["records_down"] == 0

    # every counter recomputed from the audit log equals the durable counts
    reconcile = run_cli(hub, tmp_path, "audit", "reconcile", "--bootstrap", hub.bootstrap, "--registry", hub.api,
                        "--json")
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    result = json.loads(reconcile.stdout)
    assert result["status"] == "equal" and result["differences"] == [] and result["duplicate_count"] == 0
    assert result["counted_total"] == result["recounted_total"] >= after_stats["exchange"]["counts"]["total"] - sum(
        p["uncovered"] for p in result["partitions"])
    table = run_cli(hub, tmp_path, "audit", "reconcile", "--bootstrap", hub.bootstrap, "--registry", hub.api)
    assert table.returncode == 0 and "equal" in table.stdout, table.stdout + table.stderr

    # the CLI views of the same figures
    cli = run_cli(hub, tmp_path, "stats", "--api", hub.api, "--token", hub.token, "--json")
    assert cli.returncode == 0, cli.stderr
    assert figures_by_id(json.loads(cli.stdout)["exchange"]) == figures
    pretty = run_cli(hub, tmp_path, "stats", "--api", hub.api, "--token", hub.token)
    assert "records delivered down the tiers" in pretty.stdout and f"{figures['records_down']:,}" in pretty.stdout
    bad_day = run_cli(hub, tmp_path, "stats", "--api", hub.api, "--token", hub.token, "--from", "2026-02-30")
    assert bad_day.returncode == 2 and "not a day" in bad_day.stderr
    top = run_cli(hub, tmp_path, "top", "--once", "--api", hub.api, "--token", hub.token)
    assert top.returncode == 0, top.stdout + top.stderr
    for words in ("records delivered", "latency", "audit chain", "records delivered down the tiers",
                  f"{figures['records_down']:,}"):
        assert words in top.stdout, words
