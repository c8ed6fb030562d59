"""Faust's own Prometheus sensors, in a CollectorRegistry of their own, exposed next to the hub's metrics.

``install_faust_sensors(app)`` makes a faust-streaming ``PrometheusMonitor`` (``BoundedPrometheusMonitor``) the
app's monitor, with metrics named ``faust_*`` in a fresh registry. It replaces Faust's default ``Monitor``,
which it extends; the per-event callbacks keep only the default Monitor's plain counters and the per-event
series are produced from them at scrape time (``MonitorCollector``), so the Prometheus sensors add no work
per event (``python -m bench.count_cost`` measures both). ``RegistryCollector(registry)`` lets another
registry (the hub's, served on ``/metrics``) include them without mixing the two sets of collectors.

Faust labels some of its metrics by topic. Node-facing topics are named by node id (``ingress.<node>``,
``feed.<node>``, ...), and no metric label may carry a node id, so the monitor here replaces such a topic
by its family (``ingress.*``); the hub's own topics (``hub.audit``, ``hub.counts``, ...) keep their names.
Every label set stays bounded (``faust_total_events_per_stream``, labelled by the stream's topics, is not
exported).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

NODE_TOPIC_FAMILIES = ("ingress", "feed", "call", "quarantine", "objection")
NAME_PREFIX = "faust"


def topic_label(topic: str) -> str:
    """A bounded label for a topic: node-facing topics by family, the hub's and internal topics by name."""
    head = topic.split(".", 1)[0]
    if head in NODE_TOPIC_FAMILIES and "." in topic:
        return f"{head}.*"
    return topic


HOT_PATH_METRICS = (  # FaustMetrics updated for every event by the stock PrometheusMonitor
    "messages_received", "active_messages", "messages_received_per_topics", "messages_received_per_topics_partition",
    "total_events", "total_active_events", "total_events_per_stream",
)


class BoundedPrometheusMonitor(PrometheusMonitor):
    """faust's PrometheusMonitor, with bounded topic labels and nothing but the default Monitor's plain counters
    on the per-event path.

    The stock PrometheusMonitor updates seven Prometheus metrics for every event (labels lookups and locks,
    ~15 µs/event measured by ``bench.count_cost``). Here the per-event callbacks only do the default
    Monitor's bookkeeping (which Faust pays anyway); ``MonitorCollector`` turns those counters into the same
    ``faust_*`` series when Prometheus scrapes. Per-commit, per-send, rebalance and assignment sensors stay
    as faust-streaming implements them, with topic labels mapped by ``topic_label``.
    """

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        Monitor.on_message_in(self, tp, offset, message)

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> Any:
        return Monitor.on_stream_event_in(self, tp, offset, stream, event)

    def on_stream_event_out(self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        Monitor.on_stream_event_out(self, tp, offset, stream, event, state)
        if state is not None:  # never on the hub's take_events path (events are acked without sensor state)
            self._metrics.events_runtime_latency.observe(self.secs_to_ms(self.events_runtime[-1]))

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        Monitor.on_message_out(self, tp, offset, message)

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        return super().on_send_initiated(producer, topic_label(topic), message, keysize, valsize)

    def on_tp_commit(self, tp_offsets: Any) -> None:
        super().on_tp_commit({_bounded(tp): offset for tp, offset in tp_offsets.items()})

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        super().track_tp_end_offset(_bounded(tp), offset)


def _bounded(tp: TP) -> TP:
    label = topic_label(tp.topic)
    return tp if label == tp.topic else TP(label, tp.partition)


class MonitorCollector:
    """The per-event Faust metrics, read from the monitor's plain counters at scrape time."""

    def __init__(self, monitor: Monitor, prefix: str = NAME_PREFIX) -> None:
        self.monitor = monitor
        self.prefix = prefix

    def collect(self) -> Iterable[Metric]:
        m, p = self.monitor, self.prefix
        by_topic: dict[str, float] = {}
        for topic, n in _items(m.messages_received_by_topic):
            label = topic_label(topic)
            by_topic[label] = by_topic.get(label, 0) + n
        read_offsets: dict[tuple[str, str], float] = {}
        for tp, offset in _items(m.tp_read_offsets):
            key = (topic_label(tp.topic), str(tp.partition))
            read_offsets[key] = max(read_offsets.get(key, offset), offset)
        yield CounterMetricFamily(f"{p}_messages_received", "Total messages received", m.messages_received_total)
        yield GaugeMetricFamily(f"{p}_active_messages", "Total active messages", m.messages_active)
        per_topic = CounterMetricFamily(f"{p}_messages_received_per_topic", "Messages received per topic",
                                        labels=["topic"])
        for label, n in sorted(by_topic.items()):
            per_topic.add_metric([label], n)
        yield per_topic
        per_tp = GaugeMetricFamily(f"{p}_messages_received_per_topics_partition",
                                   "Last offset received per topic/partition", labels=["topic", "partition"])
        for labels, offset in sorted(read_offsets.items()):
            per_tp.add_metric(list(labels), offset)
        yield per_tp
        yield CounterMetricFamily(f"{p}_total_events", "Total events received", m.events_total)
        yield GaugeMetricFamily(f"{p}_total_active_events", "Total active events", m.events_active)


def _items(mapping: Any) -> list[tuple[Any, Any]]:
    """A copy of a dict the event loop may be changing (a scrape can run in another thread)."""
    for _ in range(5):
        try:
            return list(mapping.items())
        except RuntimeError:  # changed size during iteration
            continue
    return []


def install_faust_sensors(app: faust.App, registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Make a BoundedPrometheusMonitor the app's monitor (before the app starts); returns its registry."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = FaustMetrics.create(registry, NAME_PREFIX)
    for name in HOT_PATH_METRICS:  # served from the monitor's counters instead (MonitorCollector)
        registry.unregister(getattr(metrics, name))
    monitor = BoundedPrometheusMonitor(metrics=metrics)
    registry.register(MonitorCollector(monitor))
    app.monitor = monitor
    return registry


class RegistryCollector:
    """A collector yielding another registry's metrics, so one ``/metrics`` serves both registries."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()
