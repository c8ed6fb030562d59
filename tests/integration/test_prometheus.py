"""Debian's real ``prometheus`` scraping the running hub, with the deploy/ configuration and alert rules: every
contract metric (docs/contract.md) arrives, the counters move exactly as ``/v1/stats`` does, and every query of
the Grafana dashboard returns data."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hub.broker.manager import free_port
from hub.settings import REPO_ROOT

from .hubproc import HubProcess
from .stats_helpers import get_stats, numbers, publish_mix, settled_stats

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="Debian's prometheus is not installed (scripts/setup.sh)"),
]

DEPLOY = REPO_ROOT / "deploy"
SPEC_METRICS = (
    "hub_events_total", "hub_records_delivered_total", "hub_calls_total", "hub_quarantined_total",
    "hub_event_latency_seconds_bucket", "hub_event_latency_seconds_count", "hub_event_latency_seconds_sum",
    "hub_objections_open", "hub_catalog_resources", "hub_audit_chain_ok",
)
TEAM_METRICS = ("hub_consumer_lag", "hub_worker_batches_in_flight", "hub_objections_overdue")


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus(hub: HubProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """deploy/prometheus/prometheus.local.yml pointed at the test hub, scraping every second, with the alert rules."""
    work = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.local.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["scrape_interval"] = "1s"
        target = hub.api.removeprefix("http://") if job["job_name"] == "hub" else f"127.0.0.1:{port}"
        for static in job["static_configs"]:
            static["targets"] = [target]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(work / 'prometheus.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # poll interval: 300 polls are the deadline
        else:  # the deadline passed: fail here, not later in a confusing way
            raise RuntimeError(f"prometheus not ready in 30 s: {(work / 'prometheus.log').read_text()[-3000:]}")
        yield Prometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def eventually(check, timeout: float = 60, what: str = "") -> Any:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.5)


def hub_counters(hub: HubProcess) -> dict[str, float]:
    """The counters compared, as the hub's /metrics has them now."""
    m = hub.metrics()

    def total(name: str, **labels: str) -> float:
        want = set(labels.items())
        return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))

    out = {f"direction:{d}": total("hub_records_delivered_total", direction=d) for d in ("down", "up", "lateral",
                                                                                       "regional")}
    out["publish"] = total("hub_events_total", kind="publish", outcome="ok")
    out["quarantined"] = total("hub_quarantined_total")
    out["denied"] = total("hub_events_total", outcome="denied")
    return out


def prometheus_counters(prom: Prometheus) -> dict[str, float]:
    """The same counters as Prometheus scraped them last (``or vector(0)``: series not created yet are 0)."""
    out = {f"direction:{d}": prom.value(f'sum(hub_records_delivered_total{{job="hub", direction="{d}"}})')
           for d in ("down", "up", "lateral", "regional")}
    out["publish"] = prom.value('sum(hub_events_total{job="hub", kind="publish", outcome="ok"}) or vector(0)')
    out["quarantined"] = prom.value('sum(hub_quarantined_total{job="hub"}) or vector(0)')
    out["denied"] = prom.value('sum(hub_events_total{job="hub", outcome="denied"}) or vector(0)')
    return out


def scrapes(prom: Prometheus) -> int:
    """How many times Prometheus has scraped the hub successfully (in the last 10 minutes)."""
    return int(prom.value('sum(sum_over_time(up{job="hub"}[10m]))') or 0)


def stats_counters(stats: dict[str, Any]) -> dict[str, float]:
    flat = numbers(stats)
    out = {f"direction:{d}": float(flat.get(f"direction:{d}", 0)) for d in ("down", "up", "lateral", "regional")}
    out["publish"] = float(flat.get("action:publish", 0))
    out["quarantined"] = float(flat.get("action:quarantine", 0))
    out["denied"] = float(flat.get("action:deny", 0))
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "hub.json").read_text())
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables as the dashboard would send them for the last hour at a 1 s scrape interval."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "15s")
    assert "$" not in re.sub(r"\{\{[^}]*\}\}", "", expr), f"unsubstituted Grafana variable in {expr}"
    return expr


