"""docker-compose.yml, .env.example, the Dockerfile and the scripts in docker/.

There is no Docker engine in CI. The file is checked three ways:

* ``docker-compose config`` (Compose v1, Debian's ``docker-compose`` package) parses and
  interpolates it the way Compose does, without an engine; skipped when not installed;
* the Compose Specification JSON schema, read from the same installed package (never
  downloaded), validated with jsonschema; skipped when not installed;
* semantic rules that need only PyYAML: healthchecks, dependencies, variables, secrets.

The PostgreSQL init script runs against a throwaway server (tests/pg.py) when the server
binaries are installed.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKER_DIR = ROOT / "docker"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; "$$" escapes.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])[^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|(^|_)KEY$", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]+)@")
PROJECT_IMAGE_SERVICES = {"mlflow", "spark-master", "spark-worker", "airflow-init", "airflow-apiserver",
                          "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE.read_text())


def parse_env_file(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


def is_one_shot(name: str, service: dict) -> bool:
    return str(service.get("restart", "no")) == "no" and "healthcheck" not in service


def environment_items(service: dict) -> list[tuple[str, str]]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return [tuple(item.split("=", 1)) if "=" in item else (item, "") for item in environment]
    return [(name, "" if value is None else str(value)) for name, value in environment.items()]


def strings(node):
    """Every string in a parsed YAML document (keys excluded)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


