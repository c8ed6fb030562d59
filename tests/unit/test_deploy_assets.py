"""Deployment assets (Docker, Prometheus, Grafana) agree with the code, the settings and the metric contract.

Docker cannot run here, so the compose file and the Dockerfile are checked statically. The Prometheus
configuration, the alert rules and their unit tests are checked with ``promtool`` when it is on PATH (Debian:
``apt-get install prometheus``), as are the dashboard's queries.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from hub.metrics.bundle import HubMetrics
from hub.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = GRAFANA / "dashboards" / "hub.json"

# The metric contract (docs/contract.md, with its labels), plus the gauges the team adds, plus Prometheus's own.
SPEC_LABELS = {
    "hub_events_total": ("kind", "from_tier", "to_tier", "outcome"),
    "hub_records_delivered_total": ("direction",),
    "hub_calls_total": ("to_tier", "outcome"),
    "hub_quarantined_total": ("rule",),
    "hub_event_latency_seconds": (),
    "hub_objections_open": ("state",),
    "hub_catalog_resources": ("tier",),
    "hub_audit_chain_ok": (),
    "hub_consumer_lag": (),
    "hub_worker_batches_in_flight": (),
    "hub_objections_overdue": (),
}
CONTRACT_METRICS = {
    "hub_events_total",
    "hub_records_delivered_total",
    "hub_calls_total",
    "hub_quarantined_total",
    "hub_event_latency_seconds",
    "hub_objections_open",
    "hub_catalog_resources",
    "hub_audit_chain_ok",
    "hub_consumer_lag",
    "hub_worker_batches_in_flight",
    "hub_objections_overdue",
}
HISTOGRAM_SERIES = {f"hub_event_latency_seconds{suffix}" for suffix in ("_bucket", "_sum", "_count")}
ALLOWED_METRICS = CONTRACT_METRICS | HISTOGRAM_SERIES | {"up"}
ALERTS = {
    "HubWorkerDown",
    "ConsumerLagGrowing",
    "QuarantineRateHigh",
    "AuditChainBroken",
    "ObjectionTimeLimitBreached",
    "DenialSpike",
}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "irate", "increase", "deriv", "delta",
    "histogram_quantile", "and", "or", "unless", "offset", "vector", "le", "on", "ignoring", "bool",
    "absent", "clamp_min", "topk", "bottomk", "group_left", "group_right", "time",
}  # fmt: skip


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or label names."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    expr = re.sub(r"\((?:by|without|on|ignoring)\s*\([^)]*\)", "(", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    expr = re.sub(r"\b\d[\w.]*", "", expr)  # numbers and durations (offset 5m)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROM / "alerts.yml")["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


# --- docker ------------------------------------------------------------------------------------------


def compose_services() -> dict[str, Any]:
    return load_yaml(COMPOSE)["services"]


def script_properties(path: Path, env: dict[str, Any] | None = None) -> dict[str, str]:
    """The ``key=value`` lines of the server.properties a start script writes (its first heredoc), with the
    script's ``VAR="${VAR:-default}"`` variables filled in from ``env`` (a service's environment) or the default."""
    text = path.read_text(encoding="utf-8")
    values = {name: str((env or {}).get(name, default))
              for name, default in re.findall(r'^(\w+)="\$\{\1:-([^}]*)\}"', text, re.M)}
    body = text.split("<<PROPERTIES\n", 1)[1].split("\nPROPERTIES\n", 1)[0]
    body = re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), m.group(0)), body)
    return dict(line.split("=", 1) for line in body.splitlines() if line and not line.startswith("#"))


KAFKA_SCRIPT = DEPLOY / "kafka" / "start-secure.sh"


def test_compose_services() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert {"kafka", "hub", "prometheus", "grafana"} <= set(services)

    kafka = services["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka" and tag.split(".")[0] == "4"
    assert tag == Settings().kafka_version, "compose Kafka should match the local broker's version"
    assert "healthcheck" in kafka

    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus")
    assert any(v.startswith("./deploy/prometheus:") for v in prometheus["volumes"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert load_yaml(PROM / "prometheus.yml")["rule_files"] == ["alerts.yml"]  # the alert rules are loaded

    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "hub.yml")["providers"][0]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_compose_images_are_pinned() -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version
    for name, service in compose_services().items():
        image, _, tag = service["image"].partition(":")
        assert tag and tag != "latest" and re.match(r"v?\d+(\.\d+)+$", tag), f"{name}: {service['image']} is not pinned"
        if "build" in service:
            assert tag == version.group(1), f"{name}: the built image is tagged with the project's version"


def test_compose_mounts_volumes_and_dependencies_exist() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    used_volumes = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} is mounted but does not exist"
            else:
                assert source in compose["volumes"], f"{name}: named volume {source} is not declared"
                used_volumes.add(source)
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on {dependency}, which is not a service"
    assert used_volumes == set(compose["volumes"]), "a declared volume is used by no service"
    assert KAFKA_SCRIPT.stat().st_mode & 0o111, "the Kafka start script must be executable"
    entrypoint = services["kafka"]["entrypoint"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["kafka"]["volumes"]}
    assert mounted[entrypoint[-1]] == "./" + str(KAFKA_SCRIPT.relative_to(ROOT))


def kafka_services() -> dict[str, dict[str, Any]]:
    """The services running the hub's Kafka start script."""
    return {name: svc for name, svc in compose_services().items()
            if svc.get("entrypoint", [])[-1:] == ["/opt/hub/start-secure.sh"]}