async def test_prometheus_scrapes_every_metric_counts_match_stats_and_the_dashboard_has_data(
    hub: HubProcess, prometheus: Prometheus,
) -> None:
    # Quiet hub, and Prometheus scraping it and caught up with its /metrics: the starting point of both counts.
    await eventually(lambda: scrapes(prometheus) >= 3, what="prometheus to scrape the hub")
    stats_before = stats_counters(await settled_stats(hub))
    before = await eventually(lambda: (lambda h: h if prometheus_counters(prometheus) == h else None)(
        hub_counters(hub)), what="prometheus to catch up with /metrics")

    good, bad = await publish_mix(hub, n_vax=90, n_licences=30, n_bad=4)

    # The hub counted them durably, and Prometheus scraped the same counters since.
    stats_after = await eventually(
        lambda: (lambda s: s if stats_counters(s)["publish"] - stats_before["publish"] == len(good)
                 and stats_counters(s)["quarantined"] - stats_before["quarantined"] == len(bad) else None)(
            get_stats(hub)), what="/v1/stats to count the published records")
    stats_after = await settled_stats(hub)
    after = await eventually(lambda: (lambda h: h if prometheus_counters(prometheus) == h else None)(
        hub_counters(hub)), what="prometheus to scrape the new counts")
    scraped = scrapes(prometheus)
    await eventually(lambda: scrapes(prometheus) >= scraped + 2, what="two more scrapes")  # rate() needs two
    moved_in_prometheus = {k: after[k] - before[k] for k in after}
    moved_in_stats = {k: v - stats_before[k] for k, v in stats_counters(stats_after).items()}
    assert moved_in_prometheus == moved_in_stats
    assert moved_in_stats["publish"] == len(good) and moved_in_stats["quarantined"] == len(bad)
    assert moved_in_stats["direction:down"] == len(good) and moved_in_stats["direction:regional"] == 2 * 30

    # Every contract metric (and the team's two gauges) is in Prometheus, with only bounded labels.
    for name in SPEC_METRICS + TEAM_METRICS:
        series = prometheus.query(f'{name}{{job="hub"}}')
        assert series, f"{name} is not in Prometheus"
        for s in series:
            for label, value in s["metric"].items():
                assert label in ("__name__", "job", "instance", "service", "kind", "from_tier", "to_tier",
                                 "outcome", "direction", "rule", "tier", "state", "le"), (name, label)
                assert not re.fullmatch(r"(municipal|district|region)\.[\w.-]+", value), (name, label, value)
    assert prometheus.value('min(hub_audit_chain_ok{job="hub"})') == 1.0
    catalogue = get_stats(hub)["catalogue"]["by_tier"]
    assert prometheus.value('max(hub_catalog_resources{job="hub", tier="municipal"})') == catalogue["municipal"]

    # Every query of the Grafana dashboard returns data.
    empty = [(title, expr) for title, expr in dashboard_exprs() if not prometheus.query(grafana_to_promql(expr))]
    assert not empty, f"dashboard queries without data: {empty}"
    latency = prometheus.value(grafana_to_promql(
        "histogram_quantile(0.99, sum by (le) (rate(hub_event_latency_seconds_bucket[$__rate_interval])))"))
    assert latency is not None and 0 < latency < 60

    # The alert rules loaded and evaluate.
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"]: r["health"] for g in rules for r in g["rules"]}
    assert set(loaded) == {"HubWorkerDown", "ConsumerLagGrowing", "QuarantineRateHigh", "AuditChainBroken",
                           "ObjectionTimeLimitBreached", "DenialSpike"}
    await eventually(lambda: all(h == "ok" for h in (r["health"] for g in httpx.get(
        f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"] for r in g["rules"])),
        timeout=30, what="every alert rule to evaluate")
