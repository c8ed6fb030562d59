"""The README's registry client snippets work as shown: the Python one (confluent-kafka) and the curl one run
against a real ``hub up``, with only the address and the token put in."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from .hubproc import HubProcess

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
