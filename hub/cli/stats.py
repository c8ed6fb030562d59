"""``hub stats``: the figures of docs/domain.md (and the counts behind them) from ``/v1/stats``, for a date range."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from hub.cli.control import ApiOpt, JsonOpt, TokenOpt, request_and_show

err = Console(stderr=True)



def _day(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        err.print(f"[bold red]error:[/] --{name} {value!r} is not a day (YYYY-MM-DD)")
        raise typer.Exit(2) from None


def stats(
    first: Annotated[str | None, typer.Option("--from", help="first day counted, YYYY-MM-DD (China time)")] = None,
    last: Annotated[str | None, typer.Option("--to", help="last day counted, inclusive")] = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The exchange figures (docs/domain.md: calls, records down/up/regional, locality returns, catalogue
    sizes) counted by the hub over a date range (default: every day counted), with their definitions."""
    params = {"from": _day(first, "from"), "to": _day(last, "to")}
    request_and_show(api, token, as_json, "GET", "/v1/stats", params=params, show=render_stats)


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def figures_table(exchange: dict[str, Any] | None, catalogue: dict[str, Any] | None = None) -> Table:
    """The exchange figures: label, the hub's value, what it counts, and what Shanghai reported."""
    span = "every day counted"
    if exchange is not None and (exchange.get("from") or exchange.get("to")):
        span = f"{exchange.get('from') or '…'} to {exchange.get('to') or '…'}"
    table = Table(title=f"Exchange figures ({span})", title_justify="left")
    table.add_column("figure")
    table.add_column("hub", justify="right", style="bold")
    table.add_column("hub statistic", style="dim")
    table.add_column("Shanghai reported", justify="right", style="dim")
    if exchange is None:
        table.add_row("(not counted yet: the hub has no count snapshots)", "-", "", "")
        by_tier = (catalogue or {}).get("by_tier", {})
        for tier in ("municipal", "district"):
            table.add_row(f"resource catalogue entries, {tier}", _n(by_tier.get(tier, 0)), "catalogue size by tier", "")
        return table
    for figure in exchange["figures"]:
        table.add_row(figure["label"], _n(figure["value"]), figure["definition"], figure["reported"])
    return table


def counts_tables(exchange: dict[str, Any]) -> list[Table]:
    counts = exchange.get("counts") or {}
    out = []
    for key, title in (("by_action", "events by action"), ("by_direction", "deliveries by direction"),
                       ("by_tier_pair", "deliveries and calls by tiers"), ("by_day", "events by day")):
        values = counts.get(key) or {}
        if not values:
            continue
        table = Table(title=title, title_justify="left")
        table.add_column(key.removeprefix("by_").replace("_", " "))
        table.add_column("count", justify="right")
        for name, n in values.items():
            table.add_row(Text(str(name)), _n(n))  # data, never markup
        out.append(table)
    resources = counts.get("by_resource") or {}
    if resources:
        actions = sorted({a for c in resources.values() for a in c})
        table = Table(title="by resource", title_justify="left")
        table.add_column("resource")
        for action in actions:
            table.add_column(action, justify="right")
        for resource, c in resources.items():
            table.add_row(Text(resource), *(_n(c.get(a, 0)) for a in actions))  # a resource name may be any text
        out.append(table)
    return out


def quality_table(exchange: dict[str, Any]) -> Table | None:
    """Per resource and day: records accepted, quarantined, and the quality score (share accepted)."""
    quality = exchange.get("quality") or {}
    if not quality:
        return None
    table = Table(title="data quality by resource and day (share of records passing)", title_justify="left")
    for name in ("resource", "day"):
        table.add_column(name)
    for name in ("passed", "quarantined", "score"):
        table.add_column(name, justify="right")
    table.add_column("quarantined by rule", style="dim")
    for resource, q in quality.items():
        for day, d in (q.get("by_day") or {}).items():
            score = "-" if d.get("score") is None else f"{d['score']:.1%}"
            rules = ", ".join(f"{r} {n:,}" for r, n in (d.get("rules") or {}).items())
            table.add_row(Text(resource), day, _n(d["passed"]), _n(d["quarantined"]), score, Text(rules))
    return table


def render_stats(data: dict[str, Any]) -> Group:
    exchange = data.get("exchange")
    parts: list[Any] = [figures_table(exchange, data.get("catalogue"))]
    if exchange is not None:
        parts.extend(counts_tables(exchange))
        quality = quality_table(exchange)
        if quality is not None:
            parts.append(quality)
    return Group(*parts)