def test_compose_sets_only_variables_something_reads() -> None:
    """A HUB_* variable is a hub setting; any other variable of a service is used by what the service runs (the
    Kafka script, MirrorMaker's properties, Grafana); every required ${VAR:?} is in deploy/compose.env.example."""
    fields = set(Settings.model_fields)
    script = KAFKA_SCRIPT.read_text(encoding="utf-8")
    mm2 = (DEPLOY / "federation" / "mm2.properties").read_text(encoding="utf-8")
    kafkas = kafka_services()
    assert {"kafka", "kafka-national"} <= set(kafkas)
    for name, service in compose_services().items():
        for variable in service.get("environment", {}):
            if name in kafkas:
                assert f"${variable}" in script or "${" + variable in script, f"{name}: {variable} is unused"
            elif name == "mirror-maker":
                assert "${env:" + variable + "}" in mm2, f"mirror-maker: {variable} is unused"
            elif variable.startswith("HUB_"):
                assert variable[4:].lower() in fields, f"{name}: {variable} is not a hub setting"
            else:
                assert name == "grafana" and variable.startswith("GF_"), f"{name}: {variable} is read by nothing"
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text(encoding="utf-8")))
    example = (DEPLOY / "compose.env.example").read_text(encoding="utf-8")
    assert required and all(re.search(rf"^{v}=", example, re.M) for v in required), required


