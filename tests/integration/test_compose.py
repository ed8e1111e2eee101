"""docker-compose.yml is valid against the Compose specification's JSON schema (the copy check-jsonschema ships)
and describes the deployment the hub needs: Airflow 3.3 with Celery (api-server, scheduler, dag-processor,
triggerer, two workers), Redis, one PostgreSQL for Airflow and another for the hub, the simulators and the hub's
service; shared secrets from .env only; volumes; health checks; workers built from the Dockerfile that installs
the hub. No Docker engine runs here, so the file is checked as data; a broken file fails the same checks.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
AIRFLOW = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
           "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
           "airflow-worker-1": "celery worker", "airflow-worker-2": "celery worker"}  # fmt: skip
WORKERS = ("airflow-worker-1", "airflow-worker-2")
SERVICES = {*AIRFLOW, "airflow-init", "airflow-db", "hub-db", "redis", "simulators", "hub-service"}
#: settings every Airflow component must share exactly, or they cannot read each other's work
SHARED = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
          "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
          "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "HUB_DATABASE_URL",
          "HUB_KEYRING_JSON", "HUB_HOME")  # fmt: skip
SECRETS = ("AIRFLOW_DB_PASSWORD", "HUB_DB_PASSWORD", "HUB_SERVICE_DB_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY",
           "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "_AIRFLOW_WWW_USER_PASSWORD", "HUB_KEYRING_JSON",
           "HUB_SIM_TOKEN")  # fmt: skip
#: settings that hold a secret, and the .env variable each must come from
FROM_ENV_FILE = {
    "AIRFLOW__CORE__FERNET_KEY": "AIRFLOW_FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
    "HUB_KEYRING_JSON": "HUB_KEYRING_JSON",
}
_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")  # $${X} is a literal ${X}


def compose_schema() -> dict[str, Any]:
    """The Compose specification's schema as check-jsonschema vendors it (its builtin ``vendor.compose-spec``)."""
    path = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def schema_errors(doc: Any) -> list[str]:
    """Where ``doc`` breaks the Compose specification, one line each."""
    validator = jsonschema.Draft202012Validator(compose_schema(), format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(doc)]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """target -> source[:mode] of a service's short-syntax volumes."""
    out = {}
    for entry in service.get("volumes") or []:
        source, target, *mode = str(entry).split(":")
        out[target] = source + (f":{mode[0]}" if mode else "")
    return out


def _healthy(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck") or {}
    return bool(check.get("test")) and not check.get("disable")


def deployment_problems(doc: dict[str, Any], dockerfile: str, env_example: str) -> list[str]:
    """What keeps ``doc`` from being the hub's deployment (empty when it is); schema errors first."""
    problems = schema_errors(doc)
    if problems:
        return problems
    services: dict[str, dict[str, Any]] = doc.get("services") or {}
    if missing := SERVICES - set(services):
        return [f"missing services {sorted(missing)}"]
    for name, command in AIRFLOW.items():
        service = services[name]
        if str(service.get("command")) != command:
            problems.append(f"{name} runs {service.get('command')!r}, not {command!r}")
        if _env(service).get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
            problems.append(f"{name} does not use the CeleryExecutor")
    # one set of secrets and connections for every Airflow component
    for key in SHARED:
        values = {_env(services[n]).get(key) for n in [*AIRFLOW, "airflow-init"]}
        if len(values) != 1 or None in values:
            problems.append(f"{key} differs between the Airflow services: {sorted(map(str, values))}")
    env = _env(services["airflow-scheduler"])
    if "@airflow-db:" not in env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""):
        problems.append("Airflow's metadata DB is not the airflow-db service")
    if "@hub-db:" not in env.get("HUB_DATABASE_URL", "") or "airflow-db" in env.get("HUB_DATABASE_URL", ""):
        problems.append("the hub's database is not the separate hub-db service")
    if "@redis:" not in env.get("AIRFLOW__CELERY__BROKER_URL", ""):
        problems.append("the Celery broker is not the redis service")
    for system in ("GONGAN", "RENSHE"):
        if "@simulators:" not in env.get(f"AIRFLOW_CONN_HUB_{system}", ""):
            problems.append(f"no Airflow Connection hub_{system.lower()} to the simulators")
    # secrets come from .env only: each is a required variable, never a literal, and .env.example leaves it empty
    for name, service in services.items():
        for key, variable in FROM_ENV_FILE.items():
            value = _env(service).get(key)
            if value is not None and not value.startswith(f"${{{variable}:?"):
                problems.append(f"{name}: {key} is not taken from .env (${{{variable}}})")
    text = yaml.safe_dump(doc)
    used = {m.group(1): m.group(2) or "" for m in _VARIABLE.finditer(text)}
    example = dict(line.split("=", 1) for line in env_example.splitlines() if "=" in line and not line.startswith("#"))
    for secret in SECRETS:
        if not used.get(secret, "").startswith(":?"):
            problems.append(f"{secret} is not a required variable (${{{secret}:?…}}) in the compose file")
        if example.get(secret, None) != "":
            problems.append(f"{secret} must be listed, empty, in .env.example")
    if unknown := sorted(set(used) - set(example)):
        problems.append(f"variables missing from .env.example: {unknown}")
    # volumes: declared; the hub's home and the simulators' data shared at one path by workers and the service
    declared = set(doc.get("volumes") or {})
    for name, service in services.items():
        for source in _volumes(service).values():
            volume = source.split(":")[0]
            if not volume.startswith((".", "/")) and volume not in declared:
                problems.append(f"{name} mounts undeclared volume {volume}")
    for name in (*WORKERS, "hub-service"):
        if _volumes(services[name]).get("/opt/airflow/hub") != "hub-data":
            problems.append(f"{name} does not mount hub-data at the hub's home")
    for name in WORKERS:
        if _volumes(services[name]).get("/opt/airflow/sim") != "sim-data:ro":
            problems.append(f"{name} does not read the simulators' data (sim-data, read-only)")
    if _volumes(services["simulators"]).get("/opt/airflow/sim") != "sim-data":
        problems.append("the simulators do not write sim-data at the workers' path")
    for name in ("airflow-db", "hub-db"):
        if "/var/lib/postgresql/data" not in _volumes(services[name]):
            problems.append(f"{name} keeps no data volume")
    # health checks, and start order on them
    for name, service in services.items():
        if name != "airflow-init" and not _healthy(service):
            problems.append(f"{name} has no health check")
        for dependency, condition in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dependency == "airflow-init" else "service_healthy"
            if condition.get("condition") != wanted:
                problems.append(f"{name} starts before {dependency} is {wanted.split('_', 1)[1]}")
    # workers (and every hub process) run the image built from the Dockerfile, which installs the hub
    for name in (*AIRFLOW, "airflow-init", "simulators", "hub-service"):
        build = services[name].get("build") or {}
        if build.get("dockerfile") != "Dockerfile" or build.get("context") != ".":
            problems.append(f"{name} does not run the hub's image (build: ./Dockerfile)")
    for name in WORKERS:
        if "hub --help" not in " ".join(map(str, services[name]["healthcheck"]["test"])):
            problems.append(f"{name}'s health check does not prove the hub is installed")
    if not re.search(r"^FROM apache/airflow:3\.3\.2\b", dockerfile, re.MULTILINE):
        problems.append("the Dockerfile is not FROM apache/airflow:3.3.2")
    if not re.search(r"pip install [^\n]*/opt/hub/src", dockerfile) or "COPY --chown=airflow:0 dags" not in dockerfile:
        problems.append("the Dockerfile does not install the hub and its DAGs")
    return problems