@pytest.fixture(scope="module")
def generated_env(tmp_path_factory) -> Path:
    """A .env written by docker/init-env.sh from .env.example, in a scratch copy of the layout."""
    scratch = tmp_path_factory.mktemp("compose")
    (scratch / "docker").mkdir()
    shutil.copy(ENV_EXAMPLE, scratch / ".env.example")
    shutil.copy(DOCKER_DIR / "init-env.sh", scratch / "docker" / "init-env.sh")
    result = subprocess.run(["bash", str(scratch / "docker" / "init-env.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return scratch / ".env"


# -- docker-compose v1 ------------------------------------------------------------------------

def docker_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.skip("docker-compose (v1) is not installed (apt-get install docker-compose)")
    environment = {k: v for k, v in os.environ.items() if k not in parse_env_file(ENV_EXAMPLE.read_text())}
    return subprocess.run([executable, "--project-directory", str(ROOT), "--env-file", str(env_file),
                           "-f", str(COMPOSE), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_docker_compose_config_accepts_the_file(generated_env):
    result = docker_compose("config", env_file=generated_env)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {"postgres", "mlflow"} | PROJECT_IMAGE_SERVICES
    secrets = parse_env_file(generated_env.read_text())
    scheduler = resolved["services"]["airflow-scheduler"]["environment"]
    assert scheduler["SRGNN_WAREHOUSE_URL"] == (
        f"postgresql+psycopg://warehouse:{secrets['WAREHOUSE_DB_PASSWORD']}@postgres:5432/warehouse")
    assert scheduler["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["AIRFLOW_JWT_SECRET"]


def test_docker_compose_refuses_to_start_without_secrets():
    """.env.example leaves the secrets empty; `${VAR:?}` makes Compose name the missing one."""
    result = docker_compose("config", env_file=ENV_EXAMPLE)
    assert result.returncode != 0
    assert re.search(r"set [A-Z_]+ in \.env", result.stderr), result.stderr


# -- compose-spec JSON schema -----------------------------------------------------------------

def compose_spec_schema() -> dict:
    candidates = sorted(glob.glob("/usr/lib/python3*/dist-packages/compose/config/compose_spec.json")
                        + glob.glob("/usr/local/lib/python3*/*-packages/compose/config/compose_spec.json"))
    if not candidates:
        pytest.skip("no installed copy of the compose-spec JSON schema (apt-get install docker-compose)")
    return json.loads(Path(candidates[-1]).read_text())


def test_compose_spec_schema_accepts_the_file(compose):
    from jsonschema import Draft201909Validator

    validator = Draft201909Validator(compose_spec_schema())
    errors = [f"{'/'.join(map(str, error.path))}: {error.message}" for error in validator.iter_errors(compose)]
    assert errors == []
    # The same validator rejects a misspelt key, so a pass above means something.
    broken = json.loads(json.dumps(compose))
    broken["services"]["postgres"]["healthcheck"]["intervall"] = "10s"
    assert list(validator.iter_errors(broken))


# -- semantics --------------------------------------------------------------------------------

def test_every_long_running_service_has_a_healthcheck(compose):
    services = compose["services"]
    one_shots = {name for name, service in services.items() if is_one_shot(name, service)}
    assert one_shots == {"airflow-init"}
    for name, service in services.items():
        if name in one_shots:
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_dependencies_name_existing_services_with_matching_conditions(compose):
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for target, rule in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no healthcheck"
            elif condition == "service_completed_successfully":
                assert is_one_shot(target, services[target]), f"{target} is not a one-shot service"
            else:
                pytest.fail(f"{name} -> {target}: use service_healthy or service_completed_successfully")
    # Everything that reaches the metadata database waits for its schema.
    for name in PROJECT_IMAGE_SERVICES - {"mlflow", "spark-master", "spark-worker", "airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_every_variable_is_documented_in_env_example(env_example):
    used = {name for name, _ in VARIABLE.findall(COMPOSE.read_text())}
    assert used, "no ${VAR} found: the pattern is broken"
    assert sorted(used - set(env_example)) == []
    assert sorted(set(env_example) - used) == [], ".env.example lists variables the compose file never reads"


def test_required_variables_are_the_secrets(env_example):
    """Secrets have no default (`:?`); nothing else is required."""
    required = {name for name, operator in VARIABLE.findall(COMPOSE.read_text()) if operator in (":?", "?")}
    secrets = {name for name in env_example if SECRET_NAME.search(name)}
    assert required == secrets
    assert {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET"} <= secrets


def test_no_secret_literals(compose, env_example):
    for name, value in env_example.items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example must leave {name} empty"
    for service_name, service in compose["services"].items():
        for name, value in environment_items(service):
            if SECRET_NAME.search(name) and not name.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", value), \
                    f"{service_name}: {name} must come from .env"
    for text in strings(compose):
        for password in URL_WITH_PASSWORD.findall(text):
            assert VARIABLE.fullmatch(password), f"password literal in URL: {text}"


def test_project_services_share_one_image_built_from_the_dockerfile(compose):
    services = compose["services"]
    images = {services[name]["image"] for name in PROJECT_IMAGE_SERVICES}
    assert len(images) == 1
    for name in PROJECT_IMAGE_SERVICES:
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}


def test_published_ports_stay_on_the_loopback_interface(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_services_are_wired_to_each_other(compose):
    services = compose["services"]
    scheduler = dict(environment_items(services["airflow-scheduler"]))
    assert scheduler["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert scheduler["SRGNN_SPARK_MASTER"] == "spark://spark-master:7077"
    assert scheduler["AIRFLOW_CONN_SPARK_DEFAULT"] == "spark://spark-master:7077"
    assert scheduler["SRGNN_WAREHOUSE_URL"].startswith("postgresql+psycopg://warehouse:")
    assert scheduler["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    mlflow = services["mlflow"]
    assert "--serve-artifacts" in mlflow["command"]
    assert dict(environment_items(mlflow))["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://mlflow:")
    # Prepared runs written by Spark executors are read by the training task: one shared volume.
    for name in ("airflow-scheduler", "spark-worker"):
        assert "srgnn-home:/srgnn" in services[name]["volumes"]
    init_script = "./docker/postgres/init-databases.sh:/docker-entrypoint-initdb.d/10-init-databases.sh:ro"
    assert init_script in services["postgres"]["volumes"]


# -- Dockerfile and scripts -------------------------------------------------------------------

def test_dockerfile_installs_the_locked_project_with_java_17():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", text, re.MULTILINE)
    assert "openjdk-17-jre-headless" in text
    assert "-c requirements.lock" in text
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    for folder in ("dags", "jobs", "srgnn"):  # the warehouse SQL ships inside srgnn/
        assert re.search(rf"^COPY {folder}/ {folder}/$", text, re.MULTILINE), folder
    assert (ROOT / "srgnn" / "warehouse" / "sql" / "ddl").is_dir()
    assert re.search(r"^USER \d+", text, re.MULTILINE), "the image should not run as root"
    # The CPU index belongs to the image build only.
    for name in ("pyproject.toml", "requirements.lock"):
        assert "download.pytorch.org" not in (ROOT / name).read_text()


def test_dockerignore_keeps_secrets_and_state_out_of_the_build_context():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".git", ".venv", "var/"):
        assert entry in ignored


def test_init_env_fills_every_secret(generated_env, env_example):
    generated = parse_env_file(generated_env.read_text())
    assert set(generated) == set(env_example)
    for name, value in generated.items():
        if SECRET_NAME.search(name):
            assert len(value) >= 32, name
            if name.endswith("_PASSWORD"):
                assert re.fullmatch(r"[0-9a-f]+", value), "passwords go into URLs unescaped"
        else:
            assert value == env_example[name]
    assert oct(generated_env.stat().st_mode & 0o777) == "0o600"
    assert len({generated[name] for name in generated if SECRET_NAME.search(name)}) == 8


def test_entrypoint_writes_the_airflow_login(tmp_path):
    passwords = tmp_path / "auth" / "passwords.json"
    environment = dict(os.environ, AIRFLOW_ADMIN_PASSWORD="pw-from-env",
                       AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="ops:admin",
                       AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords))
    result = subprocess.run(["bash", str(DOCKER_DIR / "entrypoint.sh"), "echo", "started"],
                            env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"
    assert json.loads(passwords.read_text()) == {"ops": "pw-from-env"}
    assert oct(passwords.stat().st_mode & 0o777) == "0o600"


def test_postgres_init_script_creates_one_private_database_per_service(tmp_path):
    """Runs docker/postgres/init-databases.sh the way the postgres image does, then logs in."""
    from urllib.parse import urlsplit

    import psycopg

    from srgnn.warehouse.localpg import PostgresServer, PostgresUnavailable, find_bindir

    if os.environ.get("SRGNN_TEST_POSTGRES_URL"):
        pytest.skip("creates roles: runs only against the throwaway server")
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        admin = urlsplit(server.admin_url)
        passwords = {"airflow": "a1b2c3", "mlflow": "d4e5f6", "warehouse": "0a1b2c"}
        environment = dict(os.environ, PGHOST=admin.hostname, PGPORT=str(admin.port),
                           PGPASSWORD=admin.password or "", POSTGRES_USER=admin.username,
                           PATH=f"{find_bindir()}:{os.environ['PATH']}",
                           **{f"{name.upper()}_DB_PASSWORD": value for name, value in passwords.items()})
        result = subprocess.run(["bash", str(DOCKER_DIR / "postgres" / "init-databases.sh")],
                                env=environment, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        for name, password in passwords.items():
            url = f"postgresql://{name}:{password}@{admin.hostname}:{admin.port}/{name}"
            with psycopg.connect(url) as connection:
                assert connection.execute("select current_database(), current_user").fetchall() == [(name, name)]
        with pytest.raises(psycopg.OperationalError):  # CONNECT revoked from everyone else
            psycopg.connect(f"postgresql://airflow:a1b2c3@{admin.hostname}:{admin.port}/warehouse").close()
    finally:
        server.stop()
