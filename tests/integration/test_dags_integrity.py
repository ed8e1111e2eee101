"""The DAG folder parses in real Airflow 3.3 with no import errors, holds every expected DAG and task, and does
nothing at parse time but read its own package's registry: no database, no network, no writes, no heavy import.

Airflow is parsed in a child process (its own AIRFLOW_HOME under the test's tmp folder), since importing
Airflow configures logging for the whole process. The child watches the parse with a Python audit hook and
reports what it saw as JSON; the parse time of each file is printed.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.registry import registry

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
INGEST = {"ingest_" + d.replace(".", "_"): d for d in registry()}
#: what a DAG file may import at its top: Airflow's authoring API, the source registry, the standard library
TOP_LEVEL_IMPORTS = {"__future__", "datetime", "typing", "airflow.sdk", "connectors.registry"}
#: modules that must not be imported when the DAG folder is parsed (heavy, or stages that touch data)
HEAVY = ("pandas", "pyarrow", "great_expectations", "splink", "duckdb", "hub.ingest", "hub.settings", "privacy",
         "linkage", "publish", "simulators", "schemas.validation", "schemas.conform")  # fmt: skip

PROBE = r"""
import json, sys, time
from pathlib import Path

out, folder = Path(sys.argv[1]), sys.argv[2]
armed = False
events = []
WATCHED = {"socket.connect", "socket.bind", "socket.getaddrinfo", "sqlite3.connect", "subprocess.Popen", "os.system",
           "os.remove", "os.rename", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.chmod", "urllib.Request"}

def hook(event, args):
    if not armed:
        return
    if event == "open":
        path, mode, flags = args
        events.append(["open", str(path), str(mode), int(flags or 0)])
    elif event in WATCHED:
        events.append([event, repr(args)[:300]])

sys.addaudithook(hook)
from airflow.dag_processing.dagbag import DagBag  # Airflow's own start-up is not the DAGs' parse time
from airflow.sdk.definitions.mappedoperator import MappedOperator

before = set(sys.modules)
armed = True
started = time.perf_counter()
bag = DagBag(dag_folder=folder)
seconds = time.perf_counter() - started
armed = False

def describe(dag):
    tasks = {}
    for t in dag.tasks:
        expand = t.op_kwargs_expand_input.value if isinstance(t, MappedOperator) else None
        tasks[t.task_id] = {
            "mapped_over": expand,
            "outlets": [a.uri for a in t.outlets],
            "retries": t.retries,
            "backoff": t.retry_exponential_backoff,
            "downstream": sorted(t.downstream_task_ids),
            "trigger_rule": str(t.trigger_rule.value if hasattr(t.trigger_rule, "value") else t.trigger_rule),
        }
    timetable = dag.timetable
    condition = getattr(timetable, "asset_condition", None)
    deadline = []
    for alert in dag.deadline or []:
        deadline.append({"reference": type(alert.reference).__name__, "seconds": alert.interval.total_seconds(),
                         "callback": alert.callback.path, "kind": type(alert.callback).__name__,
                         "kwargs": alert.callback.kwargs})
    return {"schedule": None if condition is not None else str(dag.schedule),
            "assets": sorted(a.uri for a in condition.objects) if condition is not None else None,
            "condition": type(condition).__name__ if condition is not None else None,
            "max_active_runs": dag.max_active_runs, "catchup": dag.catchup, "tags": sorted(dag.tags),
            "deadline": deadline, "tasks": tasks}

out.write_text(json.dumps({
    "errors": {Path(k).name: v for k, v in bag.import_errors.items()},
    "seconds": seconds,
    "files": {Path(s.file).name: {"seconds": s.duration.total_seconds(), "dags": s.dag_num, "tasks": s.task_num}
              for s in bag.dagbag_stats},
    "dags": {dag_id: describe(dag) for dag_id, dag in bag.dags.items()},
    "events": events,
    "new_modules": sorted(set(sys.modules) - before),
}))
"""


def _probe(folder: Path, tmp: Path) -> dict[str, Any]:
    """Parse ``folder`` in a child process with its own AIRFLOW_HOME under ``tmp``; what the probe saw."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HUB_"))}
    env |= {
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "HUB_HOME": str(tmp / "hub"),
    }
    out = tmp / "probe.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), str(folder)], env=env, cwd=tmp, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The hub's DAG folder as Airflow parses it, with the parse time of each file printed."""
    result = _probe(DAGS, tmp_path_factory.mktemp("dagbag"))
    print("\nDAG parse time per file (DagBag, Airflow 3.3):")
    for name, stat in sorted(result["files"].items()):
        print(f"  {name:<24} {stat['seconds'] * 1000:7.1f} ms  {stat['dags']} DAG(s), {stat['tasks']} task(s)")
    print(f"  whole folder             {result['seconds'] * 1000:7.1f} ms")
    return result


def test_the_dag_folder_parses_without_import_errors(parsed: dict[str, Any]) -> None:
    assert parsed["errors"] == {}
    assert set(parsed["files"]) == {"hub_ingest.py", "hub_link_publish.py", "hub_privacy_audit.py"}
    assert set(parsed["dags"]) == {*INGEST, "link_publish", "privacy_audit"}
    for name, stat in parsed["files"].items():
        assert stat["seconds"] < 5, f"{name} takes {stat['seconds']:.1f}s to parse"


