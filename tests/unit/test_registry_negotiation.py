"""The registry answers in the type the Accept header asks for, as Confluent (Jersey) negotiates it."""

from __future__ import annotations

import pytest

from hub.registry.negotiation import choose

V1 = "application/vnd.schemaregistry.v1+json"
VND = "application/vnd.schemaregistry+json"
JSON = "application/json"


@pytest.mark.parametrize(("accept", "chosen"), [
    (None, V1),
    ("", V1),
    ("*/*", V1),
    ("application/*", V1),
    (V1, V1),
    (VND, VND),
    (JSON, JSON),
    (f"{JSON}, {V1}", V1),  # equal client q: the server's preference
    (f"{VND}; q=1, {V1}; q=0.5", VND),  # 1 x 0.9 beats 0.5 x 1
    (f"{JSON}; q=0.9, {V1}; q=0.1", JSON),  # 0.9 x 0.5 beats 0.1 x 1
    (f"{V1}; q=0, */*", VND),  # v1 refused explicitly, anything else welcome
    ("text/*", None),
    ("application/octet-stream", None),
    ("application/vnd.schemaregistry.v2+json", None),
    (f"{JSON}; q=0", None),
    ("text/html, application/json;q=0.2", JSON),
    ("APPLICATION/JSON", JSON),
])
def test_accept_negotiation(accept: str | None, chosen: str | None) -> None:
    assert choose(accept) == chosen
