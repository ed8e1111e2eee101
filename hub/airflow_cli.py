"""`hub airflow`: the hub's DAGs run through Airflow 3 on this machine, and its UI on the same metadata DB.

- `hub airflow run DAG_ID…` runs DAGs with ``dag.test()`` against the Airflow metadata database (SQLite under
  HUB_HOME/airflow unless AIRFLOW_HOME says otherwise), one after another, migrating it first. Each run's
  output is split into the task logs Airflow itself would write (``logs/dag_id=…/run_id=…/task_id=…``), so
  the UI shows them.
- `hub airflow demo` is `make demo`: a synthetic population, the simulated department systems on loopback,
  every ingest DAG, then link_publish, then privacy_audit, then a summary.
- `hub airflow ui` is `make airflow-ui`: ``airflow standalone`` (api-server, scheduler, dag-processor,
  triggerer) on the demo's metadata DB, with the simulators serving so the DAGs can be triggered there.
- `hub airflow env` prints the variables that point the `airflow` command at the same installation.

Airflow reads its configuration when it is first imported, so every command sets the environment first and
imports Airflow after.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hub.settings import Settings

if TYPE_CHECKING:
    from airflow.sdk import DAG

#: the DAGs of one whole job, in the order the demo runs them (ingest DAG ids come from the registry)
LINK_PUBLISH = "link_publish"
PRIVACY_AUDIT = "privacy_audit"
UI_USER = "admin"
_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")


def dags_folder() -> Path:
    """The DAG files: dags/ of the checkout the hub runs from (an image sets AIRFLOW__CORE__DAGS_FOLDER)."""
    return Path(__file__).resolve().parent.parent / "dags"


def ingest_dag_ids() -> list[str]:
    """One ingest DAG per registered source dataset, in registry order."""
    from connectors.registry import registry

    return ["ingest_" + dataset.replace(".", "_") for dataset in registry()]


def job_dag_ids() -> list[str]:
    """Every DAG of the job, in the order one pass runs them."""
    return [*ingest_dag_ids(), LINK_PUBLISH, PRIVACY_AUDIT]


def airflow_environment(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that make Airflow run the hub's DAGs on this machine; what ``env`` sets already wins.

    AIRFLOW_HOME defaults to HUB_HOME/airflow (its SQLite metadata DB, airflow.cfg, task logs); HUB_HOME
    and HUB_SIM_DATA are passed on so the tasks resolve the same hub as this command.
    """
    env = dict(os.environ if env is None else env)
    home = Path(env.get("AIRFLOW_HOME") or settings.home / "airflow").resolve()
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{UI_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "ui-passwords.json"),
        "GX_ANALYTICS_ENABLED": "false",
    }
    out = {k: env.get(k) or v for k, v in defaults.items()}
    out["HUB_HOME"] = str(settings.home)
    out["HUB_SIM_DATA"] = str(settings.sim_data)
    return out


def use_airflow(settings: Settings) -> dict[str, str]:
    """Put the Airflow environment into this process (before Airflow is imported) and make AIRFLOW_HOME."""
    from schemas.base import private_dir

    env = airflow_environment(settings)
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise click.ClickException("Airflow was imported before its environment was set; run this in a new process")
    os.environ.update(env)
    private_dir(env["AIRFLOW_HOME"])
    return env


def ui_login(env: Mapping[str, str]) -> tuple[str, str]:
    """The UI's login: the user and its password, generated once into the passwords file (mode 0600)."""
    from schemas.base import write_atomic

    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    known: dict[str, str] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if UI_USER not in known:
        known[UI_USER] = secrets.token_urlsafe(12)
        write_atomic(path, json.dumps(known, indent=2) + "\n")
    return UI_USER, known[UI_USER]


# -- running DAGs with dag.test() ------------------------------------------------------------------------------


