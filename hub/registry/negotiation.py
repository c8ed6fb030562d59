"""Content negotiation of the registry, as Confluent's (Jersey) does it: the client's ``Accept`` q-weights times
the server's own preference for each type it can produce.

Confluent's resources produce ``application/vnd.schemaregistry.v1+json`` (qs 1), ``application/vnd.schemaregistry
+json`` (qs 0.9) and ``application/json`` (qs 0.5); a request that accepts none of them gets 406.
"""

from __future__ import annotations

V1 = "application/vnd.schemaregistry.v1+json"
PRODUCED: tuple[tuple[str, float], ...] = (
    (V1, 1.0),
    ("application/vnd.schemaregistry+json", 0.9),
    ("application/json", 0.5),
)


def parse_accept(header: str) -> list[tuple[str, float]]:
    """``[(media range, q), ...]`` of an Accept header (malformed q values count as 0: not acceptable)."""
    ranges = []
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        if "/" not in media:
            media = "*/*" if media == "*" else media + "/*"
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(value.strip())))
                except ValueError:
                    q = 0.0
        ranges.append((media, q))
    return ranges


def _quality(media: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """The client's q for one produced type (the most specific matching range wins) and how specific it was."""
    kind, sub = media.split("/", 1)
    best: tuple[int, float] | None = None
    for pattern, q in ranges:
        p_kind, _, p_sub = pattern.partition("/")
        if pattern == media:
            specificity = 2
        elif p_kind == kind and p_sub == "*":
            specificity = 1
        elif pattern == "*/*":
            specificity = 0
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q)
    return (best[1], best[0]) if best is not None else (0.0, -1)


def choose(accept: str | None) -> str | None:
    """The media type to answer in, or None when the client accepts none the registry produces (406)."""
    if accept is None or not accept.strip():
        return V1
    ranges = parse_accept(accept)
    if not ranges:
        return V1
    best: tuple[float, int, float] | None = None
    chosen = None
    for media, server_q in PRODUCED:
        q, specificity = _quality(media, ranges)
        if q <= 0:
            continue
        score = (q * server_q, specificity, server_q)
        if best is None or score > best:
            best, chosen = score, media
    return chosen
