"""``hub top``'s pure computation and rendering, and Faust's Prometheus sensors with bounded labels."""

from __future__ import annotations

import io
import types

import faust
import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from hub.cli.top import Sample, buckets, frame, histogram_quantile, parse_metrics, render
from hub.contract import AUDIT_TOPIC
from hub.metrics.bundle import HubMetrics
from hub.metrics.faust_sensors import (
    BoundedPrometheusMonitor,
    RegistryCollector,
    install_faust_sensors,
    topic_label,
)


def exposition(delivered_down: int, latencies: list[float], quarantined: int = 0, chain_ok: int = 1) -> str:
    registry = CollectorRegistry()
    m = HubMetrics.create(registry)
    m.records_delivered.labels("down").inc(delivered_down)
    m.events.labels("deliver", "municipal", "district", "ok").inc(delivered_down)
    if quarantined:
        m.quarantined.labels("bad_magic").inc(quarantined)
        m.events.labels("publish", "municipal", "municipal", "quarantined").inc(quarantined)
    for value in latencies:
        m.latency.observe(value)
    m.catalog_resources.labels("municipal").set(9)
    m.consumer_lag.set(12)
    m.audit_chain_ok.set(chain_ok)
    return generate_latest(registry).decode()


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    cumulative = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, cumulative) == pytest.approx(0.1)
    assert histogram_quantile(0.75, cumulative) == pytest.approx(0.15)
    assert histogram_quantile(0.25, cumulative) == pytest.approx(0.05)
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 5.0)]) == 0.1  # rank in +Inf: highest bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_frame_rates_over_the_interval_and_windowed_latency() -> None:
    first = Sample(100.0, parse_metrics(exposition(10, [0.004] * 10)), stats=None)
    second = Sample(102.0, parse_metrics(exposition(30, [0.004] * 10 + [0.3] * 20, quarantined=4)), stats=None)
    f = frame(first, second)
    assert f["deliveries"]["down"]["rate"] == pytest.approx(10.0)
    assert f["deliveries"]["down"]["total"] == 30
    assert f["deliveries"]["up"]["rate"] == 0
    assert f["quarantine"]["bad_magic"] == {"rate": pytest.approx(2.0), "total": 4}
    assert f["outcomes"]["quarantined"]["rate"] == pytest.approx(2.0)
    assert f["latency"]["window"] == "last interval"
    assert 0.25 < f["latency"]["p50"] <= 0.5  # only the interval's observations: all 0.3 s
    assert f["consumer_lag"] == 12 and f["audit_chain_ok"] is True and f["catalogue"] == {"municipal": 9}
    alone = frame(None, second)
    assert alone["deliveries"]["down"]["rate"] is None and alone["latency"]["window"] == "since start"
    assert buckets(second.metrics, "hub_event_latency_seconds")[-1] == (float("inf"), 30.0)


def test_render_one_frame_with_figures_and_a_broken_chain() -> None:
    stats = {"catalogue": {"by_tier": {"municipal": 9}}, "exchange": {
        "from": None, "to": None, "counts": {},
        "figures": [{"id": "records_down", "label": "records delivered down the tiers", "value": 1234,
                     "definition": "deliver audits with direction down", "reported": "> 49.2 billion records"}],
    }}
    sample = Sample(1.0, parse_metrics(exposition(5, [0.01], chain_ok=0)), stats=stats)
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render(frame(None, sample), "http://hub"))
    text = out.getvalue()
    for words in ("records delivered down the tiers", "1,234", "BROKEN", "consumer lag", "p99", "catalogue municipal"):
        assert words in text, words


def test_topic_labels_never_carry_a_node_id() -> None:
    assert topic_label("ingress.district.310115") == "ingress.*"
    assert topic_label("feed.municipal.health") == "feed.*"
    assert topic_label("call.national.request") == "call.*"
    assert topic_label(AUDIT_TOPIC) == AUDIT_TOPIC
    assert topic_label("hub-exchange-__assignor-__leader") == "hub-exchange-__assignor-__leader"


def test_faust_sensors_in_their_own_registry_served_with_the_hub_metrics() -> None:
    app = faust.App("sensor-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    faust_registry = install_faust_sensors(app)
    assert isinstance(app.monitor, BoundedPrometheusMonitor)
    app.monitor.on_message_in(TP("ingress.district.310115", 3), 41, types.SimpleNamespace())
    app.monitor.track_tp_end_offset(TP("ingress.municipal.health", 0), 99)
    hub_registry = CollectorRegistry()
    HubMetrics.create(hub_registry)
    hub_registry.register(RegistryCollector(faust_registry))
    text = generate_latest(hub_registry).decode()
    assert "faust_messages_received_total 1.0" in text
    assert 'faust_messages_received_per_topic_total{topic="ingress.*"} 1.0' in text
    assert 'faust_topic_partition_end_offset{partition="0",topic="ingress.*"} 99.0' in text
    assert "310115" not in text and "municipal.health" not in text
    assert "hub_records_delivered_total" in text
    assert text.count("# TYPE faust_messages_received_total counter") + text.count(
        "# TYPE faust_messages_received counter") == 1  # served once, from the monitor's counters
    app.monitor.on_rebalance_start(app)  # faust clears the per-partition series on a rebalance
    text = generate_latest(hub_registry).decode()
    assert "faust_messages_received_total 1.0" in text and "faust_messages_received_per_topics_partition{" not in text
