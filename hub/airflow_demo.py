"""`hub airflow demo` (`make demo`): the whole job through Airflow on embedded defaults, then what it made.

A demo keyring, a synthetic population, the simulated department systems on 127.0.0.1, then every ingest
DAG, link_publish and privacy_audit, each with ``dag.test()`` on a SQLite metadata DB under
HUB_HOME/airflow. The summary reads what the runs left: the published database, the encrypted quarantine's
headers, the identity index against the synthetic truth, the privacy officer's report.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from hub.airflow_cli import RunOutcome, job_dag_ids, run_dags, ui_login, use_airflow
from hub.demo import print_checks
from hub.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa


def run_demo(residents: int, seed: int, since: float) -> None:
    """Run the demo and print its summary; exit 1 (after the summary) if a DAG run failed."""
    from hub.demo import prepare
    from simulators.http_server import start_servers

    console = Console(soft_wrap=True, width=max(Console().width, 150))
    settings = Settings.from_env()
    env = use_airflow(settings)
    prepare(settings, residents, seed, console)
    with start_servers(settings.sim_data) as servers:
        for system, url in servers.urls.items():
            console.print(f"simulated {system} system at {url}")
        console.print(f"\n[bold]Airflow[/] (dag.test on {env['AIRFLOW_HOME']}/airflow.db): every DAG of the job")
        started = time.perf_counter()
        outcomes = run_dags(job_dag_ids(), retries=0)  # the demo fails fast; a schedule retries with backoff
        airflow_seconds = time.perf_counter() - started
    print_summary(settings, console)
    user, password = ui_login(env)
    failed = [o for o in outcomes if not o.ok]
    console.print("\n[bold]Time[/]")
    console.print(f"  the job through Airflow      : {airflow_seconds:.0f} s ({len(outcomes)} DAG runs)")
    console.print(f"  make demo, install included  : {time.time() - since:.0f} s")
    console.print("\n[bold]Airflow UI[/] on the same metadata DB (runs, task logs, XCom, Assets):")
    console.print(f"  make airflow-ui   then open http://127.0.0.1:8080 and log in as {user} / {password}")
    console.print('  the `airflow` command on it: eval "$(hub airflow env)"; airflow dags list')
    if importlib.util.find_spec("service") is not None and (Path(__file__).parent / "service_cli.py").is_file():
        console.print(
            "  the clerk's page (front desk): hub serve, on the published database in PostgreSQL (hub serve --help)"
        )
    if failed:
        _print_failures(failed, console)
        sys.exit(1)


def _print_failures(failed: list[RunOutcome], console: Console) -> None:
    console.print(f"\n[red]{len(failed)} DAG run(s) failed[/]:")
    for outcome in failed:
        for task in outcome.failed_tasks():
            console.print(f"  {outcome.dag_id}.{task.task_id}: see {task.log_path or outcome.output}")


def print_summary(settings: Settings, console: Console) -> None:
    """Rows per published table, quarantine by reason, linkage quality, release k/l, checks, where things are."""
    from linkage.evaluate import evaluate
    from publish.catalogue import write_catalogue

    engine = settings.engine()
    try:
        console.print("\n[bold]The unified community database[/]")
        console.print(_published_rows(engine))
        console.print("\n[bold]Quarantined rows by reason[/] (encrypted; `hub quarantine list`)")
        console.print(_quarantine_reasons(settings))
        console.print("\n[bold]Identity resolution[/] against the synthetic truth")
        truth = settings.sim_data / "truth"
        for line in evaluate(engine, truth / "records.parquet", settings.load_keyring()).lines():
            console.print(f"  {line}")
        report = _newest_report(settings.home)
        console.print("\n[bold]Release tier[/]: the privacy report's k-anonymity and l-diversity figures")
        console.print(_release_figures(report) if report else "  no privacy report (privacy_audit did not run)")
        if report:
            console.print(_leak_scan(report))
        console.print("\n[bold]Cross-department checks[/] against the conflicts the simulators planted")
        print_checks(engine, truth / "conflicts.parquet", console)
    finally:
        engine.dispose()
    catalogue = write_catalogue(settings.home / "catalogue")
    home = settings.home
    console.print("\n[bold]Where to look[/]")
    console.print(f"  published database           : {settings.database_url}  (core, sensitive, release)")
    console.print("  change feed                  : change_log (seq > since), publish_batch")
    console.print(f"  data dictionary, catalogue   : {catalogue[0]}  and  {catalogue[1]}")
    if report:
        console.print(f"  privacy officer's report     : {report.with_suffix('.html')}")
    console.print(f"  staged pseudonymised batches : {home / 'staging'}")
    console.print(f"  encrypted quarantine         : {home / 'quarantine'}")
    console.print(f"  Airflow metadata DB, logs    : {home / 'airflow'}  (task logs in logs/dag_id=…)")


def _published_rows(engine: sa.Engine) -> Table:
    import sqlalchemy as sa

    from schemas.migrate import prepared
    from schemas.unified import published_tables

    table = Table(show_header=True)
    for name in ("tier", "table", "rows"):
        table.add_column(name, justify="right" if name == "rows" else "left")
    with engine.connect() as raw:
        conn = prepared(raw)
        for t in published_tables():
            rows = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            if rows:
                table.add_row(t.schema or "", t.name, f"{rows:,}")
    return table


def _quarantine_reasons(settings: Settings) -> Table:
    from privacy.reveal import quarantine_key
    from schemas.quarantine import QuarantineStore

    keyring = settings.load_keyring()
    version = keyring.active_version
    store = QuarantineStore(settings.home / "quarantine", quarantine_key(keyring, version), version)  # headers only
    reasons: Counter[str] = Counter()
    per_dataset: Counter[str] = Counter()
    for entry in store.entries():
        per_dataset[entry.dataset] += entry.rows
        reasons.update(dict(entry.reasons))
    table = Table(show_header=True)
    for name in ("reason", "rows"):
        table.add_column(name, justify="right" if name == "rows" else "left")
    for reason, rows in reasons.most_common(12):
        table.add_row(reason, f"{rows:,}")
    if len(reasons) > 12:
        rest = sum(reasons.values()) - sum(n for _, n in reasons.most_common(12))
        table.add_row(f"… {len(reasons) - 12} more reasons", f"{rest:,}")
    table.add_row("[bold]rows quarantined[/]", f"[bold]{sum(per_dataset.values()):,}[/]")
    return table


def _newest_report(home: Path) -> Path | None:
    reports = sorted((home / "reports" / "privacy").glob("*/report.json"))
    return reports[-1] if reports else None


def _release_figures(report_path: Path) -> Table:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    table = Table(show_header=True)
    for name in ("table", "quasi-identifiers | sensitive", "rows", "classes", "k min", "l min", "verdict"):
        table.add_column(name, justify="left" if name.startswith(("table", "quasi")) else "right")
    for t in report["reidentification"]["tables"]:
        if t.get("tier") != "release":
            continue
        qi = ", ".join(t["quasi_identifiers"]) + (f" | {', '.join(t['sensitive'])}" if t["sensitive"] else "")
        verdict = f"k≥{t['threshold_k']}" + (f", l≥{t['threshold_l']}" if t["sensitive"] else "")
        table.add_row(
            t["table"],
            qi,
            f"{t['rows']:,}",
            f"{t['classes']:,}",
            str(t["k_min"]),
            str(t["l_min"] if t["sensitive"] else "-"),
            verdict + (" ok" if t["passes"] else " FAILS"),
        )
    return table


def _leak_scan(report_path: Path) -> str:
    scan = json.loads(report_path.read_text(encoding="utf-8"))["leak_scan"]
    if not scan:
        return "  leak scan: not run"
    kinds = Counter(f["kind"] for f in scan["findings"])
    names = ", ".join(sorted({f"{f['table']}.{f['column']}" for f in scan["findings"] if f["kind"] == "name"}))
    line = (
        f"  leak scan of the published database: {scan['text_columns']} text columns of {scan['tables']} tables, "
        f"{scan['names_checked']:,} synthetic names; ID numbers {kinds['id_number']}, phones {kinds['phone']}"
    )
    return line + (f"; values equal to a short name (ordinary words) in {names}" if names else "; names 0")
