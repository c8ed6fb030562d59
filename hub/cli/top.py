"""``hub top``: a terminal view of the hub's live figures for operators without Grafana.

Every ``--interval`` seconds it reads ``/metrics`` (open) and ``/v1/stats`` (needs a token) from the API and
shows: delivery throughput per direction, events by outcome, quarantine by rule and denials (per second
over the last interval, and totals since the API process started), ingress-to-feed latency percentiles from
the ``hub_event_latency_seconds`` histogram (over the last interval when records flowed in it, else since
start), consumer lag, the audit chain status, the catalogue sizes and the figures of docs/domain.md (durable counts,
every day counted). ``--once`` prints one frame (rates need two samples, so they show as "-").

The computation (``Sample``, ``frame``, ``histogram_quantile``) is pure; ``render`` makes it rich renderables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from hub.cli.control import ApiOpt, TokenOpt
from hub.cli.stats import figures_table
from hub.control.tokens import process_token
from hub.metrics.bundle import DIRECTIONS, OUTCOMES
from hub.settings import Settings

console = Console()

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition -> {(sample name, labels): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``match``."""
    want = set(match.items())
    return sum(v for (n, labels), v in samples.items() if n == name and want <= labels)


def by_label(samples: Samples, name: str, label: str, **match: str) -> dict[str, float]:
    want = set(match.items())
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name and want <= labels:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """Cumulative histogram buckets [(upper bound, count)], summed over every other label, sorted by bound."""
    out: dict[float, float] = {}
    for (n, labels), v in samples.items():
        if n == f"{name}_bucket":
            le = float(dict(labels)["le"])
            out[le] = out.get(le, 0.0) + v
    return sorted(out.items())


