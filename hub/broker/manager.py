"""A real single-node Apache Kafka (KRaft) broker, fetched from Maven Central and run as a local process.

``LocalBroker`` is what ``hub broker start|stop|status``, ``hub up`` and the pytest session fixture use.
State lives in ``<state_dir>/broker``: ``server.properties``, ``data/``, ``broker.log`` and
``broker.json`` (pid, ports, bootstrap) so that ``stop`` ends exactly the process it started.

``start(secure=True)`` formats and runs the broker with SCRAM + ACLs instead (see ``_secure_props``): clients
must authenticate with SCRAM-SHA-256 on a ``SASL_PLAINTEXT`` listener, the ``StandardAuthorizer`` denies
whatever no ACL allows, and the hub's own principal ``hub`` (created at format time, password in
``<broker dir>/hub.password``, mode 0600) is a super user. Whether a state dir is secure is fixed when its
storage is formatted (``security.json``); a plaintext and a secure broker need separate state dirs and ports.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from hub.contract import OPERATOR
from hub.settings import Settings


class BrokerError(RuntimeError):
    """Something prevents the local broker from running; the message says what and what to do."""


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    port: int
    controller_port: int
    bootstrap: str
    data_dir: str
    log_file: str
    kafka_version: str
    started_at: float
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    admin_username: str | None = None
    admin_password_file: str | None = None

    @property
    def secure(self) -> bool:
        return self.security_protocol != "PLAINTEXT"

    def admin_password(self) -> str | None:
        """The hub principal's SCRAM password (secure brokers only)."""
        if not self.admin_password_file:
            return None
        return Path(self.admin_password_file).read_text().strip()

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the broker if the process that owns it dies (tests, ``hub up``)."""
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


ADMIN_USER = OPERATOR
"""The hub's privileged Kafka principal on a secure broker (``User:hub``, a super user): workers, API, ``hub acl``."""
CONTROLLER_USER = "hub-controller"
"""The broker's own principal on the SASL/PLAIN controller listener (never a node id: it has a dash after ``hub``)."""
SCRAM_MECHANISM = "SCRAM-SHA-256"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def write_secret(path: Path, value: str) -> None:
    """Write a secret file readable by its owner only (0600 from creation, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)


def new_password() -> str:
    """A random password made of URL-safe characters only (safe inside StorageTool's ``--add-scram`` syntax)."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class QuorumPlan:
    """This node's place in a multi-node KRaft cluster (``hub.broker.cluster``): every node is broker and
    controller, the voters are fixed (``controller.quorum.voters``), and all share one cluster id."""

    node_id: int
    voters: dict[int, int]  # node id -> controller port
    cluster_id: str

    @property
    def size(self) -> int:
        return len(self.voters)


def replication_props(brokers: int) -> dict[str, str]:
    """Replication of the broker's internal topics and the default for new ones: 3 copies and 2 in sync from
    three brokers on (one broker may fail without refusing an ``acks=all`` write), else one copy."""
    factor = str(min(3, brokers))
    min_isr = "2" if brokers >= 3 else "1"
    return {
        "default.replication.factor": factor,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": factor,
        "share.coordinator.state.topic.min.isr": min_isr,
    }


class LocalBroker:
    """Fetch, format, start, probe and stop one local Kafka broker (or one node of a ``LocalCluster``)."""

    def __init__(self, settings: Settings, *, broker_dir: Path | None = None, quorum: QuorumPlan | None = None) -> None:
        self.settings = settings
        self.quorum = quorum
        self.dir = broker_dir or settings.broker_dir
        self.info_file = self.dir / "broker.json"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "broker.log"
        self.config_file = self.dir / "server.properties"
        self.security_file = self.dir / "security.json"
        self.admin_password_file = self.dir / "hub.password"
        self.controller_password_file = self.dir / "controller.password"
        self.libs_dir = settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"

    # ---------- jars ----------
    def ensure_jars(self) -> Path:
        """Download the broker's runtime classpath with Maven once; later calls reuse the cache."""
        marker = self.libs_dir / ".complete"
        if marker.exists():
            return self.libs_dir
        self._require_java()
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is not on PATH: it is needed once to fetch the Kafka jars")
        work = self.libs_dir.parent
        work.mkdir(parents=True, exist_ok=True)
        pom = resources.files("hub.broker").joinpath("pom.xml").read_text()
        (work / "pom.xml").write_text(pom.replace("@KAFKA_VERSION@", self.settings.kafka_version))
        partial = work / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        proc = subprocess.run(
            [mvn, "-B", "-q", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BrokerError(
                f"download of Apache Kafka {self.settings.kafka_version} jars from Maven Central failed "
                f"(mvn exit {proc.returncode}):\n{tail}"
            )
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        partial.rename(self.libs_dir)
        marker.write_text(self.settings.kafka_version)
        return self.libs_dir

    @staticmethod
    def _require_java() -> str:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java is not on PATH: Kafka 4 needs a Java 17+ runtime (e.g. openjdk-17-jre)")
        return java

    def _java_cmd(self, main_class: str, *args: str) -> list[str]:
        log4j = resources.files("hub.broker").joinpath("log4j2.properties")
        return [
            self._require_java(), f"-Xmx{self.settings.broker_heap}", f"-Xms{self.settings.broker_heap}",
            "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.dir}",
            "-cp", f"{self.libs_dir}/*", main_class, *args,
        ]

    # ---------- status ----------
    def status(self) -> BrokerInfo | None:
        """The running broker this state dir recorded, or None (stale records are removed)."""
        if not self.info_file.exists():
            return None
        try:
            info = BrokerInfo(**json.loads(self.info_file.read_text()))
        except (ValueError, TypeError):
            self.info_file.unlink(missing_ok=True)
            return None
        if _pid_alive(info.pid) and "kafka.Kafka" in _cmdline(info.pid):
            return info
        self.info_file.unlink(missing_ok=True)
        return None

    def formatted_secure(self) -> bool | None:
        """Whether this state dir's storage was formatted for SCRAM + ACLs; None if it is not formatted yet."""
        if not (self.data_dir / "meta.properties").exists():
            return None
        if not self.security_file.exists():
            return False
        try:
            return bool(json.loads(self.security_file.read_text()).get("secure"))
        except ValueError:
            return False

    # ---------- start ----------
    def start(self, *, port: int | None = None, controller_port: int | None = None,
              owned: bool = False, secure: bool | None = None, wait: bool = True) -> tuple[BrokerInfo, bool]:
        """Start the broker and wait until it answers. Returns (info, started_now).

        A broker already running from this state dir is reported, not started twice.
        ``owned=True`` ties the broker's life to this process (tests, ``hub up``).
        ``secure=True`` runs it with SCRAM + ACLs, ``False`` in PLAINTEXT, ``None`` as the state dir was
        formatted (PLAINTEXT for a new one); asking for the other mode of a formatted dir is an error.
        ``wait=False`` returns once the process runs (a cluster's nodes only answer once a quorum is up).
        """
        formatted = self.formatted_secure()
        if secure is not None and formatted is not None and secure != formatted:
            have, want = ("secure", "plaintext") if formatted else ("plaintext", "secure")
            raise BrokerError(
                f"{self.dir} holds a {have} broker's storage; a {want} broker needs its own state dir and ports "
                f"(set HUB_STATE_DIR, HUB_BROKER_PORT and HUB_BROKER_CONTROLLER_PORT)"
            )
        secure = bool(formatted) if secure is None else secure
        running = self.status()
        if running is not None:
            if secure != running.secure:
                raise BrokerError(f"a {'secure' if running.secure else 'plaintext'} broker already runs from "
                                  f"{self.dir} (pid {running.pid}); stop it first")
            return running, False
        port = port or self.settings.broker_port
        controller_port = controller_port or self.settings.broker_controller_port
        for p, what in ((port, "broker"), (controller_port, "controller")):
            if port_in_use(p):
                raise BrokerError(
                    f"port {p} ({what} listener) is already taken by another process; "
                    f"stop it or choose another with HUB_BROKER_PORT / HUB_BROKER_CONTROLLER_PORT"
                )
        self.ensure_jars()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_config(port, controller_port, secure=secure)
        if formatted is None:
            self._format(secure=secure)
        log = open(self.log_file, "ab")
        proc = subprocess.Popen(
            self._java_cmd("kafka.Kafka", str(self.config_file)),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if owned else os.setsid,  # noqa: PLW1509 - deliberate
        )
        log.close()
        info = BrokerInfo(
            pid=proc.pid, port=port, controller_port=controller_port, bootstrap=f"127.0.0.1:{port}",
            data_dir=str(self.data_dir), log_file=str(self.log_file),
            kafka_version=self.settings.kafka_version, started_at=time.time(),
            **self._security_info(secure),
        )
        self.info_file.write_text(json.dumps(info.to_json(), indent=2))
        if not wait:
            return info, True
        try:
            self._wait_ready(proc, info)
        except BaseException:
            self._terminate(proc.pid)
            self.info_file.unlink(missing_ok=True)
            raise
        return info, True

    def _security_info(self, secure: bool) -> dict[str, str | None]:
        if not secure:
            return {}
        return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": SCRAM_MECHANISM,
                "admin_username": ADMIN_USER, "admin_password_file": str(self.admin_password_file)}

    def _write_config(self, port: int, controller_port: int, *, secure: bool = False) -> None:
        quorum = self.quorum
        props = {
            "process.roles": "broker,controller",
            "node.id": str(quorum.node_id if quorum else 1),
            **({"controller.quorum.voters": ",".join(f"{i}@127.0.0.1:{p}" for i, p in sorted(quorum.voters.items()))}
               if quorum else {"controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}"}),
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.num.partitions": "10",
            **replication_props(quorum.size if quorum else 1),
            "group.initial.rebalance.delay.ms": "0",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if secure:
            props.update(self._secure_props(port, controller_port))
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        if secure:  # it holds the JAAS passwords
            write_secret(self.config_file, text.rstrip("\n"))
        else:
            self.config_file.write_text(text)

    def _secret(self, path: Path) -> str:
        """The password kept in ``path``, generated (0600) the first time."""
        if path.exists():
            value = path.read_text().strip()
            if value:
                return value
        value = new_password()
        write_secret(path, value)
        return value

    def _secure_props(self, port: int, controller_port: int) -> dict[str, str]:
        """SCRAM on the client listener, SASL/PLAIN on the controller listener, the StandardAuthorizer.

        * ``CLIENT`` (``SASL_PLAINTEXT``, SCRAM-SHA-256 only): every client, the hub's included, authenticates;
          there is no unauthenticated (``ANONYMOUS``) access to it.
        * Inter-broker traffic uses ``CLIENT`` too, as ``User:hub``. A separate PLAINTEXT internal listener would
          have been simpler, but its ``ANONYMOUS`` principal must then be a super user, and any local process
          could connect to it and bypass every ACL.
        * ``CONTROLLER`` is ``SASL_PLAINTEXT`` with PLAIN and one static user (``hub-controller``, defined in the
          listener's JAAS config): KRaft cannot use SCRAM for controller connections (the credentials live in
          the metadata log the controller serves), and a PLAINTEXT controller listener would again need
          ``User:ANONYMOUS`` as a super user, reachable by any local admin client (``--bootstrap-controller``).
          So ``super.users`` is just the hub and the controller principal.
        """
        hub_pw = self._secret(self.admin_password_file)
        ctl_pw = self._secret(self.controller_password_file)
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        return {
            "listeners": f"CLIENT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{port}",
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "CLIENT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            "listener.name.client.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.client.scram-sha-256.sasl.jaas.config":
                f'{scram} required username="{ADMIN_USER}" password="{hub_pw}";',
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config":
                f'{plain} required username="{CONTROLLER_USER}" password="{ctl_pw}" '
                f'user_{CONTROLLER_USER}="{ctl_pw}";',
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "super.users": f"User:{ADMIN_USER};User:{CONTROLLER_USER}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _format(self, *, secure: bool = False) -> None:
        cluster_id = self.quorum.cluster_id if self.quorum else new_cluster_id()
        # one argument: a base64 id may start with '-', which the tool would read as an option
        args = ["format", f"--cluster-id={cluster_id}", "-c", str(self.config_file), "--ignore-formatted"]
        if self.quorum is None:
            args.append("--standalone")  # a cluster's nodes have their voters in controller.quorum.voters
        if secure:
            hub_pw = self._secret(self.admin_password_file)
            args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={ADMIN_USER},password={hub_pw}]"]
            # Recorded first: the mode only counts once meta.properties exists (formatted_secure).
            self.security_file.write_text(json.dumps({"secure": True, **self._security_info(True)}, indent=2))
        else:
            self.security_file.unlink(missing_ok=True)
        proc = subprocess.run(self._java_cmd("kafka.tools.StorageTool", *args), capture_output=True, text=True)
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{(proc.stdout + proc.stderr)[-2000:]}")

    def wait_ready(self, info: BrokerInfo, deadline: float) -> None:
        """Wait (until the monotonic ``deadline``) for a node started with ``wait=False`` to answer."""
        while time.monotonic() < deadline:
            if not _pid_alive(info.pid):
                raise BrokerError(f"the Kafka broker (pid {info.pid}) exited while starting; last lines of "
                                  f"{self.log_file}:\n{self._log_tail()}")
            if _answers(info.port):
                return
            time.sleep(0.2)
        raise BrokerError(f"the Kafka broker on port {info.port} did not answer in time; last lines of "
                          f"{self.log_file}:\n{self._log_tail()}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], info: BrokerInfo) -> None:
        deadline = time.monotonic() + self.settings.broker_start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"the Kafka broker exited with code {proc.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{self._log_tail()}"
                )
            if _answers(info.port):
                return
            time.sleep(0.2)
        raise BrokerError(
            f"the Kafka broker did not answer within {self.settings.broker_start_timeout:.0f}s; "
            f"last lines of {self.log_file}:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---------- stop ----------
    def stop(self, timeout: float = 30.0) -> BrokerInfo | None:
        """Stop the broker this state dir started; returns what was stopped (None if nothing ran)."""
        info = self.status()
        if info is None:
            return None
        self._terminate(info.pid, timeout)
        self.info_file.unlink(missing_ok=True)
        return info

    def kill(self) -> None:
        """SIGKILL the broker this state dir started (a last resort: a stop that must end now; Kafka recovers its
        log on the next start). Works on a paused (SIGSTOPped) broker, which SIGTERM does not reach."""
        info = self.status()
        if info is None:
            return
        try:
            os.kill(info.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(info.pid)
        self.info_file.unlink(missing_ok=True)

    @staticmethod
    def _terminate(pid: int, timeout: float = 30.0) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a paused (SIGSTOPped) broker acts on the SIGTERM only once resumed
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            if not _pid_alive(pid):
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _reap(pid)


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID, base64url without padding (as ``kafka-storage random-uuid``)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kafka_request(port: int, api_key: int, body: bytes = b"") -> bytes | None:
    """One Kafka request (version 0) to the local port; the response after its size, or None if none came."""
    client_id = b"hub-probe"
    header = api_key.to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big")
    header += len(client_id).to_bytes(2, "big") + client_id
    payload = header + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(len(payload).to_bytes(4, "big") + payload)
            size = int.from_bytes(_recv_exact(sock, 4), "big")
            return _recv_exact(sock, size)
    except OSError:
        return None


def _answers(port: int) -> bool:
    """A Kafka ApiVersions request (v0) answered on the port: the broker is serving."""
    body = kafka_request(port, 18)
    # correlation id (4) then error_code (2) == 0
    return body is not None and len(body) >= 6 and body[4:6] == b"\x00\x00"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf
