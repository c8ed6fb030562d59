"""The audit log's hash chain: sealing records as they are written and verifying a partition's log (pure, no I/O).

Each partition of ``hub.audit`` is one chain, written by one worker at a time. Every record carries

* ``seq``: its position in the partition's chain (0, 1, 2, ...; checkpoints included),
* ``prev_hash``: the ``hash`` of the record before it (None for seq 0),
* ``hash``: ``sha256(canonical_bytes(record))`` in hex, where the canonical bytes cover every field except
  ``hash`` itself (so ``seq`` and ``prev_hash`` are inside the hash).

The canonical bytes are compact UTF-8 JSON with sorted keys (RFC 8785 for these value types) of the
record's non-null fields, timestamps as epoch milliseconds: independent of the Avro encoding and of the
schema version (a field added later with a null default does not change the hash of records written before
it). ``deliveries`` (added later, default ``[]``) is left out when empty, so records that never had it, or
that were built without it, hash as they did; each of its entries keeps only its non-null, non-empty
fields, so an entry hashes the same as built and after an Avro round trip (which returns every field,
its nulls as None and an absent ``masked_fields`` as ``[]``). The record's data is never in an audit
record, only ``key_hash``, so nothing here ever hashes personal data directly.

**Keyed chains.** With an operator key (``HUB_AUDIT_HMAC_KEY``), ``hash`` is ``"hmac-sha256:" +
HMAC-SHA256(key, canonical bytes)``. A plain chain shows any edit that is not followed by rewriting every
later record; a keyed one also stops someone with write access to the topic but without the key from
re-sealing what they changed. Verifying a keyed chain needs the key; a plain-sha256 record in a keyed
chain fails verification (no downgrade).

**Checkpoints** are ordinary chained records with ``action = "checkpoint"``, written every N records or T
seconds; ``reason`` reads ``count=<records since the last checkpoint or resume>;from_seq=<first seq they
cover>;head=<hash of the record before the checkpoint>``. They give operators anchors to copy elsewhere
(a notary, a WORM store) and let ``verify`` check the writer's own bookkeeping.

``verify`` streams ``(offset, record)`` pairs in constant memory and reports the first broken link as one
of ``changed`` (content does not match its hash, or a record was re-sealed), ``removed`` (a gap in
``seq``), ``reordered`` (the missing ``seq`` turns up later), ``inserted`` (a record the chain skips), or
``unverifiable`` (a keyed chain and no key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import json.encoder
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from hub.contract import OPERATOR

CHECKPOINT = "checkpoint"
KEYED_PREFIX = "hmac-sha256:"
KINDS = ("changed", "removed", "reordered", "inserted", "unverifiable")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _json_default(value: Any) -> Any:
    """Non-JSON values in a decoded AuditRecord: timestamps (fastavro decodes timestamp-millis) and bytes."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"cannot hash a {type(value).__name__} in an audit record")


# RFC 8785 (JCS) for the value types an AuditRecord has (strings, integers, arrays of strings): sorted keys,
# no whitespace, UTF-8, only the escapes JSON requires. Any JCS implementation recomputes the same bytes.
# ``_ENCODE`` (the json module's C encoder) defines the canonical bytes every chain so far was sealed with;
# ``canonical_bytes`` uses orjson (~10x faster) only for the values it encodes byte for byte the same way.
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode
if json.encoder.c_make_encoder is not None:  # the same C encoder, built once rather than per call (~1 µs)
    _iterencode = json.encoder.c_make_encoder(
        None, _json_default, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )

    def _ENCODE(value: Any) -> str:  # noqa: N802 - a drop-in for the encoder above
        return "".join(_iterencode(value, 0))


# orjson and ``_ENCODE`` give the same bytes for str (the same escapes: \" \\ \b \f \n \r \t, \u00xx in
# lowercase hex for the other controls, everything else as UTF-8, DEL and U+2028/U+2029 included), int,
# bool, None, list, tuple and dict with str keys (sorted by code point: UTF-8 byte order is the same), and
# datetime (handed to ``_json_default``, as the json encoder does). They differ on floats (1e-05 against
# 0.00001; NaN and infinities become null instead of an error) and on UUIDs, enums, dates and orjson's own
# types (which orjson encodes where the json encoder raises), so a record holding anything else than these
# exact types is encoded by ``_ENCODE``. Where orjson refuses a value of those types (an int beyond 64 bits,
# a lone surrogate, a key that is not exactly a str), ``_ENCODE`` encodes it, or raises what it always raised.
_DUMPS = orjson.dumps
_DUMPS_OPTION = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_ORJSON_REFUSED = orjson.JSONEncodeError
_LEAVES = frozenset({str, int, bool, datetime, type(None)})
_SCALARS = frozenset({str, int, bool, datetime})  # a record's top-level values (None ones are left out)
_STR = frozenset({str})
_DICT = frozenset({dict})
_MAX_DEPTH = 200  # deeper values are left to _ENCODE (orjson stops at 255 levels)

