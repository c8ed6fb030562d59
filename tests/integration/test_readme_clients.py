"""The README's registry client snippets work as shown: the Python one (confluent-kafka) and the curl one run
against a real ``hub up``, with only the address and the token put in."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from hub.contract import H_EVENT_ID, H_RESOURCE
from hub.demo.data import record_generator
from hub.registry import framing

from .hubproc import HubProcess, TopicReader, header
from .test_exchange import PARSED, RESOURCE, SCHEMA, publish, schema_id

pytestmark = pytest.mark.integration

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
DEFAULT_URL = "http://127.0.0.1:8081"


def snippet(name: str, language: str) -> str:
    """The fenced code block that follows ``<!-- snippet: <name> ... -->`` in the README."""
    found = re.search(rf"<!-- snippet: {re.escape(name)}\b[^>]*-->\s*```{language}\n(.*?)```", README, re.S)
    assert found, f"the README has no {language} snippet {name!r}"
    return found.group(1)


def test_the_python_snippet_registers_and_reads_with_basic_auth(hub: HubProcess) -> None:
    code = snippet("python-registry", "python").replace(DEFAULT_URL, hub.api).replace("<token>", hub.token)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md (python-registry)", "exec"), namespace)  # noqa: S102 - the README's own code
    assert isinstance(namespace["schema_id"], int) and namespace["schema_id"] > 0


def test_the_curl_snippet_registers_a_schema(hub: HubProcess) -> None:
    script = snippet("curl-registry", "bash").replace(DEFAULT_URL, hub.api)
    result = subprocess.run(["bash", "-c", script], env=dict(os.environ, HUB_TOKEN=hub.token), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout)["id"], int), result.stdout


async def test_the_kcat_snippet_reads_a_feed_with_the_hubs_headers(hub: HubProcess) -> None:
    """One vaccination record reaches feed.municipal.civil-affairs; the README's kcat line shows it, with its
    headers, and its curl line shows the schema the value is framed with."""
    sid = await schema_id(hub)
    record = record_generator(SCHEMA)(random.Random(7))
    event_id = f"readme-kcat-{uuid.uuid4()}"
    reader = await TopicReader(hub.bootstrap).start(["feed.municipal.civil-affairs"])
    try:
        await publish(hub, [(framing.encode(sid, PARSED, record), [(H_RESOURCE, RESOURCE.encode()),
                                                                   (H_EVENT_ID, event_id.encode())])])
        await reader.read_until(lambda rs: any(header(r, H_EVENT_ID) == event_id.encode() for r in rs))
    finally:
        await reader.stop()
    script = snippet("kcat-feed", "bash").replace("127.0.0.1:9092", hub.bootstrap).replace(DEFAULT_URL, hub.api)
    ran = subprocess.run(["bash", "-c", script], capture_output=True, timeout=60)
    # the feed may hold other tests' records, keys and headers of any bytes: read the output as a terminal would
    result = subprocess.CompletedProcess(ran.args, ran.returncode, ran.stdout.decode(errors="replace"),
                                         ran.stderr.decode(errors="replace"))
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if event_id in x)
    assert line.startswith("partition ") and f"hub-resource={RESOURCE}" in line and "hub-lineage=" in line
    latest = json.loads(result.stdout.splitlines()[-1])
    assert latest["subject"] == f"{RESOURCE}-value" and latest["id"] == sid
