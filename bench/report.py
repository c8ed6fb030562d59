"""The benchmarks' latest results as one chart (the README shows it) and a table.

    python -m bench.report [--results bench/results] [--out bench/results/latest.png]

Reads the JSON files the benchmarks append to (``bench.throughput``: events/s of the raw aiokafka passthrough
and of the hub, ingress-to-feed latency at half the hub's rate; ``bench.call_latency``: call latency and rate
per configuration) and draws, for the latest run of each, throughput and latency percentiles side by side.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hub.settings import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"


def latest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    runs = json.loads(path.read_text())
    return runs[-1] if runs else None


def call_rows(calls: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in calls.values() if isinstance(v, dict) and "hub" in v and "raw" in v]


def draw(throughput: dict[str, Any] | None, calls: dict[str, Any] | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    if throughput:
        names = ["raw aiokafka\npassthrough", "hub full\npipeline"]
        rates = [throughput["raw_events_per_s"], throughput["hub_events_per_s"]]
        bars = ax.bar(names, rates, color=["#999999", "#2a6fb0"])
        ax.bar_label(bars, labels=[f"{r:,.0f}" for r in rates])
        ax.axhline(10_000, color="#c0392b", linestyle="--", linewidth=1, label="target 10,000/s")
        ax.set_title(f"events/s, one worker (ratio {throughput['ratio']:.2f}x)")
        ax.legend(loc="upper right")
    ax = axes[1]
    if throughput and "latency_p50_ms" in throughput:
        names = ["p50", "p99", "max"]
        values = [throughput["latency_p50_ms"], throughput["latency_p99_ms"], throughput["latency_max_ms"]]
        bars = ax.bar(names, values, color="#2a6fb0")
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in values])
        ax.axhline(100, color="#c0392b", linestyle="--", linewidth=1, label="p99 target 100 ms")
        ax.set_title(f"ingress-to-feed ms at {throughput['latency_rate_events_per_s']:,.0f} events/s (half max)")
        ax.legend(loc="upper left")
    ax = axes[2]
    if calls:
        rows = call_rows(calls)
        labels = [f"{r['workers']}w x{r['in_flight']}" for r in rows]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [r["hub"]["p50_ms"] for r in rows], width=0.4, label="p50 ms")
        ax.bar([i + 0.2 for i in x], [r["hub"]["p99_ms"] for r in rows], width=0.4, label="p99 ms")
        for i, r in zip(x, rows, strict=True):
            ax.annotate(f"{r['hub']['calls_per_s']:,.0f}/s", (i, r["hub"]["p99_ms"]), ha="center", va="bottom")
        ax.set_xticks(list(x), labels)
        ax.axhline(15, color="#c0392b", linestyle="--", linewidth=1, label="p99 target 15 ms (1 in flight)")
        ax.set_title("calls: latency (ms) and rate per workers x in flight")
        ax.legend(loc="upper left")
    when = (throughput or calls or {}).get("when", "")
    fig.suptitle(f"hub benchmarks, latest run {when} (2-core machine, broker beside the worker)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--out", default=str(RESULTS / "latest.png"))
    args = parser.parse_args()
    results = Path(args.results)
    throughput = latest(results / "throughput.json")
    calls = latest(results / "call_latency.json")
    draw(throughput, calls, Path(args.out))
    if throughput:
        print(f"throughput: raw {throughput['raw_events_per_s']:,.0f}/s, hub {throughput['hub_events_per_s']:,.0f}/s,"
              f" ratio {throughput['ratio']:.2f}")
        if "latency_p99_ms" in throughput:
            print(f"latency at half rate: p50 {throughput['latency_p50_ms']:.0f} ms, "
                  f"p99 {throughput['latency_p99_ms']:.0f} ms")
    for r in call_rows(calls or {}):
        print(f"calls {r['workers']} worker(s) x{r['in_flight']}: p50 {r['hub']['p50_ms']:.1f} ms, "
              f"p99 {r['hub']['p99_ms']:.1f} ms, {r['hub']['calls_per_s']:,.0f} calls/s")
    print(f"chart: {args.out}")


if __name__ == "__main__":
    main()