_EMPTY = (None, [], ())  # values a delivery entry's canonical form leaves out (Avro's null and [] defaults)


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """What a record's hash covers: sorted-key compact JSON of every non-null field except ``hash``
    (``deliveries`` only when not empty, its entries without null or empty fields)."""
    content = {k: v for k, v in record.items() if v is not None}
    content.pop("hash", None)
    # orjson where _plain(content): quickly for the usual record, whose only lists are masked_fields (strings)
    # and deliveries (cleaned entries: plain dicts exactly when _plain, see _clean_entry), set apart meanwhile
    masked = content.pop("masked_fields", None)
    deliveries = content.pop("deliveries", None)
    usual = set(map(type, content.values())) <= _SCALARS
    if masked is not None:
        content["masked_fields"] = masked
        usual = usual and type(masked) is list and set(map(type, masked)) <= _STR
    if deliveries:
        content["deliveries"] = deliveries = [_clean_entry(d) for d in deliveries]
        usual = usual and set(map(type, deliveries)) <= _DICT
    if usual or _plain(content, 0):
        try:
            return _DUMPS(content, default=_json_default, option=_DUMPS_OPTION)
        except _ORJSON_REFUSED:
            pass
    return _ENCODE(content).encode()


def _plain(value: Any, depth: int) -> bool:
    """Whether orjson encodes ``value`` exactly as ``_ENCODE`` does: only str, int, bool, None and datetime
    in lists, tuples and dicts with str keys (exact types: no subclasses)."""
    kind = type(value)
    if kind is dict:
        return (depth < _MAX_DEPTH and set(map(type, value)) <= _STR
                and all(_plain(v, depth + 1) for v in value.values()))
    if kind is list or kind is tuple:
        return depth < _MAX_DEPTH and all(_plain(v, depth + 1) for v in value)
    return kind in _LEAVES


class _NotPlain(dict[str, Any]):
    """A cleaned delivery entry that is not ``_plain`` (so canonical_bytes sees it without looking inside);
    the json encoder treats it as the dict it is."""


_CLEANED: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}


def _clean_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An AuditDelivery without its null or empty fields. The hot path shares one entry object between every
    event of a route (never mutated), so the cleaned copy is cached by identity (the cache holds the entry,
    so its id cannot be reused while cached; bounded). The copy is a plain ``dict`` when ``_plain``, else a
    ``_NotPlain``."""
    cached = _CLEANED.get(id(entry))
    if cached is not None and cached[0] is entry:
        return cached[1]
    cleaned = {k: v for k, v in entry.items() if v not in _EMPTY}
    if not _plain(cleaned, 2):
        cleaned = _NotPlain(cleaned)
    if len(_CLEANED) >= 4096:
        _CLEANED.clear()
    _CLEANED[id(entry)] = (entry, cleaned)
    return cleaned


def record_hash(record: Mapping[str, Any], key: bytes | None = None) -> str:
    """The hash a sealed record must carry: sha256 hex, or ``hmac-sha256:<hex>`` with an operator key."""
    data = canonical_bytes(record)
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return KEYED_PREFIX + hmac.digest(key, data, "sha256").hex()


def seal(record: dict[str, Any], prev_hash: str | None, seq: int, *, key: bytes | None = None) -> dict[str, Any]:
    """Set ``prev_hash``, ``seq`` and ``hash`` on ``record`` (in place) and return it."""
    record["prev_hash"] = prev_hash
    record["seq"] = seq
    record["hash"] = record_hash(record, key)
    return record


# ------------------------------------------------------------------------------------------------ writing


@dataclass(slots=True)
class ChainState:
    """Where a partition's chain stands: the next ``seq``, the last record's hash, the open checkpoint window."""

    next_seq: int = 0
    head: str | None = None
    window_start: int = 0  # seq of the first record not yet covered by a checkpoint
    last_checkpoint_ms: int | None = None  # None: start the checkpoint clock at the next batch


def resume_state(last_record: Mapping[str, Any] | None) -> ChainState:
    """The state to continue a partition's chain from its last record (None: an empty partition).

    A checkpoint window cannot be recovered from one record, so a resumed writer opens a new one: its
    first checkpoint counts the records since the resume (``from_seq`` says where they start).
    """
    if last_record is None:
        return ChainState()
    seq, head = last_record.get("seq"), last_record.get("hash")
    if seq is None or head is None:
        raise ValueError(
            "the last record of this audit partition is not sealed (no seq/hash): it was written by a hub "
            "without the hash chain, so the chain cannot continue from it"
        )
    return ChainState(next_seq=int(seq) + 1, head=str(head), window_start=int(seq) + 1)


def checkpoint_reason(count: int, from_seq: int, head: str | None) -> str:
    return f"count={count};from_seq={from_seq};head={head or ''}"


def parse_checkpoint_reason(reason: str) -> tuple[int, int, str | None]:
    """(count, from_seq, head) of a checkpoint's ``reason``; ValueError if it is not one."""
    parts = dict(item.split("=", 1) for item in reason.split(";"))
    return int(parts["count"]), int(parts["from_seq"]), parts["head"] or None


