"""The hub's own Avro schema files (``schemas/hub/*.avsc``), read once per process."""

from __future__ import annotations

import functools
import json

from hub.settings import REPO_ROOT


@functools.cache
def schema_text(relative: str) -> str:
    """A schema file of the repository as compact JSON text (what the registry is sent)."""
    return json.dumps(json.loads((REPO_ROOT / relative).read_text(encoding="utf-8")))


AUDIT_SCHEMA_FILE = "schemas/hub/audit_record.avsc"
QUARANTINE_SCHEMA_FILE = "schemas/hub/quarantine_record.avsc"
CALL_REQUEST_SCHEMA_FILE = "schemas/hub/call_request.avsc"
CALL_REPLY_SCHEMA_FILE = "schemas/hub/call_reply.avsc"
