"""The bounded dedupe window of (node, event id) pairs."""

from __future__ import annotations

import gc

from hub.pipeline.dedupe import DedupeWindow


def test_the_window_forgets_its_oldest_pairs_first() -> None:
    window = DedupeWindow(capacity=2)
    for pair in (("n", "a"), ("n", "b"), ("n", "c")):
        window.add(pair)
    assert ("n", "a") not in window and ("n", "b") in window and ("n", "c") in window and len(window) == 2
    window.add(("n", "b"))  # already there: nothing moves
    assert len(window) == 2


def test_pairs_stay_distinct_and_cost_the_collector_nothing() -> None:
    window = DedupeWindow()
    window.add(("municipal.health", "e\x1f1"))  # an event id may hold the separator; a node id never does
    assert ("municipal.health", "e\x1f1") in window
    assert ("district.310115", "e\x1f1") not in window
    assert not gc.is_tracked(window._keys)  # strings only: never scanned, however many events it holds
