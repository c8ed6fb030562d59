"""Grants and scenarios as frozen, validated data (the shapes on ``hub.grants`` and under ``/v1``).

Times are **epoch milliseconds, UTC** everywhere in this package: the ``Grant`` Avro schema
(``schemas/hub/grant_event.avsc``) and the pipeline clock use them, so the hot path compares plain ints.
Aware datetimes and ISO-8601 strings with an offset are accepted on input and converted; naive datetimes
are refused because their zone is a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.catalogue.model import validate_node_id

Mode = Literal["subscribe", "call"]
RowScope = Literal["all", "own_district"]
GrantState = Literal["requested", "active", "revoked", "expired", "denied"]

MODES: tuple[Mode, ...] = ("subscribe", "call")
GRANT_STATES: tuple[GrantState, ...] = ("requested", "active", "revoked", "expired", "denied")

SCENARIO_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_scenario_id(value: str) -> str:
    """Scenario ids are lowercase slugs (``vaccination-follow-up``): safe in headers and URLs."""
    if not SCENARIO_ID.match(value):
        raise ValueError(f"invalid scenario id {value!r}: expected a lowercase slug, e.g. follow-up")
    return value

__all__ = [
    "GRANT_STATES",
    "MODES",
    "Grant",
    "GrantState",
    "Mode",
    "RowScope",
    "Scenario",
    "check_scenario_id",
    "to_epoch_ms",
]


def to_epoch_ms(value: object) -> int:
    """Epoch milliseconds (UTC) from an int, an aware datetime or an ISO-8601 string with an offset."""
    if isinstance(value, bool):
        raise ValueError("a timestamp must be epoch milliseconds or a datetime, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{value!r} is neither epoch milliseconds nor an ISO-8601 timestamp") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: give a timezone (times are UTC)")
        delta = value.astimezone(UTC) - _EPOCH
        return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    raise ValueError(f"expected epoch milliseconds or an aware datetime, got {type(value).__name__}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scenario(_Model):
    """A named application scenario a grant is bound to (``vaccination-follow-up``) and its legal basis."""

    id: str
    title: str = ""
    legal_basis: str = Field(min_length=1)
    description: str = ""

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        """Scenario ids are lowercase slugs."""
        return check_scenario_id(value)


class Grant(_Model):
    """One version of one grant: consumer + resource + scenario + mode, with scope, validity, quota and state.

    ``allowed_fields`` None means every field the consumer's clearance allows; it is never empty (the Avro
    form uses ``[]`` for None). ``valid_to`` None is open-ended. ``daily_quota`` limits calls per day
    (China Standard Time) and only applies to ``call`` grants.
    """

    id: str = Field(min_length=1, max_length=200)
    consumer: str
    resource: str = Field(min_length=1)
    scenario: str
    mode: Mode
    allowed_fields: tuple[str, ...] | None = None
    row_scope: RowScope = "all"
    valid_from: int
    valid_to: int | None = None
    daily_quota: int | None = Field(default=None, ge=0)
    state: GrantState
    requested_by: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    requested_at: int | None = None
    updated_at: int

    @field_validator("consumer")
    @classmethod
    def _check_consumer(cls, value: str) -> str:
        """The consumer must be a well-formed node id (tiered, as in docs/domain.md, Nodes and tiers)."""
        return validate_node_id(value)

    @field_validator("requested_by", "decided_by")
    @classmethod
    def _check_actor(cls, value: str | None) -> str | None:
        """Actors are node ids too (``hub`` for the operator and automatic decisions)."""
        return None if value is None else validate_node_id(value)

    @field_validator("scenario")
    @classmethod
    def _check_scenario(cls, value: str) -> str:
        """Same slug rule as ``Scenario.id`` so a grant can only name a well-formed scenario."""
        return check_scenario_id(value)

    @field_validator("valid_from", "valid_to", "requested_at", "updated_at", mode="before")
    @classmethod
    def _to_ms(cls, value: object) -> object:
        """Accept aware datetimes and ISO strings as well as epoch milliseconds."""
        return None if value is None else to_epoch_ms(value)

    @field_validator("allowed_fields", mode="before")
    @classmethod
    def _check_fields(cls, value: object) -> object:
        """Reject an empty or duplicated field list: empty would be ambiguous with "all" on the wire."""
        if value is None:
            return None
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise ValueError("allowed_fields must be a list of field names or null")
        fields = tuple(value)  # type: ignore[arg-type]
        if not fields:
            raise ValueError("allowed_fields must name at least one field (null: all the clearance allows)")
        if len(set(fields)) != len(fields):
            raise ValueError(f"allowed_fields repeats a field: {list(fields)}")
        return fields

    @model_validator(mode="after")
    def _check(self) -> Grant:
        """Cross-field rules: a non-empty validity window; quotas only on call grants."""
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError(
                f"grant {self.id}: valid_to ({self.valid_to}) must be after valid_from ({self.valid_from})"
            )
        if self.daily_quota is not None and self.mode != "call":
            raise ValueError(f"grant {self.id}: daily_quota applies only to call grants, not {self.mode}")
        return self

    def to_avro(self) -> dict[str, Any]:
        """The record for ``schemas/hub/grant_event.avsc`` (timestamps as epoch ms, ``[]`` for all fields)."""
        data = self.model_dump()
        data["allowed_fields"] = list(self.allowed_fields or ())
        return data

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Grant:
        """A Grant from a decoded ``hub.grants`` value (fastavro gives datetimes; ``[]`` means all fields)."""
        data = dict(record)
        data["allowed_fields"] = data.get("allowed_fields") or None
        return cls.model_validate(data)
