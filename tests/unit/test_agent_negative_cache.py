"""The exchange agent's memory of unknown schema ids stays bounded under a flood of random ids."""

from __future__ import annotations

from hub.pipeline.agent import pruned


def test_small_caches_are_left_alone() -> None:
    cache = {1: 0.0, 2: 100.0}
    assert pruned(cache, now=50.0, cap=10) is cache


def test_expired_misses_are_dropped_once_the_cache_is_full() -> None:
    cache = {i: (0.0 if i % 2 else 100.0) for i in range(20)}
    assert pruned(cache, now=50.0, cap=10) == {i: 100.0 for i in range(0, 20, 2)}


def test_a_flood_of_live_misses_empties_the_cache() -> None:
    assert pruned({i: 100.0 for i in range(20)}, now=50.0, cap=10) == {}
