"""What a fuzzed API response may be, per caller: never a 5xx, and a 2xx only where that caller has the right."""

from __future__ import annotations

# Registry reads are open, as Confluent's are (hub/api/auth.py): every GET outside /v1, the lookup
# ``POST /subjects/{subject}`` and the compatibility checks, which change nothing. /healthz is open too.
OPEN_POSTS = frozenset({
    "/subjects/{subject}",
    "/compatibility/subjects/{subject}/versions",
    "/compatibility/subjects/{subject}/versions/{version}",
})
# Registering a schema the subject already holds is that lookup too (what Confluent serializers send); it is
# open only if it changes nothing, which the fuzz test checks by the subject's versions before and after.
UNCHANGED_REGISTRATION = ("POST", "/subjects/{subject}/versions")
# Operator-only for any node token (a node rotates only its own token).
OPERATOR_ONLY = frozenset({
    ("POST", "/v1/nodes"), ("PATCH", "/v1/nodes/{node_id}"), ("DELETE", "/v1/nodes/{node_id}"),
    ("POST", "/v1/scenarios"), ("PATCH", "/v1/scenarios/{scenario_id}"),
    ("PUT", "/config"), ("DELETE", "/config"), ("PUT", "/mode"),
})
REGISTRY_WRITES_BY_SUBJECT = frozenset({
    ("POST", "/subjects/{subject}/versions"), ("DELETE", "/subjects/{subject}"),
    ("DELETE", "/subjects/{subject}/versions/{version}"), ("PUT", "/config/{subject}"),
    ("DELETE", "/config/{subject}"), ("PUT", "/mode/{subject}"), ("DELETE", "/mode/{subject}"),
})


def open_to_anyone(method: str, path: str) -> bool:
    """Routes that answer without a token (the list the docs give)."""
    if path.startswith("/v1/"):
        return False
    return method == "GET" or (method == "POST" and path in OPEN_POSTS)


def node_may(method: str, path: str, params: dict[str, str], node: str) -> bool:
    """Whether a node's token may get a 2xx from this operation (only its own token, never hub.* subjects)."""
    if (method, path) in OPERATOR_ONLY:
        return False
    if (method, path) == ("POST", "/v1/nodes/{node_id}/token"):
        return params.get("node_id") == node
    if (method, path) in REGISTRY_WRITES_BY_SUBJECT:
        return not str(params.get("subject", "")).startswith(("hub.", "_"))
    return True


def violation(who: str, method: str, path: str, params: dict[str, str], status: int, node: str) -> str | None:
    """Why this answer is wrong for this caller, or None."""
    if status >= 500:
        return f"{status} from {method} {path}"
    if not 200 <= status < 300 or who == "operator":
        return None
    if who in ("none", "wrong", "malformed"):
        if open_to_anyone(method, path) or (method, path) == UNCHANGED_REGISTRATION:
            return None  # the unchanged registration is checked separately
        return f"{status} without a valid token ({who}) from {method} {path}"
    if who == "node" and not node_may(method, path, params, node):
        return f"{status} for a node token from operator-only {method} {path}"
    return None
