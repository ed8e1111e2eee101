"""Benchmark publishing: N residents' staged and linked records into the unified model on PostgreSQL; seconds
and rows/s per table and per step, peak memory, and the load's ratio to a raw COPY of the same rows measured
in the same run; then the idempotent re-publish (nothing changed).

Usage: python -m bench.publish [--residents 1000000] [--workdir DIR] [--keep-db]. Generation, ingest and
linkage run first in child processes (not counted; an existing DIR is reused), into a PostgreSQL database the
bench creates (hub_bench_<random> on 127.0.0.1:5432, user postgres; its name is kept in DIR for reuse). Before
timing, the published model is dropped and re-created (``hub db downgrade 0001`` + upgrade: the identity index
stays), so the timed run is a full first publish. The peak memory printed is the publish's own.
Target (issue 9): the whole publish at 1,000,000 residents in <= 60 s and <= 4 GiB, its load (COPY into the
logged tables, their keys and indexes built, the change log) within 3x of a raw COPY of every row it wrote into
UNLOGGED tables without indexes. Making the rows (each table's DuckDB query, the diff, sealing) is timed apart.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.link import _prepare
from bench.measure import BenchReport, StageTiming, peak_rss_mib

if TYPE_CHECKING:
    import psycopg

TARGET_SECONDS = 60
TARGET_MIB = 4 * 1024
TARGET_RATIO = 3.0
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
DB_FILE = "bench-publish-database"  # in the workdir: the database the workdir's identity index lives in
FLOOR_SCHEMA = "bench_floor"


def _database(work: Path) -> tuple[str, bool]:
    """The bench database's name (the workdir's, else a new one) and whether it was created now."""
    import sqlalchemy as sa

    recorded = work / DB_FILE
    name = recorded.read_text().strip() if recorded.is_file() else f"hub_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    work.mkdir(parents=True, exist_ok=True)
    recorded.write_text(name + "\n")
    return name, not exists


def _drop_database(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def _linked(url: str) -> bool:
    """Whether the database's identity index holds a link run."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("link_run"):
                return False
            return conn.exec_driver_sql("SELECT max(run_id) FROM link_run").scalar() is not None
    finally:
        engine.dispose()


def _copy_out(conn: psycopg.Connection, name: str) -> tuple[bytes, int]:
    """A table's rows as PostgreSQL CSV, and how many."""
    buffer = io.BytesIO()
    with conn.cursor().copy(f"COPY (SELECT * FROM {name}) TO STDOUT WITH (FORMAT csv)") as copy:
        for block in copy:
            buffer.write(block)
    row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
    return buffer.getvalue(), int(row[0]) if row else 0


