"""What each task of the Airflow DAGs in ``dags/`` runs: the hub's stage functions, fed Airflow's secrets.

The DAG files are thin wiring (DESIGN: "dags/ is thin wiring"); every task calls one function here, and
these call the same hub functions as the CLI (``ingest_dataset``, ``run_link``, ``run_publish``, the
privacy report). What a function returns goes to XCom, so it returns batch ids and counts only: never a
value, a token, a path with a value in it, or a key.

Airflow lends the hub its credentials:
- a source system's credential is the Airflow Connection ``hub_<system>`` (metadata DB, secrets backend or
  ``AIRFLOW_CONN_HUB_<SYSTEM>``), handed to ``hub.settings`` as an ``AIRFLOW_CONN_HUB_<SYSTEM>`` value;
- the keyring is ``HUB_KEYRING_JSON`` or, when that is unset, the Airflow Variable ``hub_keyring_json`` (a
  secrets backend such as Vault serves it), else the demo keyfile;
- every key, the keyring JSON and every source token are masked with ``mask_secret`` before any work, so
  a log line that quoted one would show ``***``.

Airflow and the stage packages are imported inside the functions: the deadline callback lives here and the
DAG files name it, so importing this module at parse time must cost nothing.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from schemas.base import HubError

if TYPE_CHECKING:
    from hub.settings import Settings

log = logging.getLogger(__name__)

#: the partition that reads a whole dataset; a source that can filter by county lists county codes instead
ALL = "all"
#: Airflow Variable holding the keyring JSON when HUB_KEYRING_JSON is unset (served by a secrets backend)
KEYRING_VARIABLE = "hub_keyring_json"
#: minutes after a link_publish run is queued by which it should have finished (the deadline alert)
LINK_PUBLISH_DEADLINE_MINUTES = 45

T = TypeVar("T")


class TaskFailed(HubError):
    """A task's stage reported a failure; the message names the dataset or step and why, never a value."""


def connection_id(system: str) -> str:
    """The Airflow Connection id of a department system (one credential per system)."""
    return f"hub_{system}"


# -- settings from Airflow's secrets --------------------------------------------------------------------------


def _connection(conn_id: str) -> str | None:
    """The connection as Airflow's JSON form, or None when Airflow knows no such connection."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    return str(conn.as_json())


def _keyring_variable() -> str | None:
    """The keyring JSON from the Airflow Variable (a secrets backend), or None."""
    from airflow.sdk import Variable

    value = Variable.get(KEYRING_VARIABLE, default=None)
    return str(value) if value else None


def _mask(secrets: Iterable[str | None]) -> None:
    """Tell Airflow's secrets masker (task and supervisor) to print ``***`` for each of ``secrets``."""
    from airflow.sdk.log import mask_secret

    for secret in secrets:
        if secret:
            mask_secret(secret)


def task_settings(systems: Iterable[str] = ()) -> Settings:
    """Settings for one task: the environment, plus Airflow's connections for ``systems`` and its keyring.

    Every secret the task may hold is masked before it is returned.
    """
    from connectors.registry import locate
    from hub.settings import Settings

    env = dict(os.environ)
    for system in systems:
        value = _connection(connection_id(system))
        if value is not None:
            env[f"AIRFLOW_CONN_HUB_{system.upper()}"] = value
    if not env.get("HUB_KEYRING_JSON"):
        from_backend = _keyring_variable()
        if from_backend:
            env["HUB_KEYRING_JSON"] = from_backend
    settings = Settings.from_env(env)
    keyring_json = settings.keyring_json.get_secret_value() if settings.keyring_json else None
    secrets: list[str | None] = [keyring_json]
    if keyring_json or settings.keyring.exists():
        versions = json.loads(settings.load_keyring().to_json())["versions"]
        secrets += [v["key"] for v in versions.values()]
    secrets += [src.token for src in settings.sources.values()]
    secrets += list(locate(settings.sim_data, settings.sources).tokens.values())
    _mask(secrets)
    return settings


def _guarded(step: str, run: Callable[[], T]) -> T:
    """Run a stage; an unexpected error is re-raised by type and stack only (its message may quote a value)."""
    try:
        return run()
    except HubError:
        raise
    except Exception as exc:
        stack = "".join(traceback.format_tb(exc.__traceback__))
        log.error("%s: unexpected %s at\n%s", step, type(exc).__name__, stack)
        raise TaskFailed(f"{step}: unexpected {type(exc).__name__}; see the stack above") from None


# -- ingest ---------------------------------------------------------------------------------------------------


