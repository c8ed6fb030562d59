"""A small hostile-input run (bench/hostile.py) on the session hub: 5,000 bad records of every kind, interleaved
with good ones; the hub survives, quarantines every bad one with a rule and delivers every good one.
``make hostile`` runs 100,000 on a hub of its own."""

from __future__ import annotations

import pytest

from bench.hostile import run

from .hubproc import HubProcess

pytestmark = pytest.mark.integration


async def test_hostile_records_are_all_quarantined_and_good_ones_delivered(hub: HubProcess) -> None:
    report = await run(hub.bootstrap, hub.api, hub.token, hub.proc.pid, bad=5_000, good_every=10, rare_every=1_000,
                       quiet_s=60, alive=lambda: hub.proc.poll() is None, log=lambda _: None)
    summary = report.summary()
    assert report.alive, hub.log_file.read_text()[-3000:]
    assert report.missing_quarantine == [] and report.missing_delivery == [], summary
    assert report.bad_delivered == [] and report.good_quarantined == [], summary
    assert report.no_rule == 0 and report.quarantined == report.bad >= 4_900 and report.delivered == report.good
    assert {"nesting_too_deep", "length_exceeds_body", "duplicate_header", "too_large"} <= set(report.rules)
    rss = [mb for _, mb in report.rss_mb]
    assert rss[-1] - rss[0] < 200, summary  # MiB: bounded windows and caches only