def test_one_ingest_dag_per_registered_dataset(parsed: dict[str, Any]) -> None:
    for dag_id, dataset in INGEST.items():
        decl = registry()[dataset]
        dag = parsed["dags"][dag_id]
        assert dag["schedule"] == decl.schedule
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False
        assert {"hub", "ingest", decl.system} <= set(dag["tags"])
        assert set(dag["tasks"]) == {"ingest_partition"}
        ingest = dag["tasks"]["ingest_partition"]
        assert ingest["mapped_over"] == {"partition": list(decl.partitions)}  # .expand over the registry's partitions
        assert ingest["outlets"] == [f"hub://staged/{dataset}"]
        assert ingest["retries"] >= 2 and ingest["backoff"] > 1  # exponential backoff between tries


def test_link_publish_runs_on_every_staged_asset_with_a_deadline(parsed: dict[str, Any]) -> None:
    dag = parsed["dags"]["link_publish"]
    assert dag["condition"] == "AssetAny"  # any dataset with new staged batches
    assert dag["assets"] == sorted(f"hub://staged/{d}" for d in registry())
    tasks = dag["tasks"]
    assert tasks["link"]["downstream"] == ["publish"] and tasks["publish"]["downstream"] == ["release"]
    assert tasks["publish"]["outlets"] == ["hub://published/core"]
    assert tasks["release"]["outlets"] == ["hub://published/release"]
    assert dag["max_active_runs"] == 1
    [deadline] = dag["deadline"]
    assert deadline["reference"] == "DagRunQueuedAtDeadline" and deadline["seconds"] == 45 * 60
    assert deadline["kind"] == "AsyncCallback" and deadline["callback"] == "hub.airflow_tasks.link_publish_late"
    import inspect

    from hub import airflow_tasks

    assert inspect.iscoroutinefunction(airflow_tasks.link_publish_late)


def test_privacy_audit_is_daily_and_always_reports(parsed: dict[str, Any]) -> None:
    dag = parsed["dags"]["privacy_audit"]
    assert dag["schedule"] == "@daily"
    tasks = dag["tasks"]
    assert set(tasks) == {"coverage", "verify_log", "report"}
    assert tasks["coverage"]["downstream"] == tasks["verify_log"]["downstream"] == ["report"]
    assert tasks["report"]["trigger_rule"] == "all_done"


def _ours(path: str) -> bool:
    """A file the parse may read: Python source and bytecode, the DAG files, the registry and contracts."""
    p = Path(path)
    if p.suffix in {".py", ".pyc", ".pth", ".pyi"} or p.name in {".airflowignore"}:
        return True
    return p == ROOT / "connectors" / "sources.yaml" or (ROOT / "schemas" / "contracts") in p.parents


def test_nothing_but_the_registry_is_read_at_parse_time(parsed: dict[str, Any]) -> None:
    opened = [e for e in parsed["events"] if e[0] == "open"]
    writes = [e for e in opened if e[2] not in ("r", "rb") and e[3] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)]
    assert writes == []
    assert sorted({e[1] for e in opened if not _ours(e[1]) and not Path(e[1]).is_dir()}) == []
    other = [e for e in parsed["events"] if e[0] != "open"]
    assert other == [], "sockets, databases, processes or file changes at parse time"
    assert any(e[1].endswith("sources.yaml") for e in opened), "the ingest DAGs are generated from the registry"


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_no_heavy_module_is_imported_at_parse_time(parsed: dict[str, Any]) -> None:
    assert _heavy(parsed["new_modules"]) == []


def test_the_probe_sees_parse_time_io_and_heavy_imports(tmp_path: Path) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "careless.py").write_text(
        "import pandas\nfrom airflow.sdk import dag\n"
        f"open({str(ROOT / 'README.md')!r}).read()\nopen({str(tmp_path / 'x.txt')!r}, 'w').write('x')\n"
        "@dag(schedule=None)\ndef careless():\n    pass\ncareless()\n"
    )
    seen = _probe(folder, tmp_path)
    opened = {e[1] for e in seen["events"] if e[0] == "open"}
    assert str(ROOT / "README.md") in opened and str(tmp_path / "x.txt") in opened
    assert "pandas" in _heavy(seen["new_modules"])


def _task_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    def is_task(d: ast.expr) -> bool:
        target = d.func if isinstance(d, ast.Call) else d
        return isinstance(target, ast.Name) and target.id == "task"

    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and any(map(is_task, n.decorator_list))]


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_files_are_thin_wiring(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert top <= TOP_LEVEL_IMPORTS, f"{path.name} imports {top - TOP_LEVEL_IMPORTS} at parse time"
    assert "environ" not in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}, "only hub/ reads env"
    tasks = _task_functions(tree)
    assert tasks
    for fn in tasks:
        imported = {n.module for n in ast.walk(fn) if isinstance(n, ast.ImportFrom)}
        assert "hub.airflow_tasks" in imported, f"{fn.name} must call the hub's task function"
        assert imported <= {"hub.airflow_tasks", "airflow.sdk", "airflow.sdk.exceptions"}, fn.name
        statements = [s for s in fn.body if not isinstance(s, ast.Expr | ast.ImportFrom)]
        assert len(statements) <= 4, f"{fn.name} does more than wiring ({len(statements)} statements)"
