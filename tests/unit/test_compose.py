"""docker-compose.yml is valid Compose and consistent with the repository, checked offline.

`docker compose` is not needed: the file is validated against the official Compose Specification JSON
schema (a verbatim copy in tests/data/compose-spec.json, origin in tests/data/README.md), then checked
for the things the schema cannot know: files it points at exist, dependencies name real services, the
Prometheus targets are the ports the services listen on, and the trader services' environment is a
configuration the platform accepts.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema.exceptions import ValidationError

from trader.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
TRADER_SERVICES = ("paper-broker", "gateway", "signal", "reconciler")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ is a literal $.
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _interpolate(value: str) -> str:
    """Resolve a Compose variable with an empty environment, as `docker compose config` would."""

    def replace(match: re.Match[str]) -> str:
        if match["op"] not in (":-", "-"):
            raise AssertionError(f"{match[0]!r} needs the variable to be set; give it a default (:-)")
        return match["arg"]

    return _VARIABLE.sub(replace, value).replace("$$", "$")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator_class(schema: dict[str, Any]) -> Any:
    """The validator of the draft the schema declares (draft-07 for the Compose Specification).

    The schema spells it ``https://json-schema.org/draft-07/schema`` (https, no ``#``), which jsonschema's
    lookup table does not list, so the draft is read from the URL.
    """
    declared = schema["$schema"]
    cls = jsonschema.validators.validator_for(schema, default=None)
    if cls is None:
        match = re.fullmatch(r"https?://json-schema\.org/draft-0?(\d+)/schema#?", declared)
        assert match, f"unknown $schema {declared!r}"
        by_draft = {
            4: jsonschema.Draft4Validator,
            6: jsonschema.Draft6Validator,
            7: jsonschema.Draft7Validator,
        }
        cls = by_draft.get(int(match[1]))
    assert cls is not None, f"no validator for $schema {declared!r}"
    cls.check_schema(schema)
    return cls


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = _load_yaml(COMPOSE_FILE)
    return loaded


def _errors(validator_class: Any, schema: dict[str, Any], document: Any) -> list[str]:
    validator = validator_class(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


def _listen_port(service: dict[str, Any]) -> int | None:
    args = _command(service)
    if "--port" in args:
        return int(args[args.index("--port") + 1])
    return None


def _bind_mount_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                sources.append(source)
        elif volume.get("type") == "bind":
            sources.append(volume["source"])
    return sources


# --- the schema itself ------------------------------------------------------------------------------


def test_schema_is_the_official_compose_specification(schema: dict[str, Any], validator_class: Any) -> None:
    assert schema["title"] == "Compose Specification"
    assert validator_class is jsonschema.Draft7Validator
    # Every $ref is local, so validation never needs the network.
    refs = re.findall(r'"\$ref":\s*"([^"]+)"', SCHEMA_FILE.read_text(encoding="utf-8"))
    assert refs
    assert all(ref.startswith("#/") for ref in refs), [r for r in refs if not r.startswith("#/")]


def test_compose_file_matches_the_schema(
    compose: dict[str, Any], schema: dict[str, Any], validator_class: Any
) -> None:
    assert _errors(validator_class, schema, compose) == []


@pytest.mark.parametrize(
    ("label", "break_it"),
    [
        ("ports not a list", lambda d: d["services"]["gateway"].__setitem__("ports", "not-a-list")),
        ("unknown top-level key", lambda d: d.__setitem__("servicez", {})),
        ("unknown service key", lambda d: d["services"]["redis"].__setitem__("imagee", "redis:7")),
        (
            "bad depends_on condition",
            lambda d: d["services"]["migrate"]["depends_on"]["postgres"].__setitem__("condition", "healthy"),
        ),
        (
            "healthcheck retries not a number",
            lambda d: d["services"]["redis"]["healthcheck"].update(retries=[]),
        ),
    ],
)
def test_broken_copies_fail_validation(
    compose: dict[str, Any], schema: dict[str, Any], validator_class: Any, label: str, break_it: Any
) -> None:
    broken = copy.deepcopy(compose)
    break_it(broken)
    assert _errors(validator_class, schema, broken), f"a compose file with {label} was accepted"
    with pytest.raises(ValidationError):
        jsonschema.validate(broken, schema, cls=validator_class)


# --- what the schema cannot know --------------------------------------------------------------------


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_every_build_has_an_existing_dockerfile(compose: dict[str, Any]) -> None:
    built = {name: s["build"] for name, s in compose["services"].items() if "build" in s}
    assert set(TRADER_SERVICES) | {"migrate"} <= set(built)
    for name, build in built.items():
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} does not exist"


def test_dockerfile_installs_the_locked_environment() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert "pip install --no-cache-dir uv" in text
    assert "uv sync --frozen --no-dev" in text
    assert 'ENTRYPOINT ["trader"]' in text
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for line in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for source in line.split():
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
            assert source not in ignored, f"Dockerfile copies {source}, which .dockerignore excludes"


def test_bind_mounted_host_paths_exist(compose: dict[str, Any]) -> None:
    sources = [src for s in compose["services"].values() for src in _bind_mount_sources(s)]
    assert "./infra/prometheus/prometheus.yml" in sources
    assert "./infra/grafana/provisioning" in sources
    for source in sources:
        assert source.startswith("./infra/"), f"bind mount outside ./infra: {source}"
        assert (ROOT / source).exists(), f"bind-mounted {source} does not exist"


def test_depends_on_targets_are_defined_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target in service.get("depends_on", []):
            assert target in services, f"{name} depends on undefined service {target!r}"
            assert target != name


def test_trader_services_wait_for_healthy_stores_and_the_migration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for name in TRADER_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name


def test_migrate_runs_db_upgrade_once(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert _command(migrate)[:2] == ["db", "upgrade"]
    assert migrate.get("restart") == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_services_run_the_documented_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert _command(services["paper-broker"]) == [
        "serve",
        "paper-broker",
        "--host",
        "0.0.0.0",
        "--port",
        "8765",
    ]
    for name in ("gateway", "signal", "reconciler"):
        assert _command(services[name])[:2] == ["serve", name]


def test_no_image_uses_latest(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is None:
            continue
        tail = image.rsplit("/", 1)[-1]
        assert ":" in tail or "@" in tail, f"{name}: image {image!r} has no tag (means :latest)"
        assert not image.endswith(":latest"), f"{name}: image {image!r} uses :latest"


def test_postgres_16_and_redis_7(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    env = services["postgres"]["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == ("trader",) * 3


def test_every_variable_has_a_default(compose: dict[str, Any]) -> None:
    """`docker compose config` must succeed with nothing set in the environment."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert _VARIABLE.search(body), "expected at least one ${VAR:-default}"
    _interpolate(body)