class ChainWriter:
    """Seals one partition's audit records in order and adds checkpoints; one per partition, one writer each.

    ``checkpoint_every`` records or ``checkpoint_seconds`` (checked at each batch and by ``tick``) close a
    checkpoint window, whichever comes first; an empty window never produces a checkpoint.
    """

    __slots__ = ("partition", "state", "key", "checkpoint_every", "checkpoint_ms", "actor")

    def __init__(
        self, partition: int, state: ChainState | None = None, *, key: bytes | None = None,
        checkpoint_every: int = 1000, checkpoint_seconds: float = 60.0, actor: str = OPERATOR,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.partition = partition
        self.state = state if state is not None else ChainState()
        self.key = key
        self.checkpoint_every = checkpoint_every
        self.checkpoint_ms = int(checkpoint_seconds * 1000)
        self.actor = actor

    def seal_batch(self, records: Iterable[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
        """Seal ``records`` (in place, in order) and return them with any checkpoints due, ready to write.

        The returned list must be written to this partition in order, and the state only stands if it
        is: if the write fails, rebuild the writer with ``resume_state`` from what the partition holds.
        """
        st = self.state
        if st.last_checkpoint_ms is None:
            st.last_checkpoint_ms = now_ms
        key, every = self.key, self.checkpoint_every
        out: list[dict[str, Any]] = []
        for record in records:
            record["prev_hash"] = st.head
            record["seq"] = st.next_seq
            st.head = record["hash"] = record_hash(record, key)
            st.next_seq += 1
            out.append(record)
            if st.next_seq - st.window_start >= every:
                out.append(self._checkpoint(now_ms))
        if self.checkpoint_due(now_ms):
            out.append(self._checkpoint(now_ms))
        return out

    def checkpoint_due(self, now_ms: int) -> bool:
        """True when records are waiting in the window and ``checkpoint_seconds`` have passed."""
        st = self.state
        return (
            st.next_seq > st.window_start
            and st.last_checkpoint_ms is not None
            and now_ms - st.last_checkpoint_ms >= self.checkpoint_ms
        )

    def tick(self, now_ms: int) -> list[dict[str, Any]]:
        """For an idle timer: the checkpoint that is due (sealed), or nothing."""
        return [self._checkpoint(now_ms)] if self.checkpoint_due(now_ms) else []

    def _checkpoint(self, now_ms: int) -> dict[str, Any]:
        st = self.state
        seq = st.next_seq
        ident = f"{CHECKPOINT}:{self.partition}:{seq}"
        record = {
            "event_id": ident, "audit_id": ident, "ts": now_ms, "action": CHECKPOINT, "actor": self.actor,
            "counterparty": None, "resource": None, "scenario": None, "grant": None, "from_tier": None,
            "to_tier": None, "direction": None, "decision": "allow",
            "reason": checkpoint_reason(seq - st.window_start, st.window_start, st.head),
            "key_hash": None, "masked_fields": [], "source": None,
        }
        seal(record, st.head, seq, key=self.key)
        st.head = record["hash"]
        st.next_seq = seq + 1
        st.window_start = seq + 1
        st.last_checkpoint_ms = now_ms
        return record


# ------------------------------------------------------------------------------------------------ verifying


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link of a partition: where, what kind (see ``KINDS``) and why."""

    offset: int
    kind: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class Anchor:
    """A record an earlier verification saw (its ``seq`` and ``hash``): the log must still hold it."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    count: int  # records examined
    first_break: Break | None = None
    first_seq: int | None = None
    head_seq: int | None = None  # last record accepted as part of the chain
    head_hash: str | None = None
    head_offset: int | None = None
    checkpoints: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "count": self.count,
            "first_break": self.first_break.to_json() if self.first_break else None,
            "first_seq": self.first_seq, "head_seq": self.head_seq, "head_hash": self.head_hash,
            "head_offset": self.head_offset, "checkpoints": self.checkpoints,
        }


@dataclass(frozen=True, slots=True)
class _Link:
    offset: int | None  # None: the virtual record before seq 0
    seq: int
    hash: str | None


_GENESIS = _Link(None, -1, None)


@dataclass(slots=True)
class _Seen:
    """One record as the verifier sees it: where it is, whether its content matches its hash, its links."""

    offset: int
    valid: bool
    seq: int | None
    prev: str | None
    hash: str | None
    why: str = ""
    checkpoint: bool = False


@dataclass(slots=True)
class ChainVerifier:
    """Verifies one partition's chain a record at a time, in constant memory.

    ``genesis``: the log starts at offset 0, so its first record must be seq 0 (set it False when
    retention has removed the start of the log). ``anchor``: the head an earlier verification saw.
    ``partition``: checked against checkpoint ids when given. Feed records in offset order, then call
    ``result()``; ``done`` turns True once the first break is known (later records cannot change it).
    """

    key: bytes | None = None
    genesis: bool = True
    partition: int | None = None
    anchor: Anchor | None = None
    count: int = 0
    checkpoints: int = 0
    first_seq: int | None = None
    _a: _Link | None = None  # the record before the last accepted one
    _b: _Link | None = None  # the last accepted record
    _pending: tuple[str, _Seen] | None = None  # a suspected break, waiting for the next record
    _scan: tuple[int, int, int] | None = None  # (lo, hi, offset): a seq gap; is [lo, hi) seen later?
    _suspect: tuple[_Seen, bool] | None = None  # a record ahead of its place; has its predecessor been seen?
    _break: Break | None = None
    _anchor_seen: bool = False
    _next_offset: int = 0

    def __post_init__(self) -> None:
        self._b = _GENESIS if self.genesis else None

    @property
    def done(self) -> bool:
        return self._break is not None

    def feed(self, offset: int, record: Mapping[str, Any]) -> None:
        """The next record of the partition (offsets increasing)."""
        self.count += 1
        self._next_offset = offset + 1
        if self._break is not None:
            return
        self._step(self._look(offset, record))

    def feed_undecodable(self, offset: int, why: str) -> None:
        """A record that is not a decodable AuditRecord (bad framing, unknown schema, bad Avro)."""
        self.count += 1
        self._next_offset = offset + 1
        if self._break is not None:
            return
        self._step(_Seen(offset, False, None, None, None, f"it does not decode as an AuditRecord: {why}"))

    def result(self) -> VerifyResult:
        """The verdict for everything fed so far, treating it as the whole log."""
        brk = self._break or self._resolve_at_end()
        b = self._b if self._b is not _GENESIS else None
        return VerifyResult(
            ok=brk is None, count=self.count, first_break=brk, first_seq=self.first_seq,
            head_seq=b.seq if b else None, head_hash=b.hash if b else None, head_offset=b.offset if b else None,
            checkpoints=self.checkpoints,
        )

    # ---------------------------------------------------------------- internals

    def _look(self, offset: int, record: Mapping[str, Any]) -> _Seen:
        claimed = record.get("hash")
        seq = record.get("seq")
        seen = _Seen(offset, False, seq if isinstance(seq, int) else None, record.get("prev_hash"), claimed)
        if not isinstance(claimed, str):
            seen.why = "it carries no hash (not sealed)"
        elif claimed.startswith(KEYED_PREFIX) and self.key is None:
            self._break = Break(offset, "unverifiable", "the chain is keyed (hmac-sha256): give the key "
                                "(HUB_AUDIT_HMAC_KEY) to verify it")
            seen.why = "keyed"
        elif not hmac.compare_digest(claimed, record_hash(record, self.key)):
            seen.why = "its content does not match its hash" + (
                "" if self.key is None or claimed.startswith(KEYED_PREFIX) else " (a plain hash in a keyed chain)"
            )
        elif seen.seq is None:
            seen.why = "it has no sequence number"
        else:
            seen.valid = True
            if record.get("action") == CHECKPOINT:
                seen.checkpoint = True
                seen.why = self._checkpoint_problem(record, seen)
                seen.valid = not seen.why
        return seen

    def _checkpoint_problem(self, record: Mapping[str, Any], seen: _Seen) -> str:
        try:
            count, from_seq, head = parse_checkpoint_reason(str(record.get("reason", "")))
        except (ValueError, KeyError):
            return f"checkpoint reason {record.get('reason')!r} is not count=..;from_seq=..;head=.."
        assert seen.seq is not None
        if count != seen.seq - from_seq or from_seq < 0:
            return f"checkpoint says {count} records from seq {from_seq}, but it is seq {seen.seq}"
        if head != seen.prev:
            return "checkpoint head is not the hash of the record before it"
        if self.partition is not None and str(record.get("event_id", "")).split(":")[1:2] != [str(self.partition)]:
            return f"checkpoint {record.get('event_id')!r} was written for another partition than {self.partition}"
        return ""

    def _step(self, x: _Seen) -> None:
        if self._break is not None:  # set by _look (unverifiable)
            return
        if self._scan is not None:
            lo, hi, offset = self._scan
            if x.seq is not None and lo <= x.seq < hi:
                self._fail(offset, "reordered", f"seq {lo} is missing here and appears later, at offset {x.offset}")
            return
        if self._pending is not None:
            self._resolve(x)
            return
        if self._suspect is not None:
            self._follow_suspect(x)
            return
        b = self._b
        if not x.valid:
            self._pending = ("invalid", x)
            return
        assert x.seq is not None
        if b is None:  # the first record of a log whose start was removed by retention: it is the anchor
            self._accept(x)
        elif self._chains(x, b):
            self._accept(x)
        elif x.seq == b.seq + 1:
            self._pending = ("relink", x)
        elif x.seq > b.seq + 1:
            self._pending = ("gap", x)
        elif x.hash == b.hash:
            self._fail(x.offset, "inserted", f"a copy of the record before it (offset {b.offset})")
        elif self._a is not None and self._chains(x, self._a):
            assert b.offset is not None
            where = "the start of the chain" if self._a.offset is None else f"offset {self._a.offset}"
            self._fail(b.offset, "inserted", f"the record at offset {x.offset} links to {where}, so this one "
                       f"(seq {b.seq}) is not part of the chain")
        else:
            self._pending = ("repeat", x)

    def _resolve(self, y: _Seen) -> None:
        """Decide the pending suspicion about record x with the record after it, y."""
        assert self._pending is not None
        kind, x = self._pending
        self._pending = None
        b = self._b
        y_skips_x = b is not None and y.valid and self._chains(y, b)
        if kind == "gap":
            assert b is not None and x.seq is not None
            lo, hi = b.seq + 1, x.seq
            if y_skips_x:  # x sits ahead of its place: moved earlier (reordered), a copy or a forgery (inserted)
                self._suspect = (x, False)
                self._follow_suspect(y)
            elif y.seq is not None and lo <= y.seq < hi:
                self._fail(x.offset, "reordered", f"seq {lo} is missing here and appears later, at offset {y.offset}")
            else:  # a gap: removed, unless the missing records turn up later (reordered)
                self._scan = (lo, hi, x.offset)
        elif y_skips_x:
            where = f"offset {b.offset}" if b is not None and b.offset is not None else "the start of the chain"
            self._fail(x.offset, "inserted", f"the next record (offset {y.offset}) links to {where}, skipping this "
                       "one" + (f" ({x.why})" if x.why else ""))
        elif kind == "invalid":
            self._fail(x.offset, "changed", x.why)
        elif kind == "relink":
            assert b is not None
            if b.offset is None:
                self._fail(x.offset, "changed", "the first record of the chain (seq 0) must have no prev_hash")
            else:
                self._fail(b.offset, "changed", f"the next record (offset {x.offset}) was chained to a different "
                           "version of this record: it was altered and re-sealed")
        else:  # repeat
            self._fail(x.offset, "inserted", f"seq {x.seq} repeats or goes back (the chain is at seq "
                       f"{b.seq if b else '?'}): a copied or forged record")

    def _follow_suspect(self, y: _Seen) -> None:
        """Record x came too early and the chain goes on without it: is x's own place empty further on?"""
        assert self._suspect is not None and self._b is not None
        x, predecessor_seen = self._suspect
        if predecessor_seen:  # y is in x's place
            self._suspect = None
            if y.valid and y.seq == x.seq and y.hash == x.hash:
                self._fail(x.offset, "inserted", f"a copy of the record at offset {y.offset} (seq {x.seq})")
            else:
                b = self._b
                self._fail(x.offset, "reordered", f"seq {x.seq} belongs after seq {b.seq} (offset {b.offset}): "
                           "records were reordered")
            return
        if not (y.valid and self._chains(y, self._b)):
            self._suspect = None
            self._fail(x.offset, "inserted", f"seq {x.seq} is not part of the chain around it")
            return
        self._accept(y)
        if self._break is None and y.seq == (x.seq or 0) - 1:
            if y.hash == x.prev:
                self._suspect = (x, True)
            else:
                self._suspect = None
                self._fail(x.offset, "inserted", f"seq {x.seq} does not link to the chain's seq {y.seq} "
                           f"(offset {y.offset}): forged")

    def _resolve_at_end(self) -> Break | None:
        """The log ended: settle any pending suspicion and check the anchor."""
        b = self._b
        if self._pending is not None:
            kind, x = self._pending
            if kind == "invalid":
                linked = b is not None and x.seq == b.seq + 1 and x.prev == b.hash
                return Break(x.offset, "changed" if linked or b is None else "inserted", x.why)
            if kind == "relink" and b is not None and b.offset is not None:
                return Break(b.offset, "changed", f"the last record (offset {x.offset}) was chained to a different "
                             "version of this record")
            if kind == "gap" and b is not None and x.seq is not None:
                return Break(x.offset, "removed", _missing(b.seq + 1, x.seq))
            return Break(x.offset, "inserted" if kind == "repeat" else "changed",
                         f"seq {x.seq} does not follow the chain")
        if self._scan is not None:
            lo, hi, offset = self._scan
            return Break(offset, "removed", _missing(lo, hi))
        if self._suspect is not None:
            x, predecessor_seen = self._suspect
            if predecessor_seen:
                return Break(x.offset, "reordered", f"seq {x.seq} was moved here from the end of the log")
            return Break(x.offset, "inserted", f"seq {x.seq} is not part of the chain around it")
        if self.anchor is not None and not self._anchor_seen:
            if b is not None and b is not _GENESIS and b.seq < self.anchor.seq:
                return Break(self._next_offset, "removed", f"the log ends at seq {b.seq}, but an earlier "
                             f"verification saw seq {self.anchor.seq}: records were removed from its end")
            if b is _GENESIS:
                return Break(self._next_offset, "removed",
                             f"the log is empty, but an earlier verification saw seq {self.anchor.seq}")
        return None

    @staticmethod
    def _chains(x: _Seen, base: _Link) -> bool:
        return x.seq == base.seq + 1 and x.prev == base.hash

    def _accept(self, x: _Seen) -> None:
        assert x.seq is not None and x.hash is not None
        if self.first_seq is None:
            self.first_seq = x.seq
        anchor = self.anchor
        if anchor is not None and x.seq == anchor.seq:
            self._anchor_seen = True
            if not hmac.compare_digest(x.hash, anchor.hash):
                self._fail(x.offset, "changed", f"seq {x.seq} is not the record an earlier verification saw: "
                           "the log was rewritten from here")
                return
        if self._b is not None:
            self._a = self._b
        self._b = _Link(x.offset, x.seq, x.hash)
        if x.checkpoint:
            self.checkpoints += 1

    def _fail(self, offset: int, kind: str, message: str) -> None:
        self._pending = self._scan = self._suspect = None
        self._break = Break(offset, kind, message)


def _missing(lo: int, hi: int) -> str:
    what = f"seq {lo}" if hi - lo == 1 else f"seq {lo} to {hi - 1}"
    return f"{what} missing: records were removed here"


def verify(
    records: Iterable[tuple[int, Mapping[str, Any]]], *, key: bytes | None = None, genesis: bool = True,
    partition: int | None = None, anchor: Anchor | None = None,
) -> VerifyResult:
    """Verify one partition's chain from its ``(offset, record)`` pairs, in offset order (constant memory)."""
    verifier = ChainVerifier(key=key, genesis=genesis, partition=partition, anchor=anchor)
    for offset, record in records:
        verifier.feed(offset, record)
        if verifier.done:
            break
    return verifier.result()
