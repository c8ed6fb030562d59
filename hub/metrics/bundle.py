"""All of the hub's Prometheus metrics in one bundle, created against an injected ``CollectorRegistry``.

The names and labels are the contract (docs/contract.md). Label values come from bounded sets only (tiers, kinds,
outcomes, directions, quarantine rules, objection states): never a node id, resource id or record key. Besides the
original contract metrics: ``hub_consumer_lag`` (per worker, no labels: its topics are named by node id) and
``hub_objections_overdue``. Series a dashboard or alert needs from the first scrape are created at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TIERS = ("national", "municipal", "district", "region", "hub")
OUTCOMES = ("ok", "denied", "quarantined", "error")
DIRECTIONS = ("down", "up", "lateral", "regional")
CALLED_TIERS = ("national", "municipal", "district", "region")
CALL_OUTCOMES = ("ok", "denied", "error")
OBJECTION_STATES = ("filed", "accepted", "flagged", "verified", "unflagged")  # open ones (hub.objections.model)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class HubMetrics:
    events: Counter
    records_delivered: Counter
    calls: Counter
    quarantined: Counter
    latency: Histogram
    objections_open: Gauge
    catalog_resources: Gauge
    audit_chain_ok: Gauge
    consumer_lag: Gauge
    batches_in_flight: Gauge
    objections_overdue: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> HubMetrics:
        metrics = cls(
            events=Counter(
                "hub_events_total", "Events handled by the hub, by kind, tiers and outcome",
                ["kind", "from_tier", "to_tier", "outcome"], registry=registry,
            ),
            records_delivered=Counter(
                "hub_records_delivered_total", "Records delivered to consumer feeds, by direction",
                ["direction"], registry=registry,
            ),
            calls=Counter(
                "hub_calls_total", "Calls answered, by the tier called and outcome",
                ["to_tier", "outcome"], registry=registry,
            ),
            quarantined=Counter(
                "hub_quarantined_total", "Records sent to quarantine, by rule", ["rule"], registry=registry
            ),
            latency=Histogram(
                "hub_event_latency_seconds", "Ingress to feed latency (record timestamp to delivery)",
                buckets=LATENCY_BUCKETS, registry=registry,
            ),
            objections_open=Gauge(
                "hub_objections_open", "Objections not yet archived, by state", ["state"], registry=registry
            ),
            catalog_resources=Gauge(
                "hub_catalog_resources", "Catalogue entries by tier", ["tier"], registry=registry
            ),
            audit_chain_ok=Gauge(
                "hub_audit_chain_ok", "1 if the last audit chain verification passed, 0 if it failed",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "hub_consumer_lag", "Records on ingress not yet processed by this worker (end offset minus "
                "position, summed over the ingress partitions it owns)", registry=registry,
            ),
            batches_in_flight=Gauge(
                "hub_worker_batches_in_flight", "Batches this worker has decided and sent whose audit records are not "
                "acknowledged yet (the pipeline's depth)", registry=registry,
            ),
            objections_overdue=Gauge(
                "hub_objections_overdue", "Objections past the time limit of their current step", registry=registry
            ),
        )
        for direction in DIRECTIONS:  # present from the start, so rate() works from the first scrape
            metrics.records_delivered.labels(direction)
        for tier in CALLED_TIERS:
            for outcome in CALL_OUTCOMES:
                metrics.calls.labels(tier, outcome)
        for state in OBJECTION_STATES:
            metrics.objections_open.labels(state)
        metrics.audit_chain_ok.set(1)
        return metrics
