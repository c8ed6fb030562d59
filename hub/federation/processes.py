"""The federation's processes: one dedicated MirrorMaker 2 (Java, from its Maven jars) and one gateway per link.

Like ``LocalBroker``, each process has a log file and a JSON pid file in ``<state dir>/federation`` so ``hub
federation stop`` ends exactly what ``start`` started, and ``owned=True`` makes it die with its parent (tests).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from hub.broker.kafka_config import java_client_properties
from hub.broker.manager import BrokerError, LocalBroker, _cmdline, _die_with_parent, _pid_alive, write_secret
from hub.federation.model import FederationConfig, Link, mm2_properties, properties_text
from hub.settings import Settings

MM2_VERSION = "4.3.1"
"""org.apache.kafka:connect-mirror's version: the newest Maven Central serves here (checked once: a version range
resolved to 4.3.1; 4.4.0, the broker's version, is not served). 4.x clients speak to the 4.4.0 brokers."""
MM2_MAIN = "org.apache.kafka.connect.mirror.MirrorMaker"
GATEWAY_MODULE = "hub.federation.gateway"


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    pid: int
    log_file: str
    started_at: float
    marker: str  # a word of its command line: a recycled pid running something else is not ours

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def federation_dir(settings: Settings) -> Path:
    return settings.state_dir / "federation"


class Supervised:
    """One background process known by name: started once, found again through its pid file, stopped by pid."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir = directory
        self.name = name
        self.info_file = directory / f"{name}.json"
        self.log_file = directory / f"{name}.log"

    def status(self) -> ProcessInfo | None:
        if not self.info_file.exists():
            return None
        try:
            info = ProcessInfo(**json.loads(self.info_file.read_text()))
        except (ValueError, TypeError):
            self.info_file.unlink(missing_ok=True)
            return None
        if _pid_alive(info.pid) and info.marker in _cmdline(info.pid):
            return info
        self.info_file.unlink(missing_ok=True)
        return None

    def start(self, cmd: list[str], marker: str, *, owned: bool, env: dict[str, str] | None = None
              ) -> tuple[ProcessInfo, bool]:
        running = self.status()
        if running is not None:
            return running, False
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                preexec_fn=_die_with_parent if owned else os.setsid,  # noqa: PLW1509 - deliberate
            )
        info = ProcessInfo(self.name, proc.pid, str(self.log_file), time.time(), marker)
        self.info_file.write_text(json.dumps(info.to_json(), indent=2))
        return info, True

    def stop(self, timeout: float = 30.0) -> ProcessInfo | None:
        info = self.status()
        if info is None:
            return None
        LocalBroker._terminate(info.pid, timeout)
        self.info_file.unlink(missing_ok=True)
        return info

    def kill(self) -> None:
        """SIGKILL, no goodbye (what a crash looks like; the tests' MM2 restart)."""
        info = self.status()
        if info is not None:
            os.kill(info.pid, signal.SIGKILL)
            LocalBroker._terminate(info.pid, 5)  # reaps it
            self.info_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# ---------------------------------------------------------------- MirrorMaker 2
def mm2_libs(settings: Settings) -> Path:
    return settings.cache_dir / f"mirrormaker-{MM2_VERSION}" / "libs"


def ensure_mm2_jars(settings: Settings) -> Path:
    """MirrorMaker 2's runtime classpath, fetched with Maven once (as the broker's) and cached in the cache dir."""
    libs = mm2_libs(settings)
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is not on PATH: it is needed once to fetch the MirrorMaker 2 jars")
    work = libs.parent
    work.mkdir(parents=True, exist_ok=True)
    pom = resources.files("hub.federation").joinpath("pom.xml").read_text()
    (work / "pom.xml").write_text(pom.replace("@MM2_VERSION@", MM2_VERSION))
    partial = work / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    proc = subprocess.run(
        [mvn, "-B", "-q", "-f", str(work / "pom.xml"), "dependency:copy-dependencies", "-DincludeScope=runtime",
         f"-DoutputDirectory={partial}"], capture_output=True, text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BrokerError(f"download of MirrorMaker 2 (connect-mirror {MM2_VERSION}) failed (mvn exit "
                          f"{proc.returncode}):\n{tail}")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    marker.write_text(MM2_VERSION)
    return libs


class MirrorMaker:
    """The federation's dedicated MirrorMaker 2 process (``org.apache.kafka.connect.mirror.MirrorMaker``)."""

    def __init__(self, settings: Settings, config: FederationConfig) -> None:
        self.settings = settings
        self.config = config
        self.process = Supervised(federation_dir(settings), "mm2")
        self.properties_file = federation_dir(settings) / "mm2.properties"

    def command(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java is not on PATH: MirrorMaker 2 needs a Java 17+ runtime")
        log4j = resources.files("hub.federation").joinpath("log4j2.properties")
        heap = self.config.mm2_heap
        return [java, f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{ensure_mm2_jars(self.settings)}/*", MM2_MAIN,
                str(self.properties_file)]

    def start(self, *, owned: bool = False) -> tuple[ProcessInfo, bool]:
        running = self.process.status()
        if running is not None:
            return running, False
        federation_dir(self.settings).mkdir(parents=True, exist_ok=True)
        client = java_client_properties(self.settings)  # HUB_KAFKA_*: both clusters' SASL, if they are secured
        write_secret(self.properties_file, properties_text(mm2_properties(self.config, client)).rstrip("\n"))
        return self.process.start(self.command(), MM2_MAIN, owned=owned)

    def status(self) -> ProcessInfo | None:
        return self.process.status()

    def stop(self) -> ProcessInfo | None:
        return self.process.stop()

    def kill(self) -> None:
        self.process.kill()


# ---------------------------------------------------------------- gateways
def gateway_name(link: Link) -> str:
    return f"gateway-{link.source}-{link.target}"


class Gateway:
    """The receiving side's gateway of one link, run as ``python -m hub.federation.gateway``."""

    def __init__(self, settings: Settings, config_file: Path, link: Link) -> None:
        self.settings = settings
        self.config_file = config_file
        self.link = link
        self.process = Supervised(federation_dir(settings), gateway_name(link))

    def start(self, *, owned: bool = False) -> tuple[ProcessInfo, bool]:
        cmd = [sys.executable, "-m", GATEWAY_MODULE, str(self.config_file), self.link.name]
        return self.process.start(cmd, GATEWAY_MODULE, owned=owned, env=dict(os.environ))

    def status(self) -> ProcessInfo | None:
        return self.process.status()

    def stop(self) -> ProcessInfo | None:
        return self.process.stop()