def test_trader_service_environment_is_a_valid_configuration(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*TRADER_SERVICES, "migrate"):
        environment = compose["services"][name]["environment"]
        assert environment["DATABASE_URL"] == "postgresql://trader:trader@postgres:5432/trader"
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        # The host's .env never reaches the containers by itself: the prefix is passed through, so
        # a host-side `trader circuit trip` and the containers use the same keys.
        assert environment["REDIS_KEY_PREFIX"] == "${REDIS_KEY_PREFIX:-}"
        assert environment["ALPACA_BASE_URL"] == "http://paper-broker:8765"
        assert environment["DRY_RUN"] == "true"
        assert environment["TRADER_API_KEY"]
        with monkeypatch.context() as patch:
            for key, value in environment.items():
                patch.setenv(key, _interpolate(str(value)))
            settings = load_settings()
        assert settings.dry_run is True
        assert not settings.is_live
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.trader_api_key is not None


def test_prometheus_scrapes_the_ports_the_services_listen_on(compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = _load_yaml(ROOT / "infra" / "prometheus" / "prometheus.yml")
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    scraped = set()
    for target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":
            continue
        assert host in services, f"Prometheus scrapes {target}, but there is no service {host!r}"
        assert _listen_port(services[host]) == int(port), f"{host} does not listen on {port}"
        scraped.add(host)
    assert "gateway" in scraped
    assert any(p.endswith(":9090:9090") for p in services["prometheus"]["ports"])


def test_grafana_datasource_points_at_prometheus(compose: dict[str, Any]) -> None:
    path = ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    datasources = _load_yaml(path)["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]["grafana"]["depends_on"]


def test_prometheus_scrapes_the_gateway_with_the_services_api_key(compose: dict[str, Any]) -> None:
    config = _load_yaml(ROOT / "infra" / "prometheus" / "prometheus.yml")
    [gateway_job] = [job for job in config["scrape_configs"] if job["job_name"] == "gateway"]
    assert gateway_job["metrics_path"] == "/metrics"
    authorization = gateway_job["authorization"]
    assert authorization["type"] == "Bearer"
    mounted = {c["target"]: c["source"] for c in compose["services"]["prometheus"]["configs"]}
    source = mounted[authorization["credentials_file"]]
    key_file = compose["configs"][source]["content"]
    assert key_file == compose["services"]["gateway"]["environment"]["TRADER_API_KEY"]
    assert _interpolate(key_file)  # a key even with an empty environment


def _dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    names = {name for expr in exprs for name in re.findall(r"\btrader_[a-z_]+", expr)}
    return {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in names}


def test_the_grafana_dashboard_charts_only_metrics_the_gateway_exports() -> None:
    from trader.observability.metrics import READ_ERRORS, STATE_METRICS, GatewayMetrics

    folder = ROOT / "infra" / "grafana" / "provisioning" / "dashboards"
    provider = _load_yaml(folder / "trader.yml")["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"  # where compose mounts it
    dashboard = json.loads((folder / "trader-gateway.json").read_text(encoding="utf-8"))
    counted = {family.name for family in GatewayMetrics().registry.collect()}
    exported = counted | set(STATE_METRICS) | {READ_ERRORS}
    charted = _dashboard_metric_names(dashboard)
    assert charted <= exported, f"the dashboard charts metrics nobody exports: {sorted(charted - exported)}"
    # what the seed plan asks the dashboards to show: latency, error rate, slippage, fill %
    asked = {"trader_http_request_duration_seconds", "trader_http_requests", "trader_orders_ended"}
    assert asked | {"trader_fill_slippage_cost_dollars"} <= charted
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
