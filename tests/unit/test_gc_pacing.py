"""Garbage collection paced by batches: nothing is collected until enough young objects are due, then the
generation CPython would pick."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hub.worker import gc_pacing


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_install_leaves_the_collector_a_safety_net_only(restored: None) -> None:
    gc_pacing.install()
    assert gc.get_threshold() == (gc_pacing.SAFETY_THRESHOLD, gc_pacing.MIDDLE_EVERY, gc_pacing.OLD_EVERY)
    assert gc.get_freeze_count() > 0  # start-up state is out of every scan


def test_a_collection_is_due_only_past_the_young_threshold(restored: None, monkeypatch: pytest.MonkeyPatch) -> None:
    collected: list[int] = []
    monkeypatch.setattr(gc_pacing.gc, "collect", collected.append)
    for counts, expected in (((10, 0, 0), None), ((60_000, 0, 0), 0), ((60_000, 10, 0), 1), ((60_000, 10, 10), 2)):
        monkeypatch.setattr(gc_pacing.gc, "get_count", lambda counts=counts: counts)
        assert gc_pacing.collect_if_due() == expected
    assert collected == [0, 1, 2]
