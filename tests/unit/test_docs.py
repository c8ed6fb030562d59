"""The contract belongs to the repository: nothing points at documents outside it, and ``docs/contract.md``
names every metric, topic, header, quarantine rule and top-level ``hub`` command the code defines."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import typer.main

import hub.contract
from hub.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONTRACT = DOCS / "contract.md"

# Spelled in two parts so that this file does not mention it.
OUTSIDE = (".." + "/shared").encode()
SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def repository_files() -> list[Path]:
    found: list[Path] = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]  # generated
        found += [Path(folder) / name for name in files]
    return found


def contract_text() -> str:
    return CONTRACT.read_text(encoding="utf-8")


def test_no_file_points_outside_the_repository() -> None:
    offenders = []
    for path in repository_files():
        relative = path.relative_to(ROOT).as_posix()
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if OUTSIDE in data:
            offenders.append(relative)
    assert offenders == [], f"these files mention {OUTSIDE.decode()}; link the docs/ file instead: {offenders}"


def test_docs_exist_and_link_each_other() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("contract.md", "domain.md", "performance.md", "reliability.md"):
        assert (DOCS / name).is_file()
        assert f"(docs/{name})" in readme, f"README.md does not link docs/{name}"
    for path in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).is_file(), f"{path.name} links {target}, which does not exist"


def metric_names() -> list[str]:
    source = (ROOT / "hub" / "metrics" / "bundle.py").read_text(encoding="utf-8")
    names = sorted(set(re.findall(r"\"(hub_[a-z_]+)\"", source)))
    assert "hub_events_total" in names and "hub_event_latency_seconds" in names
    return names


@pytest.mark.parametrize("name", metric_names())
def test_every_metric_is_in_the_contract(name: str) -> None:
    assert f"`{name}`" in contract_text()


def topic_names() -> list[str]:
    constants = {v for k, v in vars(hub.contract).items() if k.endswith("_TOPIC") and isinstance(v, str)}
    constants |= set(hub.contract.CONTROL_TOPICS)
    assert {"hub.audit", "_schemas", "hub.records.index"} <= constants
    return sorted(constants | set(hub.contract.node_topics("<node>")))


@pytest.mark.parametrize("topic", topic_names())
def test_every_topic_is_in_the_contract(topic: str) -> None:
    assert f"`{topic}`" in contract_text()


@pytest.mark.parametrize(
    "header", sorted(v for k, v in vars(hub.contract).items() if k.startswith("H_") and isinstance(v, str))
)
def test_every_header_is_in_the_contract(header: str) -> None:
    assert f"`{header}`" in contract_text()


def quarantine_rules() -> list[str]:
    rules = set()
    for path in (ROOT / "hub").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        rules |= set(re.findall(r"\b(?:Rejected|FramingError)\(\s*\"([a-z_]+)\"", source))
        rules |= set(re.findall(r"^QUARANTINE_RULE = \"([a-z_]+)\"", source, re.MULTILINE))
    assert {"missing_header", "bad_magic", "bad_call_request"} <= rules
    return sorted(rules)


@pytest.mark.parametrize("rule", quarantine_rules())
def test_every_quarantine_rule_is_in_the_contract(rule: str) -> None:
    assert f"| `{rule}` |" in contract_text()


def cli_commands() -> list[str]:
    group = typer.main.get_command(app)
    names = sorted(group.commands)  # type: ignore[attr-defined]
    assert {"up", "worker", "status", "broker", "audit"} <= set(names)
    return names


@pytest.mark.parametrize("command", cli_commands())
def test_every_top_level_command_is_in_the_contract(command: str) -> None:
    assert f"`hub {command}" in contract_text()