@dataclass
class TaskOutcome:
    """One task instance of a run: its id, map index, final state and try number."""

    task_id: str
    map_index: int
    state: str
    try_number: int
    log_path: Path | None = None
    result: Any = None  # its XCom return value: batch ids and counts


@dataclass
class RunOutcome:
    """One DAG run: its state, how long it took, its task instances, and the file with all its output."""

    dag_id: str
    run_id: str
    state: str
    seconds: float
    output: Path
    tasks: list[TaskOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The run succeeded (skipped tasks count as done: nothing new to stage)."""
        return self.state == "success"

    def failed_tasks(self) -> list[TaskOutcome]:
        """Task instances that did not end in success or skipped."""
        return [t for t in self.tasks if t.state not in ("success", "skipped")]


def migrate_metadata() -> None:
    """``airflow db migrate`` in this process: create or upgrade the metadata DB (idempotent)."""
    from airflow.utils import db

    db.upgradedb()


def load_dags() -> dict[str, DAG]:
    """Parse the DAG folder; any import error stops here, naming the file."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        problems = "; ".join(f"{Path(f).name}: {e.strip().splitlines()[-1]}" for f, e in bag.import_errors.items())
        raise click.ClickException(f"the DAG folder does not parse: {problems}")
    return dict(bag.dags)


@contextmanager
def _quiet_output(path: Path) -> Iterator[Path]:
    """Send everything this process writes to fd 1 and 2 (Airflow's task logs included) to ``path`` (0600)."""
    from schemas.base import private_dir

    private_dir(path.parent)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for handle in (fd, *saved):
            os.close(handle)


def _task_sections(text: str) -> dict[tuple[str, int], list[str]]:
    """A dag.test() run's output split per task instance (by its ``[DAG TEST] starting task_id=…`` lines).

    A task tried twice has two sections, in order; lines before the first task are the run's own.
    """
    sections: dict[tuple[str, int], list[list[str]]] = {}
    key: tuple[str, int] | None = None
    for line in text.splitlines(keepends=True):
        found = _TASK_START.search(line)
        if found:
            key = (found.group(1), int(found.group(2)))
            sections.setdefault(key, []).append([])
        if key is not None:
            sections[key][-1].append(line)
    return {k: ["".join(part) for part in parts] for k, parts in sections.items()}


def _write_task_logs(dag_id: str, run_id: str, text: str) -> list[TaskOutcome]:
    """Write each task's part of the run's output where Airflow's file task handler looks for it."""
    from airflow.configuration import conf
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.log.file_task_handler import FileTaskHandler
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from schemas.base import write_atomic

    base = Path(conf.get("logging", "base_log_folder"))
    handler = FileTaskHandler(base_log_folder=str(base))
    sections = _task_sections(text)
    outcomes = []
    with create_session() as session:
        query = select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        for ti in session.scalars(query.order_by(TaskInstance.task_id, TaskInstance.map_index)):
            attempts = sections.get((ti.task_id, ti.map_index), [])
            path = None
            first_try = max(1, ti.try_number - len(attempts) + 1)
            for offset, part in enumerate(attempts):
                path = base / handler._render_filename(ti, first_try + offset, session=session)
                write_atomic(path, part)
            value = session.scalar(
                select(XComModel.value).where(
                    XComModel.dag_id == dag_id,
                    XComModel.run_id == run_id,
                    XComModel.task_id == ti.task_id,
                    XComModel.map_index == ti.map_index,
                    XComModel.key == "return_value",
                )
            )
            result = XComModel.deserialize_value(_Row(value)) if value is not None else None
            outcomes.append(TaskOutcome(ti.task_id, ti.map_index, str(ti.state), ti.try_number, path, result))
    return outcomes


@dataclass
class _Row:
    """What ``XComModel.deserialize_value`` reads: an object with a ``value``."""

    value: Any


#: what a run's line shows of its tasks' XCom (counts only, and only these)
_DIGEST = ("staged", "quarantined", "records", "new_persons", "persons", "changes", "entries", "plaintext_findings")


def _digest(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    shown = [f"{k.replace('_', ' ')} {result[k]:,}" if isinstance(result[k], int) and not isinstance(result[k], bool)
             else f"{k.replace('_', ' ')} {result[k]}" for k in _DIGEST if k in result]  # fmt: skip
    return f" ({', '.join(shown)})" if shown else ""


def run_dag(dag: DAG, logical_date: datetime | None = None, retries: int | None = None) -> RunOutcome:
    """``dag.test()`` one DAG; its output goes to AIRFLOW_HOME/logs (a file per run and per task), not here.

    ``retries`` overrides every task's retries for this run (0: fail at once, for tests and debugging).
    """
    from airflow.sdk import timezone

    if retries is not None:
        for task in dag.tasks:
            task.retries = retries
    # dag.test() in Airflow 3.3.2 finishes a run by looking its DAG's deadline alerts up by id, but its DAG
    # went through serialize/deserialize without the database, so it holds their definitions: the lookup
    # fails (models/dagrun.py update_state). The scheduler's DAG has the ids; the parsed DAG in the metadata
    # DB keeps its alert (the bundle sync writes it). Only the in-process run goes without.
    dag.deadline = None
    started = time.perf_counter()
    stamp = timezone.utcnow().strftime("%Y%m%dT%H%M%S%f")
    output = Path(os.environ["AIRFLOW_HOME"]) / "logs" / "dag_test" / dag.dag_id / f"{stamp}.log"
    with _quiet_output(output):
        run = dag.test(logical_date=logical_date) if logical_date else dag.test()
    seconds = time.perf_counter() - started
    tasks = _write_task_logs(dag.dag_id, run.run_id, output.read_text(encoding="utf-8", errors="replace"))
    return RunOutcome(dag.dag_id, run.run_id, str(run.state), seconds, output, tasks)


def run_dags(
    dag_ids: Sequence[str], logical_date: datetime | None = None, retries: int | None = None, echo: bool = True
) -> list[RunOutcome]:
    """Run DAGs one after another (every one, even after a failure), printing one line per run."""
    with _quiet_output(Path(os.environ["AIRFLOW_HOME"]) / "logs" / "parse.log"):
        migrate_metadata()
        dags = load_dags()
    unknown = [d for d in dag_ids if d not in dags]
    if unknown:
        raise click.ClickException(f"unknown DAG(s) {unknown}; known: {', '.join(sorted(dags))}")
    outcomes = []
    for dag_id in dag_ids:
        outcome = run_dag(dags[dag_id], logical_date, retries)
        outcomes.append(outcome)
        if echo:
            print_outcome(outcome)
    return outcomes


def print_outcome(outcome: RunOutcome) -> None:
    """One line per run; for a failed task, the end of its log (which names the source and the reason)."""
    states = ", ".join(
        f"{t.task_id}{f'[{t.map_index}]' if t.map_index >= 0 else ''} {t.state}{_digest(t.result)}"
        for t in outcome.tasks
    )
    click.echo(f"{outcome.dag_id:<28} {outcome.state:<8} {outcome.seconds:6.1f}s  {states}")
    for task in outcome.failed_tasks():
        click.echo(f"  {task.task_id} failed; its log: {task.log_path or outcome.output}")
        if task.log_path and task.log_path.is_file():
            reasons = [line for line in task.log_path.read_text(encoding="utf-8").splitlines() if "TaskFailed" in line]
            for line in reasons[-3:]:
                click.echo(f"    {line.strip()[:400]}")


# -- commands -------------------------------------------------------------------------------------------------


@click.group("airflow")
def airflow_group() -> None:
    """Run the hub's DAGs through Airflow on this machine (dag.test), or open the Airflow UI."""


@airflow_group.command("env")
def env_command() -> None:
    """Print `export` lines that point the `airflow` command at the hub's Airflow (AIRFLOW_HOME, DAG folder)."""
    for key, value in airflow_environment(Settings.from_env()).items():
        click.echo(f"export {key}={value}")


@airflow_group.command("run")
@click.argument("dag_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every DAG of the job: the ingest DAGs, link_publish, privacy_audit.")
@click.option("--ingest", is_flag=True, help="Every ingest DAG.")
@click.option("--logical-date", type=click.DateTime(), default=None,
              help="Run at this logical date (UTC); an earlier run of that date is cleared and run again.")  # fmt: skip
@click.option("--retries", type=click.IntRange(min=0), default=None,
              help="Override every task's retries (0: fail fast).")  # fmt: skip
def run_command(
    dag_ids: tuple[str, ...], all_: bool, ingest: bool, logical_date: datetime | None, retries: int | None
) -> None:
    """Run DAG_IDS with dag.test() on the Airflow metadata DB, in the order given; exit 1 if any run failed.

    The sources are the configured ones (HUB_SOURCE_*, Airflow Connections hub_<system>) or the simulators
    (HUB_SIM_DATA/serve.json: run `hub simulate serve` first). Task logs are written under
    AIRFLOW_HOME/logs where the Airflow UI reads them.
    """
    from datetime import UTC

    names = list(dag_ids) + (job_dag_ids() if all_ else ingest_dag_ids() if ingest else [])
    if not names:
        raise click.UsageError("name DAG ids, or --all, or --ingest; known: " + ", ".join(job_dag_ids()))
    use_airflow(Settings.from_env())
    when = logical_date.replace(tzinfo=UTC) if logical_date else None
    outcomes = run_dags(names, when, retries)
    failed = [o.dag_id for o in outcomes if not o.ok]
    if failed:
        click.echo(f"{len(failed)} of {len(outcomes)} run(s) failed: {', '.join(failed)}", err=True)
        sys.exit(1)


@airflow_group.command("demo")
@click.option("--residents", default=20_000, show_default=True, help="Synthetic residents to generate.")
@click.option("--seed", default=1, show_default=True, help="Seed of the synthetic population.")
@click.option("--since", type=float, default=None, help="Epoch seconds the demo started (make demo: before install).")
def demo_command(residents: int, seed: int, since: float | None) -> None:
    """The whole job through Airflow: generate, serve the sources, every ingest DAG, link_publish, privacy_audit.

    Everything goes under HUB_HOME (default var/ of the checkout), Airflow's metadata DB and task logs under
    HUB_HOME/airflow. A second run continues incrementally.
    """
    from hub.airflow_demo import run_demo

    run_demo(residents, seed, since if since is not None else time.time())


@airflow_group.command("ui")
@click.option("--port", default=8080, show_default=True, help="Port of the Airflow UI (api-server) on 127.0.0.1.")
def ui_command(port: int) -> None:
    """The Airflow UI on the demo's metadata DB (`airflow standalone`), with the simulated sources serving.

    Log in with the user and password printed (kept in AIRFLOW_HOME/ui-passwords.json, mode 0600). Ctrl-C stops it.
    """
    import subprocess

    from simulators.http_server import start_servers

    settings = Settings.from_env()
    env = use_airflow(settings)
    user, password = ui_login(env)
    env |= {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    serving = (settings.sim_data / "http").is_dir()
    servers = start_servers(settings.sim_data) if serving else None
    click.echo(f"Airflow UI: http://127.0.0.1:{port}  login {user} / {password}")
    click.echo(f"metadata DB and task logs: {env['AIRFLOW_HOME']}")
    if servers:
        click.echo("simulated sources serving: " + ", ".join(f"{k} {v}" for k, v in servers.urls.items()))
    bin_dir = Path(sys.executable).parent  # standalone starts its components as `airflow …` from PATH
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        subprocess.run([str(bin_dir / "airflow"), "standalone"], env={**os.environ, **env, "PATH": path}, check=False)
    except KeyboardInterrupt:
        pass
    finally:
        if servers:
            servers.stop()
