"""The container stack, checked by reading it: docker-compose.yaml, Dockerfile, .dockerignore.

No Docker engine is needed. Values are read the way `docker compose` would see them with an
empty environment (``${VAR:-default}`` -> default), so URLs can be parsed and compared.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"

AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}
EXPECTED_SERVICES = {*AIRFLOW_SERVICES, "airflow-init", "postgres", "redis", "ewssim"}
IMAGE = "ewssync-airflow:0.1.0"
REQUIRED_MOUNTS = {
    "./dags:/opt/airflow/dags",
    "./plugins:/opt/airflow/plugins",
    "./include:/opt/airflow/include",
    "./logs:/opt/airflow/logs",
}

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(value):
    """Compose-style interpolation with an empty environment: defaults apply, `$$` is `$`."""
    if isinstance(value, str):
        parts = value.split("$$")
        return "$".join(_VAR.sub(lambda m: m.group(2) or "", part) for part in parts)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def test_interpolate_follows_compose_rules():
    assert interpolate("a:${X:-b}@c") == "a:b@c"
    assert interpolate("${X}") == ""
    assert interpolate("$$(id -u) ${U:-50000}") == "$(id -u) 50000"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(raw) -> dict:
    return interpolate(raw["services"])


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def requirement_pin(name: str) -> str:
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        match = re.match(rf"^{re.escape(name)}==(\S+)", line.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned in requirements.txt")


def test_expected_services_exist(services):
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"services missing from docker-compose.yaml: {sorted(missing)}"
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command, name


def test_simulator_is_demo_only_and_runs_the_fixture_mailbox(services):
    sim = services["ewssim"]
    assert sim["profiles"] == ["demo"]
    assert sim["image"] == IMAGE
    command = sim["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[:3] == ["python", "-m", "tests.ewssim"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "8765"
    assert command[command.index("--seed") + 1] == "tests/ewssim/fixtures/realistic.json"
    assert command[command.index("--user") + 1] == "demo@example.com"
    assert "--shift-to-today" in command
    assert "./tests:/opt/airflow/tests:ro" in sim["volumes"]
    assert sim.get("working_dir") == "/opt/airflow"
    # everything else runs without a profile (i.e. by default)
    for name in EXPECTED_SERVICES - {"ewssim"}:
        assert "profiles" not in services[name], name


def test_every_image_is_pinned(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        assert re.search(r"\d+\.\d+", tag), f"{name}: tag {tag!r} names no version"
    assert services["postgres"]["image"].startswith("postgres:16.")
    assert services["redis"]["image"].startswith("redis:7.")


def test_airflow_services_use_the_built_project_image(services):
    for name in [*AIRFLOW_SERVICES, "airflow-init", "ewssim"]:
        assert services[name]["image"] == IMAGE, name
        assert services[name]["build"] == ".", name


def test_dockerfile_base_image_matches_the_airflow_pin():
    text = DOCKERFILE.read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(froms) == 1, froms
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(3\.\d+)", froms[0])
    assert match, f"base image {froms[0]!r} is not a pinned apache/airflow:X.Y.Z-pythonA.B"
    assert match.group(1) == requirement_pin("apache-airflow") == "3.3.2"
    assert match.group(2) == "3.11"


def test_dockerfile_installs_pinned_requirements_then_the_package():
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if not line.strip().startswith("#")
    ]
    text = "\n".join(lines)
    install_reqs = text.find("-r /opt/ewssync/requirements.txt")
    install_pkg = text.find("--no-deps /opt/ewssync")
    assert 0 <= install_reqs < install_pkg, "requirements must be installed before the package"
    # the official image docs: keep Airflow pinned to the image's version when adding packages
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in text
    for source in ("requirements.txt", "pyproject.toml", "plugins/"):
        assert re.search(rf"^COPY\b.*\s{re.escape(source)}\s", text, re.MULTILINE), source
    assert not re.search(r"^USER\s+root", text, re.MULTILINE), "pip must run as airflow"


def test_dockerignore_keeps_local_state_out():
    entries = set((REPO / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".venv", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache"} <= entries


def test_project_folders_are_mounted_into_every_airflow_service(services):
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        missing = REQUIRED_MOUNTS - set(services[name]["volumes"])
        assert not missing, f"{name} lacks mounts {sorted(missing)}"
        expected_user = "0:0" if name == "airflow-init" else "50000:0"
        assert services[name]["user"] == expected_user, name


def test_celery_executor_with_redis_broker_and_postgres_backend(services):
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = env_of(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379), name
        backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
        assert (backend.scheme, backend.hostname, backend.path) == (
            "db+postgresql",
            "postgres",
            "/airflow",
        ), name
        metadata = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert (metadata.scheme, metadata.hostname, metadata.path) == (
            "postgresql+psycopg2",
            "postgres",
            "/airflow",
        ), name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name


def test_airflow3_execution_api_and_shared_jwt_secret(services):
    secrets = set()
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = env_of(services[name])
        url = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert (url.hostname, url.port, url.path) == ("airflow-apiserver", 8080, "/execution/")
        secrets.add(env["AIRFLOW__API_AUTH__JWT_SECRET"])
    assert len(secrets) == 1 and "" not in secrets, "all components must share one JWT secret"


def test_connection_test_button_is_enabled(services):
    for name in AIRFLOW_SERVICES:
        assert env_of(services[name])["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled", name


def test_calendar_database_connection(services):
    postgres_env = env_of(services["postgres"])
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        assert env["EWSSYNC_DB_CONN_ID"] == "ewssync_db", name
        conn = urlsplit(env["AIRFLOW_CONN_EWSSYNC_DB"])
        assert conn.scheme == "postgresql", name
        assert (conn.hostname, conn.port, conn.path) == ("postgres", 5432, "/calendar"), name
        assert conn.username == postgres_env["EWSSYNC_DB_USER"], name
        assert conn.password == postgres_env["EWSSYNC_DB_PASSWORD"], name
        assert env["EWSSYNC_SQL_DIR"] == "/opt/airflow/include/sql", name
    assert postgres_env["EWSSYNC_DB_NAME"] == "calendar"
    assert postgres_env["POSTGRES_DB"] == "airflow"


def test_postgres_init_script_creates_the_calendar_database(services):
    mounts = [v for v in services["postgres"]["volumes"] if "/docker-entrypoint-initdb.d" in v]
    assert mounts == ["./docker/postgres-init:/docker-entrypoint-initdb.d:ro"]
    scripts = sorted((REPO / "docker" / "postgres-init").glob("*.sh"))
    assert scripts, "no init script in docker/postgres-init"
    text = "\n".join(s.read_text(encoding="utf-8") for s in scripts)
    assert "CREATE DATABASE" in text and "EWSSYNC_DB_NAME" in text
    assert all(s.stat().st_mode & 0o111 for s in scripts), "init scripts must be executable"


def test_depends_on_targets_exist_and_conditions_hold(services):
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }, (name, target)
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"] == {
        "condition": "service_healthy"
    }
    assert "airflow-init" not in services["airflow-init"]["depends_on"]


def test_healthchecks(services):
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    api = services["airflow-apiserver"]
    assert api["healthcheck"]["test"] == [
        "CMD",
        "curl",
        "--fail",
        "http://localhost:8080/api/v2/version",
    ]
    assert api["ports"] == ["8080:8080"]
    assert env_of(api)["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    for name in AIRFLOW_SERVICES:
        assert "healthcheck" in services[name], name


def test_airflow_init_migrates_the_metadata_db_only(services):
    init = services["airflow-init"]
    env = env_of(init)
    assert env["_AIRFLOW_DB_MIGRATE"] == "true"
    script = "\n".join(init["command"])
    # the calendar schema is migrated by the pipeline's first task, not at deploy time
    assert "ewssync.cli" not in script and "store.migrate" not in script
    assert "airflow providers list | grep -i ewssync" in script


def test_docker_compose_renders_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker client not installed")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip("docker client has no compose plugin (`docker compose version` failed)")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--profile", "demo", "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