def _floor(dbname: str, names: list[str]) -> dict[str, tuple[int, float]]:
    """Raw COPY of each table's current rows into an UNLOGGED copy without indexes: name -> (rows, seconds).

    Reading the rows back is not timed; each table's COPY in is, in one transaction as the publish is.
    """
    out: dict[str, tuple[int, float]] = {}
    import psycopg

    with psycopg.connect(f"{SERVER.replace('+psycopg', '')}/{dbname}") as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {FLOOR_SCHEMA}")
        conn.commit()
        try:
            for name in names:
                data, rows = _copy_out(conn, name)
                target = f"{FLOOR_SCHEMA}.{name.replace('.', '__')}"
                conn.execute(f"CREATE UNLOGGED TABLE {target} (LIKE {name})")  # columns and NOT NULL, no index
                conn.commit()
                start = time.perf_counter()
                with conn.cursor().copy(f"COPY {target} FROM STDIN WITH (FORMAT csv)") as copy:
                    copy.write(data)
                conn.commit()
                out[name] = (rows, time.perf_counter() - start)
                del data
        finally:
            conn.rollback()
            conn.execute(f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE")
            conn.commit()
    return out


def main() -> int:
    """Prepare, publish (timed), re-publish, measure the floor, print the report; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--keep-db", action="store_true", help="keep the bench database (always kept when --workdir is given)"
    )
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hub-bench-publish-"))
    dbname, created = _database(work)
    url = f"{SERVER}/{dbname}"
    env = {**os.environ, "HUB_HOME": str(work / "hub"), "HUB_SIM_DATA": str(work / "sim"), "HUB_DATABASE_URL": url}
    env["GX_ANALYTICS_ENABLED"] = "false"
    print(f"hub database: {dbname} ({'created' if created else 'reused'})", flush=True)
    try:
        _prepare(work, args.residents, env)
        if not _linked(url):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "from hub.cli import main; main()", "link"], env=env, check=True)
            print(f"link (not counted): {time.perf_counter() - t0:.1f}s", flush=True)
        return _bench(args.residents, env)
    finally:
        if args.workdir is None and not args.keep_db:
            _drop_database(dbname)


def _bench(residents: int, env: dict[str, str]) -> int:
    from hub.publish_cli import staged_for_publish
    from hub.settings import Settings
    from privacy.policy import load_policy
    from publish.publisher import publish
    from schemas.base import private_dir
    from schemas.contract import packaged_contracts
    from schemas.migrate import downgrade, upgrade

    settings = Settings.from_env(env)
    engine = settings.engine()
    keyring, policy, contracts = settings.load_keyring(), load_policy(), packaged_contracts()
    t0 = time.perf_counter()
    upgrade(engine)  # adopts the tables ingest and linkage made, then
    downgrade(engine, "0001")  # empties the published model (the identity index is revision 0001's)
    upgrade(engine)
    print(f"published model dropped and re-created (not counted): {time.perf_counter() - t0:.1f}s", flush=True)

    report = BenchReport(f"publish {residents:,} residents' staged and linked records into PostgreSQL")
    start = time.perf_counter()
    batches = staged_for_publish(settings)
    spill = private_dir(settings.home / "runs" / "publish" / "spill")  # where `hub publish` spills
    result = publish(engine, batches, keyring, policy, contracts, spill=spill)
    total = time.perf_counter() - start
    peak = peak_rss_mib()
    written = sum(t.inserted + t.updated for t in result.tables)
    # the publisher's laps: read, build (DuckDB plan), merge; within the merge, per table, the rows are made
    # (the table's DuckDB query, the diff, sealing) and then loaded (COPY, keys and indexes): the load is what
    # a raw COPY is the floor of
    merge_seconds = result.timings.get("merge", 0.0)
    table_seconds = sum(t.seconds for t in result.tables)
    load_tables = sum(t.load_seconds for t in result.tables)
    make_seconds = table_seconds - load_tables
    log_seconds = max(merge_seconds - table_seconds, 0.0)  # change log, publish batch row, commit
    load_seconds = load_tables + log_seconds
    report.stages["step: read"] = StageTiming("step: read", result.records_read, result.timings.get("read", 0.0))
    report.stages["step: build"] = StageTiming("step: build", result.records_read, result.timings.get("build", 0.0))
    report.stages["step: make rows (query, diff, seal)"] = StageTiming(
        "step: make rows (query, diff, seal)", written, make_seconds
    )
    report.stages["load (COPY, keys, change log)"] = StageTiming(
        "load (COPY, keys, change log)", written + result.changes, load_seconds
    )
    report.stages["whole publish (wall)"] = StageTiming("whole publish (wall)", result.records_read, total)

    # the idempotent re-publish: the same staged batches, nothing changes
    start = time.perf_counter()
    again = publish(engine, staged_for_publish(settings), keyring, policy, contracts, spill=spill)
    again_seconds = time.perf_counter() - start
    peak_again = peak_rss_mib()
    report.stages["re-publish, nothing changed"] = StageTiming(
        "re-publish, nothing changed", again.records_read, again_seconds
    )

    # the floor: the same rows, raw COPY into UNLOGGED tables without indexes
    names = [t.table for t in result.tables if t.inserted + t.updated] + ["core.change_log"]
    floors = _floor(str(engine.url.database), names)
    engine.dispose()
    floor_rows = sum(r for r, _ in floors.values())
    floor_seconds = sum(s for _, s in floors.values())
    report.floors["raw COPY, same rows"] = StageTiming("raw COPY, same rows", floor_rows, floor_seconds)
    ratio = load_seconds / max(floor_seconds, 1e-9)

    print(
        f"\n{'table':<36}{'rows':>11}{'table s':>9}{'load s':>8}{'load rows/s':>13}"
        f"{'COPY s':>8}{'COPY rows/s':>13}{'x COPY':>8}"
    )
    for t in result.tables:
        rows, seconds = floors.get(t.table, (0, 0.0))
        print(
            f"{t.table:<36}{t.rows:>11,}{t.seconds:>9.2f}{t.load_seconds:>8.2f}"
            f"{t.rows / max(t.load_seconds, 1e-9):>13,.0f}{seconds:>8.2f}{rows / max(seconds, 1e-9):>13,.0f}"
            f"{(t.load_seconds / seconds if seconds else 0):>8.1f}"
        )
    rows, seconds = floors["core.change_log"]
    print(
        f"{'core.change_log (+ commit)':<36}{result.changes:>11,}{log_seconds:>9.2f}{log_seconds:>8.2f}"
        f"{result.changes / max(log_seconds, 1e-9):>13,.0f}"
        f"{seconds:>8.2f}{rows / max(seconds, 1e-9):>13,.0f}{log_seconds / max(seconds, 1e-9):>8.1f}"
    )
    print(
        f"{'all rows written':<36}{written + result.changes:>11,}{merge_seconds:>9.2f}{load_seconds:>8.2f}"
        f"{(written + result.changes) / max(load_seconds, 1e-9):>13,.0f}"
        f"{floor_seconds:>8.2f}{floor_rows / max(floor_seconds, 1e-9):>13,.0f}{ratio:>8.1f}"
    )

    met_time, met_mem, met_ratio = total <= TARGET_SECONDS, peak <= TARGET_MIB, ratio <= TARGET_RATIO
    report.notes += [
        f"records read {result.records_read:,}; rows written {written:,} in {len(result.tables)} tables; "
        f"change-log rows {result.changes:,}; unlinked {sum(result.unlinked.values()):,}; "
        f"rekeyed {sum(result.rekeyed.values()):,}",
        "steps (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()),
        f"re-publish: {again_seconds:.1f} s, {again.changes:,} changes (publish id {again.publish_id}); "
        f"steps (s): " + ", ".join(f"{k} {v:.2f}" for k, v in again.timings.items()),
        f"peak memory of the publish itself: {peak:,.0f} MiB (after the re-publish {peak_again:,.0f} MiB; "
        "generation, ingest and linkage ran in child processes)",
        f"load (COPY, keys and indexes, change log) / raw COPY: {load_seconds:.1f} s / {floor_seconds:.1f} s "
        f"= {ratio:.2f} "
        f"(target <= {TARGET_RATIO}): {'met' if met_ratio else 'NOT met'}",
        f"target: whole publish <= {TARGET_SECONDS} s and <= {TARGET_MIB // 1024} GiB: "
        f"{'met' if met_time and met_mem else 'NOT met'} ({total:.1f} s, {peak:,.0f} MiB)",
    ]
    report.print(ratios={"load (COPY, keys, change log)": "raw COPY, same rows"})
    return 0 if met_time and met_mem and met_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
