"""Observing a batch of values in a Prometheus histogram at once.

``Histogram.observe`` takes two locks and walks the buckets for each value; the worker observes the latency of
every delivery (two or more per event), about 3 µs an event. ``observe_many`` bins a batch first and then adds
each bucket's count and the sum once: the same exposition as one ``observe`` per value.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import Histogram


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """Observe every amount (as ``histogram.observe`` each would)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:  # a prometheus_client whose internals differ: the public path
            histogram.observe(amount)
        return
    if not amounts:
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        if amount == amount:  # NaN falls in no bucket (observe's "amount <= bound" is never true)
            index = bisect_left(bounds, amount)  # the first bound >= amount, as observe's scan finds it
            if index < len(counts):
                counts[index] += 1
    total.inc(sum(amounts))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
