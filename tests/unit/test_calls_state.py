"""CallState's table and index maintenance without Kafka: restore stores rows undecoded, a new version retracts
the index values its row no longer has (restored rows too), and the index partition is stable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hub.calls import core
from hub.calls.state import CallState
from hub.catalogue.model import load_exchange_config
from hub.contract import store_key
from hub.registry import framing
from hub.registry.client import RegisteredSchema
from hub.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SEED = load_exchange_config(ROOT / "config" / "seed.yaml")
VACCINATION = SEED.resource("municipal.health.vaccination")
SCHEMA = json.loads((ROOT / "schemas/health/vaccination_record.avsc").read_text())
PARSED = framing.parse_schema(SCHEMA)


class _Registry:
    def __init__(self) -> None:
        self.decoded = 0

    def cached(self, schema_id: int) -> RegisteredSchema:
        self.decoded += 1
        return RegisteredSchema(schema_id, json.dumps(SCHEMA), PARSED)


class _Msg:
    def __init__(self, offset: int, record: dict[str, Any] | None, pk: str = "v-1") -> None:
        self.key = store_key(VACCINATION.id, pk)
        self.value = framing.encode(1, PARSED, record) if record is not None else None
        self.offset = offset
        self.timestamp = 1000 + offset


def vaccination(resident: str, site: str = "91310112788762325G") -> dict[str, Any]:
    return {"record_id": "v-1", "resident_id": resident, "name": "张三", "phone": "13912345678",
            "district": "310115", "vaccine_code": "c", "dose_number": 1, "vaccinated_at": 1, "site_uscc": site,
            "site_name": "s"}


def state() -> tuple[CallState, _Registry]:
    st = CallState(Settings(), "127.0.0.1:1")
    registry = _Registry()
    st.registry = registry  # type: ignore[assignment]
    st.resource_of = lambda rid: VACCINATION if rid == VACCINATION.id else None
    return st, registry


def entries(changes: list[core.IndexChange]) -> list[tuple[str, str, bool]]:
    out = []
    for c in changes:
        parsed = core.parse_index_entry_key(c.key)
        assert parsed is not None
        out.append((parsed[1], parsed[2], c.value is not None))
    return out


def test_restore_does_not_decode_and_a_new_version_retracts_the_old_value() -> None:
    st, registry = state()
    table = core.RecordTable()
    st._apply_record(table, _Msg(0, vaccination("11010519491231002X")), False, [])  # restored: already indexed
    assert registry.decoded == 0 and table.get(store_key(VACCINATION.id, "v-1")).indexed is None
    changes: list[core.IndexChange] = []
    st._apply_record(table, _Msg(1, vaccination("310115198807061234")), True, changes)  # the resident ID corrected
    assert entries(changes) == [("resident_id", "11010519491231002X", False),
                                ("resident_id", "310115198807061234", True)]
    assert all(c.value in (None, b"1001") for c in changes)  # entries carry the row's timestamp
    more: list[core.IndexChange] = []
    st._apply_record(table, _Msg(2, None), True, more)  # a tombstone retracts everything
    assert sorted(entries(more)) == [("resident_id", "310115198807061234", False),
                                     ("site_uscc", "91310112788762325G", False)]


def test_the_index_partition_is_stable_and_spread() -> None:
    keys = [core.index_partition_key(VACCINATION.id, "resident_id", str(n)) for n in range(400)]
    first = [core.index_partition(k, [0, 1, 2, 3]) for k in keys]
    assert first == [core.index_partition(k, [0, 1, 2, 3]) for k in keys]
    assert min(first.count(p) for p in range(4)) > 50


def test_key_exists_answers_only_for_partitions_held_and_restored() -> None:
    """Reference quality rules ask the call tables: True/False where the partition is here and ready, else None."""
    import asyncio

    from hub.broker.records import partition_of
    from hub.calls.core import RecordTable
    from hub.calls.state import CallState
    from hub.contract import store_key
    from hub.settings import Settings

    state = CallState(Settings(), "127.0.0.1:1")
    state._records_partitions = 4
    key = store_key("municipal.big-data.legal-person", "91310115MAQ283FQ6R")
    p = partition_of(key, 4)
    assert state.key_exists("municipal.big-data.legal-person", "91310115MAQ283FQ6R") is None  # not held
    table = state.records[p] = RecordTable()
    state._ready[p] = asyncio.Event()
    assert state.key_exists("municipal.big-data.legal-person", "91310115MAQ283FQ6R") is None  # restoring
    state._ready[p].set()
    assert state.key_exists("municipal.big-data.legal-person", "91310115MAQ283FQ6R") is False
    rid, _, pk = key.partition(b"|")
    table.values.setdefault(rid.decode(), {})[pk] = b"\x00row"
    assert state.key_exists("municipal.big-data.legal-person", "91310115MAQ283FQ6R") is True
