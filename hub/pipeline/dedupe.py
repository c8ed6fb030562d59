"""A bounded window of recently seen (node, event id) pairs: idempotence by event id, per ingress partition.

The window is state of the partition's owner. It is rebuilt from the partition's audit records when a
worker takes the partition over, so a redelivered event is recognised even after a crash. Kafka redelivers
only what was read after the last commit, and the worker commits after every batch (at most a handful of
batches of ``batch_max`` records are in flight), so 100,000 keys a partition cover any redelivery many times
over while keeping the window near 25 MB.
"""

from __future__ import annotations

DEFAULT_CAPACITY = 100_000
_JOIN = "\x1f".join  # a node id (the pair's first part) never contains U+001F: joined pairs stay distinct


class DedupeWindow:
    """Insertion-ordered set with a capacity: the oldest keys are forgotten first.

    Pairs are kept joined into one string: a string is not tracked by the garbage collector, where a tuple is
    until a collection has scanned it, and the window gains a key per event."""

    __slots__ = ("_keys", "capacity")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._keys: dict[str, None] = {}
        self.capacity = capacity

    def __contains__(self, key: tuple[str, str]) -> bool:
        return _JOIN(key) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, pair: tuple[str, str]) -> None:
        keys = self._keys
        key = _JOIN(pair)
        if key in keys:
            return
        keys[key] = None
        if len(keys) > self.capacity:
            del keys[next(iter(keys))]