def histogram_quantile(q: float, cumulative: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket the rank falls in.

    None without observations; the highest finite bound if the rank falls in the +Inf bucket.
    """
    bounds = list(cumulative)
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class Sample:
    """One reading of the API: when, the metrics, and the /v1/stats answer (or why it is missing)."""

    at: float
    metrics: Samples = field(default_factory=dict)
    stats: dict[str, Any] | None = None
    error: str | None = None


def _delta(cur: Samples, prev: Samples | None) -> Samples | None:
    if prev is None:
        return None
    return {k: v - prev.get(k, 0.0) for k, v in cur.items()}


def frame(prev: Sample | None, cur: Sample) -> dict[str, Any]:
    """What one screen shows (pure): rates over [prev, cur], totals and gauges at cur."""
    m = cur.metrics
    dt = (cur.at - prev.at) if prev is not None else 0.0
    delta = _delta(m, prev.metrics) if prev is not None and dt > 0 else None

    def rate(name: str, **match: str) -> float | None:
        return None if delta is None else max(0.0, total(delta, name, **match)) / dt

    window = buckets(delta, "hub_event_latency_seconds") if delta is not None else []
    windowed = bool(window) and window[-1][1] > 0
    latency_buckets = window if windowed else buckets(m, "hub_event_latency_seconds")
    chain = m.get(("hub_audit_chain_ok", frozenset()))
    return {
        "error": cur.error,
        "interval_s": dt or None,
        "deliveries": {d: {"rate": rate("hub_records_delivered_total", direction=d),
                           "total": total(m, "hub_records_delivered_total", direction=d)} for d in DIRECTIONS},
        "outcomes": {o: {"rate": rate("hub_events_total", outcome=o),
                         "total": total(m, "hub_events_total", outcome=o)} for o in OUTCOMES},
        "quarantine": {rule: {"rate": rate("hub_quarantined_total", rule=rule), "total": n}
                       for rule, n in sorted(by_label(m, "hub_quarantined_total", "rule").items())},
        "denials": {"rate": rate("hub_events_total", outcome="denied"),
                    "total": total(m, "hub_events_total", outcome="denied")},
        "calls": {"rate": rate("hub_calls_total"), "total": total(m, "hub_calls_total")},
        "latency": {
            "window": "last interval" if windowed else "since start",
            **{f"p{int(q * 100)}": histogram_quantile(q, latency_buckets) for q in (0.5, 0.95, 0.99)},
        },
        "consumer_lag": total(m, "hub_consumer_lag") if any(n == "hub_consumer_lag" for n, _ in m) else None,
        "objections_open": (total(m, "hub_objections_open")  # summed over its state label
                            if any(n == "hub_objections_open" for n, _ in m) else None),
        "objections_overdue": m.get(("hub_objections_overdue", frozenset())),
        "audit_chain_ok": None if chain is None else chain == 1.0,
        "catalogue": {t: int(n) for t, n in sorted(by_label(m, "hub_catalog_resources", "tier").items()) if n},
        "stats": cur.stats,
    }


# ------------------------------------------------------------------------------------------ rendering


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}/s"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{int(value):,}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:,.1f} ms" if value < 1 else f"{value:,.2f} s"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    return table


def render(f: Mapping[str, Any], api: str = "") -> Group:
    throughput = _table("records delivered", "direction", "rate", "total")
    for direction, v in f["deliveries"].items():
        throughput.add_row(direction, _rate(v["rate"]), _count(v["total"]))
    outcomes = _table("events", "outcome", "rate", "total")
    for outcome, v in f["outcomes"].items():
        outcomes.add_row(outcome, _rate(v["rate"]), _count(v["total"]))
    outcomes.add_row("calls", _rate(f["calls"]["rate"]), _count(f["calls"]["total"]))
    rules = _table("quarantine and denials", "rule", "rate", "total")
    for rule, v in f["quarantine"].items():
        rules.add_row(rule, _rate(v["rate"]), _count(v["total"]))
    rules.add_row("[bold]denied[/]", _rate(f["denials"]["rate"]), _count(f["denials"]["total"]))
    latency = _table(f"latency ({f['latency']['window']})", "quantile", "ingress to feed")
    for q in ("p50", "p95", "p99"):
        latency.add_row(q, _seconds(f["latency"][q]))
    chain = f["audit_chain_ok"]
    chain_text = "[green]ok[/]" if chain else "[bold red]BROKEN[/]" if chain is False else "-"
    health = _table("health", "", "")
    health.add_row("consumer lag", _count(f["consumer_lag"]))
    health.add_row("audit chain", chain_text)
    health.add_row("objections open", _count(f["objections_open"]))
    health.add_row("objections overdue", _count(f["objections_overdue"]))
    for tier, n in f["catalogue"].items():
        health.add_row(f"catalogue {tier}", _count(n))
    stats = f.get("stats") or {}
    parts: list[Any] = [Columns([throughput, outcomes, rules, latency, health])]
    parts.append(figures_table(stats.get("exchange"), stats.get("catalogue")) if stats
                 else "[dim]/v1/stats unavailable (no token?)[/]")
    subtitle = f"every {f['interval_s']:.1f} s" if f.get("interval_s") else "one sample: rates need two"
    if f.get("error"):
        parts.insert(0, f"[bold red]{f['error']}[/]")
    return Group(Panel(Group(*parts), title=f"hub top {api}", subtitle=subtitle))


# ------------------------------------------------------------------------------------------ the shell


def read_sample(http: httpx.Client) -> Sample:
    now = time.monotonic()
    try:
        response = http.get("/metrics")
        response.raise_for_status()
        metrics = parse_metrics(response.text)
    except httpx.HTTPError as exc:
        return Sample(now, error=f"cannot read {http.base_url}metrics: {exc}")
    stats, error = None, None
    try:
        answer = http.get("/v1/stats")
        if answer.is_success:
            stats = answer.json()
        else:
            error = f"/v1/stats: {answer.status_code} {answer.text[:200]}"
    except httpx.HTTPError as exc:
        error = f"/v1/stats: {exc}"
    return Sample(now, metrics, stats, error)


def top(
    api: ApiOpt = None,
    token: TokenOpt = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
) -> None:
    """Live view of the hub (throughput, quarantine and denials, latency, lag, audit chain, catalogue, figures)."""
    settings = Settings()
    url = (api or settings.api_url).rstrip("/")
    secret = process_token(settings, token)
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    with httpx.Client(base_url=url, headers=headers, timeout=5) as http:
        if once:
            sample = read_sample(http)
            console.print(render(frame(None, sample), url))
            raise typer.Exit(1 if sample.error and not sample.metrics else 0)
        previous = read_sample(http)
        with Live(render(frame(None, previous), url), console=console, refresh_per_second=4,
                  screen=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    current = read_sample(http)
                    live.update(render(frame(previous, current), url))
                    previous = current
            except KeyboardInterrupt:
                pass
