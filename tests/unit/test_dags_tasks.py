"""The hub's side of the DAGs without Airflow running: what a task refuses, how an unexpected error is
reported, how a dag.test() run's output becomes per-task logs, and the Airflow environment of the demo."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hub.airflow_cli import _task_sections, airflow_environment, dags_folder, job_dag_ids, ui_login
from hub.airflow_tasks import TaskFailed, _guarded, ingest_partition
from hub.settings import Settings


def test_a_county_partition_is_refused_before_anything_is_read() -> None:
    with pytest.raises(TaskFailed, match=r"gongan\.hukou: partition '150702'.*cannot filter by county"):
        ingest_partition("gongan.hukou", "150702")


def test_an_unexpected_error_is_reported_by_type_and_stack_not_by_its_message(caplog: pytest.LogCaptureFixture) -> None:
    value = "110105" + "19491231002X"  # a library's message may quote the cell; its source line does not

    def fails() -> None:
        raise ValueError(f"could not convert {value!r} to int")

    with pytest.raises(TaskFailed) as caught:
        _guarded("ingest gongan.hukou", fails)
    assert str(caught.value) == "ingest gongan.hukou: unexpected ValueError; see the stack above"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "11010519491231002X" not in caplog.text and "fails" in caplog.text


def test_a_run_output_splits_into_one_log_per_task_try() -> None:
    text = (
        "run starts\n"
        "[DAG TEST] starting task_id=link map_index=-1\nlinking\n"
        "[DAG TEST] starting task_id=ingest_partition map_index=0\ntry 1 fails\n"
        "[DAG TEST] starting task_id=ingest_partition map_index=0\ntry 2 works\n"
    )
    sections = _task_sections(text)
    assert sections[("link", -1)] == ["[DAG TEST] starting task_id=link map_index=-1\nlinking\n"]
    assert [s.splitlines()[1] for s in sections[("ingest_partition", 0)]] == ["try 1 fails", "try 2 works"]


def test_the_airflow_environment_points_at_the_hub_and_keeps_what_is_set(tmp_path: Path) -> None:
    settings = Settings.from_env({"HUB_HOME": str(tmp_path / "hub")})
    env = airflow_environment(settings, {})
    assert env["AIRFLOW_HOME"] == str(tmp_path / "hub" / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(dags_folder()) and (dags_folder() / "hub_ingest.py").is_file()
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False" and env["HUB_HOME"] == str(tmp_path / "hub")
    mine = airflow_environment(settings, {"AIRFLOW_HOME": str(tmp_path / "elsewhere")})
    assert mine["AIRFLOW_HOME"] == str(tmp_path / "elsewhere")
    assert job_dag_ids()[-2:] == ["link_publish", "privacy_audit"] and len(job_dag_ids()) == 11


def test_the_ui_login_is_made_once_and_kept_private(tmp_path: Path) -> None:
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "airflow" / "ui-passwords.json")}
    user, password = ui_login(env)
    assert (user, password) == ui_login(env) and len(password) >= 16
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
