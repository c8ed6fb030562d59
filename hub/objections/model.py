"""An objection (异议) as the hub stores it: one version per state change, ``schemas/hub/objection.avsc``.

Pure data: the rules that move it from state to state are in :mod:`hub.objections.machine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from hub.policy.model import to_epoch_ms

State = Literal["filed", "accepted", "flagged", "verified", "unflagged", "archived"]
STATES: tuple[State, ...] = ("filed", "accepted", "flagged", "verified", "unflagged", "archived")
Outcome = Literal["corrected", "rejected"]


class Step(BaseModel):
    """One entry of an objection's history: the state entered (or, for an escalation, the state it was in)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: State
    at: int
    actor: str
    note: str | None = None


ESCALATION_NOTE = "escalated: "  # a history step whose note starts so records an escalation, not a state change


class Objection(BaseModel):
    """The latest version of one objection (see ``schemas/hub/objection.avsc`` for every field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objection_id: str
    resource: str
    record_key: str
    event_id: str | None = None
    field: str | None = None
    filer: str
    provider: str
    state: State
    reason: str
    proposed_value: str | None = None
    outcome: Outcome | None = None
    resolution: str | None = None
    corrected_event_id: str | None = None
    filed_at: int
    updated_at: int
    deadline: int | None = None
    recipients: tuple[str, ...] = ()
    escalated: bool = False
    history: tuple[Step, ...] = ()

    @property
    def id(self) -> str:  # the control topics key every entity by ``id``
        return self.objection_id

    @property
    def is_open(self) -> bool:
        return self.state != "archived"

    @property
    def is_flagged(self) -> bool:
        """The record is marked as under objection from ``flagged`` until ``unflagged``."""
        return self.state in ("flagged", "verified")

    def to_avro(self) -> dict[str, Any]:
        data = self.model_dump()
        data["recipients"] = list(self.recipients)
        data["history"] = [dict(step) for step in data["history"]]
        return data

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Objection:
        data = dict(record)
        for name in ("filed_at", "updated_at"):
            data[name] = to_epoch_ms(data[name])
        if data.get("deadline") is not None:
            data["deadline"] = to_epoch_ms(data["deadline"])
        data["recipients"] = tuple(data.get("recipients") or ())
        data["history"] = tuple(Step(**{**s, "at": to_epoch_ms(s["at"])}) for s in data.get("history") or ())
        return cls.model_validate(data)