def ingest_partition(dataset: str, partition: str = ALL) -> dict[str, Any]:
    """Ingest one partition of a source dataset; raise TaskFailed naming the dataset if the stage failed.

    Returns the batch ids staged and the counts (XCom). ``partition`` is ``all`` for every registered
    source today: none of the department interfaces filters by county, so a county partition would read
    the whole dataset several times and race its watermark. A county list in the registry is refused here.
    """
    from connectors.registry import get_source
    from hub.ingest import ingest_dataset
    from hub.ingest_cli import build_context

    decl = get_source(dataset)
    if partition != ALL:
        raise TaskFailed(
            f"{dataset}: partition '{partition}': the {decl.kind} interface of {decl.system} cannot filter by "
            "county, so the registry must declare partitions: [all]"
        )
    settings = task_settings([decl.system])
    ctx = build_context(settings)
    try:
        result = _guarded(f"ingest {dataset}", lambda: ingest_dataset(decl, ctx))
    finally:
        ctx.state.engine.dispose()
    summary = {
        "dataset": dataset,
        "partition": partition,
        "batches": list(result.batches),
        "rows_read": result.rows_read,
        "staged": result.staged,
        "unkeyed": result.unkeyed,
        "quarantined": result.quarantined,
        "duplicates_skipped": result.duplicates_skipped,
        "files_set_aside": len(result.rejected_files),
    }
    log.info("%s: %s", dataset, {k: v for k, v in summary.items() if k != "batches"})
    for reason, count in sorted(result.quarantine_reasons.items()):
        log.info("%s: quarantined %d row(s) for %s", dataset, count, reason)
    if result.error:
        raise TaskFailed(f"{dataset} (source system {decl.system}): {result.error}")
    return summary


# -- link and publish -----------------------------------------------------------------------------------------


def link_step() -> dict[str, Any]:
    """Link the batches staged since the last run (``hub link``); the run's counts."""
    from hub.link_cli import run_link

    settings = task_settings()
    result = _guarded("link", lambda: run_link(settings))
    summary = {"run_id": result.run_id, **{k: v for k, v in result.summary().items() if k != "seconds"}}
    log.info("link: %s", summary)
    return summary


def publish_step() -> dict[str, Any]:
    """Publish core and sensitive (``hub publish --no-release``): one transaction, only what changed."""
    from hub.publish_cli import run_publish

    settings = task_settings()
    result, _ = _guarded("publish", lambda: run_publish(settings, release=False))
    tables = {t.table: {"rows": t.rows, "inserted": t.inserted, "updated": t.updated, "deleted": t.deleted}
              for t in result.tables}  # fmt: skip
    summary = {
        "publish_id": result.publish_id,
        "changes": result.changes,
        "records_read": result.records_read,
        "not_linked_yet": dict(result.unlinked),
        "tables": tables,
    }
    log.info("publish %s: %d change-log row(s), %d record(s) read", result.publish_id, result.changes,
             result.records_read)  # fmt: skip
    return summary


def release_step() -> dict[str, Any]:
    """Publish the release tier behind its k-anonymity / l-diversity gate; a refused release fails the task."""
    from datetime import UTC, datetime

    from hub.link_cli import one_link_at_a_time
    from hub.publish_cli import migrated_engine, state_folder
    from privacy.policy import load_policy
    from publish.consumers import load_consumers
    from publish.release import publish_release

    settings = task_settings()

    def release() -> tuple[int | None, Any, Any]:
        engine = migrated_engine(settings)
        try:
            with one_link_at_a_time(settings.home / "runs" / "link"):
                return publish_release(
                    engine,
                    load_consumers(settings.consumers),
                    settings.load_keyring(),
                    load_policy(),
                    datetime.now(UTC).year,
                    state=state_folder(settings),
                )
        finally:
            engine.dispose()

    publish_id, changes, figures = _guarded("release", release)
    gate = {
        f.table: {"persons": f.persons, "suppressed": f.suppressed, "groups": f.groups, "k_min": f.k_min,
                  "l_min": f.l_min, "threshold_k": f.threshold_k, "threshold_l": f.threshold_l, "passes": f.passes}
        for f in figures
    }  # fmt: skip
    for name, figure in gate.items():
        log.info("release gate %s: %s", name, figure)
    return {"publish_id": publish_id, "changes": sum(t.changes for t in changes), "gate": gate}


# -- the privacy officer's daily audit ------------------------------------------------------------------------


def coverage_step() -> dict[str, Any]:
    """Policy coverage of every contract field (``hub privacy check``); uncovered fields fail the task."""
    from privacy.coverage import check_coverage
    from privacy.policy import load_policy
    from schemas.contract import packaged_contracts

    result = check_coverage(packaged_contracts(), load_policy())
    summary = {"fields": len(result.fields), "uncovered": len(result.uncovered), "invalid": len(result.invalid)}
    if not result.ok:
        names = ", ".join(f.qualified for f in (*result.uncovered, *result.invalid))
        raise TaskFailed(f"privacy policy does not cover {summary['uncovered'] + summary['invalid']} field(s): {names}")
    return summary