def test_compose_kafka_is_secured_as_the_local_secure_broker(tmp_path: Path) -> None:
    """SCRAM + ACLs with the same settings as ``hub broker start --secure`` (LocalBroker._secure_props)."""
    from hub.broker.manager import LocalBroker

    props = script_properties(KAFKA_SCRIPT)
    local = LocalBroker(Settings(state_dir=tmp_path))._secure_props(9092, 9093)
    for key in ("sasl.enabled.mechanisms", "sasl.mechanism.inter.broker.protocol", "inter.broker.listener.name",
                "sasl.mechanism.controller.protocol", "authorizer.class.name", "super.users",
                "allow.everyone.if.no.acl.found", "listener.name.client.sasl.enabled.mechanisms",
                "listener.name.controller.sasl.enabled.mechanisms"):
        assert props[key] == local[key], key
    modules = dict(re.findall(r"^(SCRAM|PLAIN)=(\S+)$", KAFKA_SCRIPT.read_text(), re.M))
    for key in ("listener.name.client.scram-sha-256.sasl.jaas.config",
                "listener.name.controller.plain.sasl.jaas.config"):
        module = props[key].split(" required ")[0]
        assert modules[module.lstrip("$")] == local[key].split(" required ")[0], key
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:hub;User:hub-controller"
    protocols = dict(pair.split(":") for pair in props["listener.security.protocol.map"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, "no listener may be PLAINTEXT (anonymous)"
    assert "--add-scram" in KAFKA_SCRIPT.read_text() and "name=hub," in KAFKA_SCRIPT.read_text()


def test_compose_ports_agree() -> None:
    services = compose_services()
    advertised_of: dict[str, str] = {}
    for name, kafka in kafka_services().items():
        props = script_properties(KAFKA_SCRIPT, kafka["environment"])
        advertised = dict(item.split("://") for item in props["advertised.listeners"].split(","))
        listeners = dict(item.split("://") for item in props["listeners"].split(","))
        assert advertised["CLIENT"] == f"{kafka['hostname']}:9092" and listeners["CLIENT"] == ":9092", name
        published = [p.split(":") for p in kafka["ports"]]  # the host port is the external listener, as localhost
        assert published == [[listeners["EXTERNAL"].lstrip(":")] * 2], name
        assert advertised["EXTERNAL"] == f"localhost:{published[0][0]}", name
        assert props["controller.quorum.voters"] == f"1@{kafka['hostname']}:9093", name
        assert "--command-config /var/lib/kafka/client.properties" in " ".join(kafka["healthcheck"]["test"])
        assert f"--bootstrap-server {advertised['CLIENT']}" in " ".join(kafka["healthcheck"]["test"])
        advertised_of[name] = advertised["CLIENT"]
    hubs = {name: svc for name, svc in services.items() if (svc.get("command") or [None])[0] == "up"}
    assert set(hubs) == {"hub", "hub-national"}
    api_of = {}
    for name, hub in hubs.items():
        env = hub["environment"]
        [kafka] = [k for k in hub["depends_on"] if k in advertised_of]
        # each hub reaches its Kafka on the advertised in-network listener, as the privileged SCRAM user
        assert hub["command"][:3] == ["up", "--bootstrap", advertised_of[kafka]], name
        assert env["HUB_BOOTSTRAP"] == advertised_of[kafka], name
        assert env["HUB_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT" and env["HUB_KAFKA_USERNAME"] == "hub"
        assert env["HUB_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256"
        # the API: its setting, the published port and the healthcheck are one port
        port = str(Settings(**{k[4:].lower(): v for k, v in env.items()
                               if k.startswith("HUB_") and "${" not in str(v)}).api_port)
        assert hub["ports"] == [f"{port}:{port}"], name
        assert f"127.0.0.1:{port}/healthz" in " ".join(hub["healthcheck"]["test"]), name
        api_of[name] = f"http://{name}:{port}"
    job = next(j for j in load_yaml(PROM / "prometheus.yml")["scrape_configs"] if j["job_name"] == "hub")
    assert job["static_configs"][0]["targets"] == [api_of["hub"].removeprefix("http://")]


def test_compose_federation_agrees_with_the_code() -> None:
    """The federation profile: its federation.yaml names the compose services' addresses and the tokens in the
    mounted state volumes; its mm2.properties is what ``hub federation start`` writes for it (plus SCRAM)."""
    from hub.broker.kafka_config import java_client_properties
    from hub.federation.model import load_federation_config, mm2_properties

    services = compose_services()
    config = load_federation_config(DEPLOY / "federation" / "federation.yaml")
    assert config.platforms["shanghai"].bootstrap == "kafka:9092"
    assert config.platforms["national"].bootstrap == "kafka-national:9092"
    assert config.platforms["shanghai"].api == "http://hub:8081"
    assert config.platforms["national"].api == "http://hub-national:8181"
    mm2 = dict(line.split("=", 1) for line in (DEPLOY / "federation" / "mm2.properties").read_text().splitlines()
               if line and not line.startswith("#"))
    secure = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                      kafka_username="hub")
    expected = mm2_properties(config, java_client_properties(secure, "${env:HUB_KAFKA_PASSWORD}"))
    for key, value in expected.items():
        assert mm2.get(key) == value.replace("\\", "\\\\"), key
    assert mm2["config.providers.env.class"].endswith("EnvVarConfigProvider")
    links = {link.name for link in config.links}
    for name in ("gateway-up", "gateway-down"):
        gateway = services[name]
        assert gateway["entrypoint"][:3] == ["python", "-m", "hub.federation.gateway"]
        assert gateway["entrypoint"][-1] in links
        mounts = {v.split(":")[1]: v.split(":")[0] for v in gateway["volumes"]}
        assert mounts[gateway["entrypoint"][-2]] == "./deploy/federation/federation.yaml"
        for platform, hub in (("shanghai", "hub"), ("national", "hub-national")):
            token = str(config.platforms[platform].token_file)
            volume = next(v.split(":")[0] for v in services[hub]["volumes"] if v.split(":")[1] == "/var/lib/hub")
            mount = next(path for path, source in mounts.items() if source == volume)
            state = services[hub]["environment"]["HUB_STATE_DIR"].removeprefix("/var/lib/hub")
            assert token == f"{mount}{state}/operator.token", (name, platform)
    assert all(services[n]["profiles"] == ["federation"] for n in
               ("kafka-national", "hub-national", "mirror-maker", "gateway-up", "gateway-down"))


def test_compose_hub_service_matches_cli_and_settings() -> None:
    hub = compose_services()["hub"]
    assert hub["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / hub["build"]["context"] / hub["build"]["dockerfile"]).is_file()
    env = hub["environment"]
    assert env["HUB_API_HOST"] == "0.0.0.0"
    assert hub["depends_on"]["kafka"]["condition"] == "service_healthy"
    settings = Settings(**{k[4:].lower(): v for k, v in env.items() if "${" not in str(v)})
    assert settings.api_port == 8081 and settings.bootstrap == "kafka:9092"


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M)
    assert "pip install" in text
    assert 'ENTRYPOINT ["hub"]' in text
    for path in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"
    env = dict(re.findall(r"(HUB_[A-Z_]+)=(\S+)", text))
    fields = set(Settings.model_fields)
    assert env and all(name[4:].lower() in fields for name in env), env
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert "!hub/" in ignore and "!schemas/" in ignore and "!config/" in ignore


# --- prometheus --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "target"), [("prometheus.yml", "hub:8081"), ("prometheus.local.yml", "127.0.0.1:8081")]
)
def test_prometheus_scrapes_the_hub_api(name: str, target: str) -> None:
    config = load_yaml(PROM / name)
    assert config["rule_files"] == ["alerts.yml"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "hub")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [target]
    assert int(target.rsplit(":", 1)[1]) == Settings().api_port


def test_alerts_cover_the_required_set_and_use_contract_metrics() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= ALLOWED_METRICS, f"{rule['alert']} uses {names - ALLOWED_METRICS}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if rule["alert"] == "HubWorkerDown":
            assert 'job="hub"' in rule["expr"]


def test_alert_unit_tests_cover_firing_and_silence() -> None:
    tests = load_yaml(PROM / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
        for series in case["input_series"]:
            name = series["series"].split("{", 1)[0]
            assert name in ALLOWED_METRICS, name
    assert firing == ALERTS, f"no firing test for {ALERTS - firing}"
    assert silent == ALERTS, f"no silent test for {ALERTS - silent}"


# --- grafana -----------------------------------------------------------------------------------------


def test_grafana_provisioning() -> None:
    datasource = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    uid = datasource["uid"]
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == uid, panel["title"]


def test_dashboard_uses_only_contract_metrics_and_covers_them() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names <= ALLOWED_METRICS, f"{expr} uses {names - ALLOWED_METRICS}"
        used |= names
    assert CONTRACT_METRICS - {"hub_event_latency_seconds"} <= used
    assert "hub_event_latency_seconds_bucket" in used
    exprs = "\n".join(dashboard_exprs())
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs
    assert 'outcome="denied"' in exprs
    for label in ("direction", "rule", "tier", "instance", "to_tier, outcome", "kind, from_tier, to_tier"):
        assert f"by ({label})" in exprs, label


def test_metric_name_extraction() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(hub_event_latency_seconds_bucket{job="hub"}[5m])))'
    assert metric_names(expr) == {"hub_event_latency_seconds_bucket"}
    assert metric_names('sum(rate(hub_events_total{outcome="denied"}[1h] offset 5m)) or vector(0)') == {
        "hub_events_total"
    }
    assert metric_names("sum by (instance) (hub_consumer_lag)") == {"hub_consumer_lag"}
    assert metric_names('sum(rate(hub_events_total{outcome="denied"}[1m])) or on() vector(0)') == {"hub_events_total"}


def test_the_code_exports_exactly_the_contract_metrics_with_their_labels() -> None:
    """What deploy/ may use is what HubMetrics really registers: no drift between the code and the assets."""
    registry = CollectorRegistry()
    HubMetrics.create(registry)
    exported = {}
    for collector in set(registry._names_to_collectors.values()):  # noqa: SLF001 - the registered collectors
        name = collector._name + ("_total" if collector._type == "counter" else "")  # noqa: SLF001
        exported[name] = tuple(collector._labelnames)  # noqa: SLF001
    assert set(exported) == CONTRACT_METRICS
    assert exported == SPEC_LABELS
    assert set(SPEC_LABELS) == CONTRACT_METRICS


# --- promtool ----------------------------------------------------------------------------------------

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool not on PATH (Debian: apt-get install prometheus)"
)


def run_promtool(*args: str, cwd: Path = PROM) -> str:
    assert promtool is not None
    proc = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


@needs_promtool
@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_check_config(name: str) -> None:
    assert "SUCCESS" in run_promtool("check", "config", name)


@needs_promtool
def test_promtool_check_rules() -> None:
    assert "SUCCESS: 6 rules found" in run_promtool("check", "rules", "alerts.yml")


@needs_promtool
def test_promtool_test_rules() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", "alerts_test.yml")


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every dashboard query, with Grafana's variables substituted, is valid PromQL."""
    rules = [
        {
            "record": f"hub:dashboard_query_{i}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$__range", "1h"),
        }
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    assert f"SUCCESS: {len(rules)} rules found" in run_promtool("check", "rules", str(path), cwd=tmp_path)