def _load() -> tuple[dict[str, Any], str, str]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return doc, (ROOT / "Dockerfile").read_text(encoding="utf-8"), (ROOT / ".env.example").read_text(encoding="utf-8")


def test_the_compose_file_is_valid_and_is_the_hubs_deployment() -> None:
    doc, dockerfile, env_example = _load()
    assert schema_errors(doc) == []
    assert deployment_problems(doc, dockerfile, env_example) == []


def test_check_jsonschema_accepts_the_compose_file() -> None:
    import subprocess
    import sys

    cli = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run([str(cli), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _drop_worker(doc: dict[str, Any]) -> None:
    del doc["services"]["airflow-worker-2"]


def _typo(doc: dict[str, Any]) -> None:
    doc["services"]["redis"]["healthcheck"]["intervall"] = "10s"  # not a Compose key


def _ports_as_mapping(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-apiserver"]["ports"] = {"8080": 8080}


def _literal_secret(doc: dict[str, Any]) -> None:
    for name in AIRFLOW:
        doc["services"][name]["environment"]["AIRFLOW__CORE__FERNET_KEY"] = "bGl0ZXJhbC1rZXktaW4tZ2l0LWxpdGVyYWwta2V5"


def _one_worker_other_key(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-worker-2"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] = "${OTHER_JWT:?x}"


def _worker_without_hub_home(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-worker-1"]["volumes"] = ["airflow-logs:/opt/airflow/logs"]


def _no_health_check(doc: dict[str, Any]) -> None:
    del doc["services"]["simulators"]["healthcheck"]


def _stock_image_worker(doc: dict[str, Any]) -> None:
    worker = doc["services"]["airflow-worker-2"]
    del worker["build"]
    worker["image"] = "apache/airflow:3.3.2"


def _one_database(doc: dict[str, Any]) -> None:
    for service in doc["services"].values():
        env = service.get("environment") or {}
        if "HUB_DATABASE_URL" in env:
            env["HUB_DATABASE_URL"] = env["HUB_DATABASE_URL"].replace("hub-db", "airflow-db")


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_typo, "intervall"),
        (_ports_as_mapping, "ports"),
        (_drop_worker, "missing services ['airflow-worker-2']"),
        (_literal_secret, "AIRFLOW__CORE__FERNET_KEY is not taken from .env"),
        (_one_worker_other_key, "AIRFLOW__API_AUTH__JWT_SECRET differs"),
        (_worker_without_hub_home, "airflow-worker-1 does not mount hub-data"),
        (_no_health_check, "simulators has no health check"),
        (_stock_image_worker, "airflow-worker-2 does not run the hub's image"),
        (_one_database, "the hub's database is not the separate hub-db service"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_a_broken_compose_file_fails(breakage: Callable[[dict[str, Any]], None], expected: str) -> None:
    doc, dockerfile, env_example = _load()
    broken = copy.deepcopy(doc)
    breakage(broken)
    problems = deployment_problems(broken, dockerfile, env_example)
    assert any(expected in p for p in problems), problems


def test_a_dockerfile_without_the_hub_fails() -> None:
    doc, _, env_example = _load()
    stock = "FROM apache/airflow:3.3.2\n"
    assert "the Dockerfile does not install the hub and its DAGs" in deployment_problems(doc, stock, env_example)


def test_a_secret_in_env_example_fails() -> None:
    doc, dockerfile, env_example = _load()
    leaked = env_example.replace("HUB_SIM_TOKEN=\n", "HUB_SIM_TOKEN=abc123\n")
    assert "HUB_SIM_TOKEN must be listed, empty, in .env.example" in deployment_problems(doc, dockerfile, leaked)
