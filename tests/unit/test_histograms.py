"""observe_many gives the exposition one observe per value gives."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from hub.metrics.histograms import observe_many

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def exposition(amounts: list[float], batched: bool) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram("latency_seconds", "test", registry=registry, buckets=BUCKETS)
    if batched:
        observe_many(histogram, amounts)
    else:
        for amount in amounts:
            histogram.observe(amount)
    return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)


@given(st.lists(st.one_of(st.floats(min_value=0, max_value=10, allow_nan=False), st.sampled_from(BUCKETS))))
def test_a_batch_lands_in_the_same_buckets_and_sum(amounts: list[float]) -> None:
    assert exposition(amounts, batched=True) == exposition(amounts, batched=False)


def test_values_on_a_bound_count_in_it_and_nan_in_no_bucket() -> None:
    amounts = [0.005, 0.0050001, 2.5, 100.0, math.nan]
    assert exposition(amounts, batched=True) == exposition(amounts, batched=False)
    assert exposition([], batched=True) == exposition([], batched=False)
