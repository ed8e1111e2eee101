"""Every DAG run through real Airflow 3.3 (``dag.test()`` via ``hub airflow run``) on a SQLite metadata DB,
against the simulated department systems on loopback.

- the first pass publishes every linked record, with 'load' rows in the change log, and passes the release gate;
- XCom holds batch ids and counts only, and no personal value or key is in the task logs, the XCom table,
  the metadata DB or anything else the hub and Airflow wrote;
- stopping the simulators in the middle of an ingest run fails the task with an error naming the source;
  after they come back, re-running it completes and stages what a clean run staged, each record once;
- after ``hub simulate advance --changed 0.01`` a second pass publishes only those changes (the change log
  shows them) and keeps every person_key.

The module runs the job in a child process (Airflow configures logging for its whole process); the tests
share one generated population and one first pass, and run in file order (the last one advances the sources).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from connectors.registry import registry
from hub.staging import batch_dir, staged_batches
from privacy.keyring import Keyring, init_keyfile
from publish.build import SENSITIVE_DATASETS
from schemas.migrate import prepared
from schemas.unified import published_tables, table
from simulators.advance import advance
from simulators.generate import generate
from simulators.http_server import start_servers
from tests.integration.test_publish import RECORD_TABLES
from tests.leakscan import find_value, leaks, personal_values

RESIDENTS = 3000
HUB = Path(sys.executable).with_name("hub")
INGEST = ["ingest_" + d.replace(".", "_") for d in registry()]
BATCH_ID = re.compile(r"^[0-9a-f]{20}$")
NAME = re.compile(r"^[a-z][a-z0-9_.]*$")  # field, dataset and table names


@dataclass
class Hub:
    """One hub home with its own Airflow metadata DB, and the output of every `hub airflow run` on it."""

    home: Path
    sim: Path
    outputs: list[str]

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HUB_"))}
        return base | {"HUB_HOME": str(self.home), "HUB_SIM_DATA": str(self.sim), "GX_ANALYTICS_ENABLED": "false"}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`hub airflow run ARGS` in a child process; its output is kept for the leak scan."""
        done = subprocess.run([str(HUB), "airflow", "run", *args], env=self.env(), capture_output=True, text=True)
        self.outputs += [done.stdout, done.stderr]
        if check:
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    def engine(self) -> sa.Engine:
        return sa.create_engine(f"sqlite:///{self.home / 'hub.db'}")

    def metadata(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows from the Airflow metadata DB."""
        with closing(sqlite3.connect(self.airflow_home / "airflow.db")) as conn:
            return conn.execute(query, params).fetchall()


def _new_hub(base: Path, name: str, sim: Path) -> Hub:
    home = base / name
    init_keyfile(home / "keys" / "demo-keyring.json")
    return Hub(home, sim, [])


def _frame(engine: sa.Engine, name: str, *columns: str) -> pd.DataFrame:
    t = table(name)
    with engine.connect() as raw:
        result = prepared(raw).execute(sa.select(*(t.c[c] for c in columns) or (t,)))
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as raw:
        conn = prepared(raw)
        return {
            t.fullname: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in published_tables()
        }


def _staged_records(home: Path) -> Counter[tuple[str, str]]:
    """How often each (dataset, record id) was staged."""
    seen: Counter[tuple[str, str]] = Counter()
    root = home / "staging"
    for m in staged_batches(root):
        frame = pd.read_parquet(batch_dir(root, m.dataset, m.batch_id) / "data.parquet", columns=["record_id"])
        seen.update((m.dataset, str(r)) for r in frame["record_id"])
    return seen


@dataclass
class FirstPass:
    hub: Hub
    base: Path
    counts: dict[str, int]
    staged: Counter[tuple[str, str]]


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstPass]:
    """A generated population and one pass of every DAG through Airflow."""
    base = tmp_path_factory.mktemp("dags-e2e")
    sim = base / "sim"
    generate(sim, residents=RESIDENTS, seed=11)
    hub = _new_hub(base, "a", sim)
    with start_servers(sim):
        hub.run("--all")
    engine = hub.engine()
    counts = _counts(engine)
    engine.dispose()
    yield FirstPass(hub, base, counts, _staged_records(hub.home))


def test_every_dag_ran_through_airflow(first: FirstPass) -> None:
    runs = dict(first.hub.metadata("SELECT dag_id, state FROM dag_run"))
    assert runs == {dag_id: "success" for dag_id in [*INGEST, "link_publish", "privacy_audit"]}
    states = first.hub.metadata("SELECT dag_id, task_id, map_index, state FROM task_instance")
    assert {s for *_, s in states} == {"success"}
    assert {(d, t, m) for d, t, m, _ in states if d.startswith("ingest_")} == {
        (d, "ingest_partition", 0) for d in INGEST
    }
    # every ingest staged something, so each updated its Asset
    events = {uri for (uri,) in first.hub.metadata(
        "SELECT a.uri FROM asset_event e JOIN asset a ON a.id = e.asset_id")}  # fmt: skip
    assert {f"hub://staged/{d}" for d in registry()} | {"hub://published/core", "hub://published/release"} <= events
    # the DAG's deadline alert is in the metadata DB as Airflow parsed it
    assert first.hub.metadata("SELECT count(*) FROM deadline_alert")[0][0] >= 1
    logs = list((first.hub.airflow_home / "logs").glob("dag_id=*/run_id=*/task_id=*/**/attempt=*.log"))
    assert len(logs) == len(states), "a task log per task instance, where the Airflow UI reads it"


def test_the_published_tables_and_change_log(first: FirstPass) -> None:
    engine = first.hub.engine()
    try:
        lineage = _frame(engine, "core.record_lineage", "dataset", "record_key", "person_key")
        rows = first.counts
        assert rows["core.person"] > RESIDENTS * 0.9
        for dataset, name in RECORD_TABLES.items():
            assert rows[name] > 0, name
            if dataset not in SENSITIVE_DATASETS:  # core's lineage leaves out who has a sensitive record
                assert rows[name] == int(lineage["dataset"].eq(dataset).sum()), name
        assert not lineage["dataset"].isin(SENSITIVE_DATASETS).any()
        log = _frame(engine, "core.change_log", "publish_id", "table_name", "row_key", "operation")
        loaded = set(log.loc[log["operation"].eq("load"), "table_name"])
        assert {n for n, c in rows.items() if c and not n.startswith("release.")} - loaded <= {
            "core.change_log", "core.publish_batch", "core.consumer_scope"}  # fmt: skip
        assert all(rows[f"release.{t}"] > 0 for t in ("resident", "disability", "social_assistance"))
    finally:
        engine.dispose()
    report = next((first.hub.home / "reports" / "privacy").glob("*/report.json"))
    figures = json.loads(report.read_text())["reidentification"]["tables"]
    release = [f for f in figures if f["tier"] == "release"]
    assert release and all(f["k_min"] >= 5 and f["passes"] for f in release)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def test_xcom_carries_batch_ids_and_counts_only(first: FirstPass) -> None:
    rows = first.hub.metadata("SELECT dag_id, task_id, key, value FROM xcom")
    assert {k for _, _, k, _ in rows} == {"return_value"}
    staged_ids = {m.batch_id for m in staged_batches(first.hub.home / "staging")}
    for dag_id, task_id, _, value in rows:
        for leaf in _leaves(json.loads(value)):
            if isinstance(leaf, str):
                assert NAME.match(leaf) or (BATCH_ID.match(leaf) and leaf in staged_ids), (dag_id, task_id, leaf)
            else:
                assert leaf is None or isinstance(leaf, int | float | bool), (dag_id, task_id, type(leaf))
    ingests = [json.loads(v) for d, _, _, v in rows if d.startswith("ingest_")]
    assert {b for x in ingests for b in x["batches"]} == staged_ids


def test_no_personal_value_or_key_in_task_logs_xcom_or_metadata(first: FirstPass) -> None:
    values = personal_values(first.hub.sim / "truth")
    xcom = [str(v) for (v,) in first.hub.metadata("SELECT value FROM xcom")]
    # every file under the hub's home (task logs, airflow.db with its XCom table, reports, staging), the output
    assert leaks(first.hub.home, values, first.hub.outputs + xcom) == {}
    keyring = Keyring.from_file(first.hub.home / "keys" / "demo-keyring.json")
    keys = [v["key"] for v in json.loads(keyring.to_json())["versions"].values()]
    for path in first.hub.airflow_home.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            assert not any(k.encode() in raw for k in keys), f"key material in {path}"
    assert not any(k in text for k in keys for text in first.hub.outputs)
    assert find_value("".join(first.hub.outputs), values) is None


def test_a_source_stopped_mid_run_fails_the_task_and_a_rerun_loses_and_doubles_nothing(first: FirstPass) -> None:
    hub = _new_hub(first.base, "b", first.hub.sim)
    in_flight, released = threading.Event(), threading.Event()

    def hold(_seconds: float) -> None:  # the "slow" fault's wait: tell the test, then die with the server
        in_flight.set()
        released.wait(timeout=120)
        raise ConnectionAbortedError("the source system went down")

    when = "2026-11-01T00:00:00"
    servers = start_servers(hub.sim)
    try:
        servers.set_faults("gongan", {"script": ["slow"]})
        servers.server("gongan").sleep = hold
        child = subprocess.Popen(
            [str(HUB), "airflow", "run", "ingest_gongan_hukou", "--retries", "0", "--logical-date", when],
            env=hub.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert in_flight.wait(timeout=180), "the ingest never asked the source for a page"
    finally:
        servers.stop()  # mid-request: the listener closes, then the request in flight dies
        released.set()
    out, err = child.communicate(timeout=300)
    hub.outputs += [out, err]
    assert child.returncode == 1
    assert "ingest_gongan_hukou" in out and "failed" in out
    assert "gongan.hukou" in out and "connection error" in out, out[-2000:]
    [(state,)] = hub.metadata("SELECT state FROM task_instance WHERE dag_id = 'ingest_gongan_hukou'")
    assert state == "failed"
    assert not any(m.dataset == "gongan.hukou" for m in staged_batches(hub.home / "staging"))

    with start_servers(hub.sim):  # the sources are back (on new ports: the hub reads serve.json again)
        hub.run("ingest_gongan_hukou", "--logical-date", when)  # the same run, cleared and run again
        [(state,)] = hub.metadata("SELECT state FROM task_instance WHERE dag_id = 'ingest_gongan_hukou'")
        assert state == "success"
    # nothing lost, nothing doubled: the re-run staged every record of the clean run, each once
    hukou = Counter({k: n for k, n in _staged_records(hub.home).items() if k[0] == "gongan.hukou"})
    assert hukou == Counter({k: n for k, n in first.staged.items() if k[0] == "gongan.hukou"})
    assert set(hukou.values()) == {1}
    assert leaks(hub.airflow_home, personal_values(hub.sim / "truth"), hub.outputs) == {}


def test_after_one_percent_changed_a_second_pass_publishes_only_the_changes_and_keeps_every_person_key(
    first: FirstPass,
) -> None:
    hub = first.hub
    engine = hub.engine()
    before = _frame(engine, "core.record_lineage", "dataset", "record_key", "person_key")
    persons_before = set(_frame(engine, "core.person", "person_key")["person_key"])
    seq_before = int(_frame(engine, "core.change_log", "seq")["seq"].max())
    summary = advance(hub.sim, changed=0.01, late=0.0, seed=5)  # what `hub simulate advance --changed 0.01` does
    changed = pd.read_parquet(summary.changes_path)
    assert len(changed) > 20
    staged_before = set(_staged_records(hub.home))
    with start_servers(hub.sim):
        hub.run("--all")
    try:
        after = _frame(engine, "core.record_lineage", "dataset", "record_key", "person_key")
        log = _frame(engine, "core.change_log", "seq", "publish_id", "table_name", "row_key", "operation")
        persons_after = set(_frame(engine, "core.person", "person_key")["person_key"])
    finally:
        engine.dispose()
    # every person_key is kept: each record sits with the person it sat with, and every person is still there
    kept = before.merge(after, on=["dataset", "record_key"], suffixes=("_before", "_after"))
    assert len(kept) == len(before)
    assert (kept["person_key_before"] == kept["person_key_after"]).all()
    assert persons_before <= persons_after
    # the change log shows exactly the changes
    new = log[log["seq"] > seq_before]
    assert len(new) > 0 and not new["operation"].eq("load").any()
    staged_now = set(_staged_records(hub.home)) - staged_before
    touched = set(after.merge(changed.rename(columns={"record_id": "record_key"}), on=["dataset", "record_key"])[
        "person_key"])  # fmt: skip
    for dataset, name in RECORD_TABLES.items():
        truth = set(changed.loc[changed["dataset"].eq(dataset), "record_id"])
        if name == "core.insurance_participation":  # its community is its person's: a move changes the row
            truth |= set(after.loc[after["dataset"].eq(dataset) & after["person_key"].isin(touched), "record_key"])
        logged = set(new.loc[new["table_name"].eq(name), "row_key"])
        assert logged <= truth, f"{name}: {len(logged - truth)} unchanged records in the change log"
        staged = {rid for d, rid in staged_now if d == dataset}
        if dataset != "jisheng.births":  # a births drop restates unchanged rows as well as new ones
            assert truth & staged <= logged, f"{name}: {len((truth & staged) - logged)} changes not logged"
    assert set(new.loc[new["table_name"].eq("core.person"), "row_key"]) <= touched
    # datasets the advance did not touch staged nothing, so their runs were skipped and updated no Asset
    skipped = {d for (d,) in hub.metadata(
        "SELECT dag_id FROM task_instance WHERE task_id = 'ingest_partition' AND state = 'skipped'")}  # fmt: skip
    untouched = {"ingest_" + d.replace(".", "_") for d in registry()} - {
        "ingest_" + d.replace(".", "_") for d in changed["dataset"].unique()}  # fmt: skip
    assert untouched <= skipped
    assert leaks(hub.airflow_home, personal_values(hub.sim / "truth"), hub.outputs) == {}