def verify_log_step() -> dict[str, Any]:
    """The reveal log's HMAC chain and both heads (``hub privacy verify-log``); a broken chain fails the task."""
    from privacy.audit_log import verify_log

    settings = task_settings()
    engine = settings.engine()
    try:
        result = verify_log(settings.audit_log, engine, settings.load_keyring())
    finally:
        engine.dispose()
    if not result.ok:
        raise TaskFailed(f"{settings.audit_log.name}: entry {result.first_broken} is broken: {result.reason}")
    return {"entries": result.entries}


def report_step(day: str) -> dict[str, Any]:
    """The privacy officer's report for ``day`` under HUB_HOME/reports/privacy/<day>/ (``hub privacy report``).

    An ID number or phone in plaintext in the published database, or a release table below k or l, fails the
    task: publishing should have made both impossible. Values that merely contain a resident's name are
    logged for the officer to judge (short names are also ordinary words), and operational tables below k
    are expected (row-level security guards them): both are reported, not failed.
    """
    from privacy.policy import load_policy
    from privacy.report import build_report, load_keyring_for_report, write_report
    from schemas.contract import packaged_contracts

    settings = task_settings()
    keyring_json = settings.keyring_json.get_secret_value() if settings.keyring_json else None
    keyring, keyring_error = load_keyring_for_report(keyring_json, settings.keyring)
    truth = settings.sim_data / "truth"
    engine = settings.engine()
    try:
        report = _guarded(
            "privacy report",
            lambda: build_report(
                load_policy(),
                packaged_contracts(),
                settings.audit_log,
                keyring,
                keyring_error,
                settings.database_url,
                truth if (truth / "persons.parquet").is_file() else None,
                audit_engine=engine,
            ),
        )
    finally:
        engine.dispose()
    json_path, _ = write_report(report, report_folder(settings.home, day))
    tables = report["reidentification"]["tables"]
    release = {t["table"]: {"k_min": t["k_min"], "l_min": t["l_min"], "passes": t["passes"]}
               for t in tables if t.get("tier") == "release"}  # fmt: skip
    leak = report["leak_scan"]
    findings = leak["findings"] if leak else []
    # an ID number or phone with a valid shape is plaintext for certain; a "name" is any run of Han characters
    # equal to a synthetic resident's name of 2+ characters, which ordinary words also are (户主, 孙子)
    certain = [f for f in findings if f["kind"] != "name"]
    summary = {
        "coverage_ok": bool(report["coverage"]["ok"]),
        "reveal_log_ok": bool(report["reveal_log"]["chain_ok"]),
        "leak_scan_clean": bool(leak and leak["clean"]),
        "plaintext_findings": len(certain),
        "name_like_findings": len(findings) - len(certain),
        "release": release,
        "operational_sets_below_k": sum(1 for t in tables if t.get("tier") != "release" and not t["passes"]),
    }
    log.info("privacy report %s: %s", json_path.name, summary)
    for f in findings:
        log.warning("leak scan: %s.%s has %d value(s) like a %s (%d rows); see the report", f["table"], f["column"],
                    f["values"], f["kind"], f["rows"])  # fmt: skip
    problems = []
    if certain:
        problems.append(f"{len(certain)} plaintext finding(s) in the published database")
    if any(not r["passes"] for r in release.values()):
        problems.append("a release-tier table is below k or l")
    if problems:
        raise TaskFailed(f"privacy report {json_path}: " + "; ".join(problems))
    return summary


def report_folder(home: Path, day: str) -> Path:
    """Where the privacy audit of ``day`` (YYYY-MM-DD) writes report.json and report.html."""
    return home / "reports" / "privacy" / day


# -- the deadline alert ---------------------------------------------------------------------------------------


async def link_publish_late(context: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
    """Deadline alert of link_publish (runs in the triggerer): the run is not done in time; say which one.

    The log line is what an operator's alerting (log-based, or a notifier added here) picks up.
    """
    run = (context or {}).get("dag_run")
    run_id = getattr(run, "run_id", None) or (context or {}).get("run_id", "?")
    minutes = kwargs.get("minutes", LINK_PUBLISH_DEADLINE_MINUTES)
    log.error(
        "link_publish run %s has not finished %s minutes after it was queued: linkage or publish is stuck or "
        "slow; see its task logs (the published database still holds the previous publish)",
        run_id,
        minutes,
    )
