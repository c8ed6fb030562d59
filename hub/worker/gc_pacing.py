"""Garbage collection paced by the worker's batches, not by allocation counts in the middle of one.

CPython collects its youngest generation when allocations minus deallocations of tracked objects pass a threshold.
A batch of 2,000 events holds about 70,000 tracked objects at its peak (input records, output records, headers,
decoded values) and frees them when it has been sent, so any threshold below that peak fires in the middle of
nearly every batch and scans the whole batch: measured on ``hub up`` draining a backlog, one collection per batch
at 20-30 ms of CPU each, about 12 µs of the worker's ~130 µs per event, none of it finding garbage.

So the collector's own threshold is set high (a safety net for code outside the batch loop), and the worker
collects at batch boundaries, when a batch's objects are gone: what is left young is little more than the
long-lived keys added since (dedupe and index keys), which the first collection that sees them untracks.
Between batches, and when idle, ``collect_if_due`` runs the generation CPython would have chosen.
"""

from __future__ import annotations

import gc

YOUNG_BETWEEN_BATCHES = 50_000  # net new tracked objects that make a young collection due at a batch boundary
MIDDLE_EVERY = 10  # young collections per middle-generation one (CPython's default: 10)
OLD_EVERY = 10  # middle-generation collections per full one; the state built before start-up is frozen out
SAFETY_THRESHOLD = 500_000  # the collector's own young threshold: reached only if no batch boundary comes


def install() -> None:
    """Freeze what start-up built (imports, settings, schemas) out of every scan, and let the worker pace the
    rest (``collect_if_due``)."""
    gc.freeze()
    gc.set_threshold(SAFETY_THRESHOLD, MIDDLE_EVERY, OLD_EVERY)


def collect_if_due() -> int | None:
    """At a batch boundary (or an idle tick): collect the generation that is due, if any; the generation
    collected, else None."""
    young, middle, old = gc.get_count()
    if young < YOUNG_BETWEEN_BATCHES:
        return None
    generation = 2 if middle >= MIDDLE_EVERY and old >= OLD_EVERY else 1 if middle >= MIDDLE_EVERY else 0
    gc.collect(generation)
    return generation
