"""Benchmark identity resolution: link N residents' staged records; seconds and records/s per pass, peak memory,
and the exact pass's ratio to a plain DuckDB join of the same link tokens measured in the same run.

Usage: python -m bench.link [--residents 1000000] [--workdir DIR]. Generation and ingest run first in child
processes (not counted; an existing DIR is reused), so the peak memory printed is linkage's own.
Target (issue 8): the whole linkage at 1,000,000 residents (about 2.8 M staged records) in <= 60 s and
<= 6 GiB, the exact pass within 3x of the join.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure import BenchReport, StageTiming, peak_rss_mib

if TYPE_CHECKING:
    from hub.settings import Settings

TARGET_SECONDS = 60
TARGET_MIB = 6 * 1024
TARGET_RATIO = 3.0


def _prepare(work: Path, residents: int, env: dict[str, str]) -> None:
    """Generate and ingest in child processes unless ``work`` already holds staged batches."""
    hub = [sys.executable, "-c", "from hub.cli import main; main()"]
    if not (work / "hub" / "staging").is_dir():
        t0 = time.perf_counter()
        subprocess.run([*hub, "keys", "init"], env=env, check=True, capture_output=True)
        subprocess.run([*hub, "simulate", "generate", "--residents", str(residents)], env=env, check=True)
        server = subprocess.Popen([*hub, "simulate", "serve"], env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            for line in server.stdout:  # wait for the servers to announce themselves, no sleeping
                if line.startswith("serve.json"):
                    break
            subprocess.run([*hub, "ingest", "--all"], env=env, check=False)
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"generate + ingest (not counted): {time.perf_counter() - t0:.1f}s", flush=True)


def exact_floor(settings: Settings, report: BenchReport) -> int:
    """The exact pass's floor, "DuckDB join of link tokens": the staged link tokens joined to the identity index
    by DuckDB, nothing else (the same output the exact pass makes: each record with its person key, as Arrow).
    Returns how many records it joined."""
    from hub.link_cli import staged_refs
    from linkage import store
    from linkage.workspace import Workspace

    engine = settings.engine()
    with engine.connect() as conn:
        index = store.read_table(conn, store.link_identity, ["link_token", "person_key"])
    engine.dispose()
    with Workspace() as ws:
        ws.load(staged_refs(settings), set())
        ws.sql("CREATE TABLE tokens AS SELECT dataset, record_id, link_token FROM rec WHERE link_token IS NOT NULL")
        ws.register("ident", index)
        count = ws.scalar("SELECT count(*) FROM tokens")
        with report.stage("DuckDB join of link tokens", records=count, floor=True):
            return (
                ws.sql("SELECT t.dataset, t.record_id, i.person_key FROM tokens t JOIN ident i USING (link_token)")
                .to_arrow_table()
                .num_rows
            )


def main() -> int:
    """Prepare, link, measure the floor, print the report; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hub-bench-link-"))
    env = {**os.environ, "HUB_HOME": str(work / "hub"), "HUB_SIM_DATA": str(work / "sim")}
    env["GX_ANALYTICS_ENABLED"] = "false"
    _prepare(work, args.residents, env)

    import sqlalchemy as sa

    from hub.link_cli import run_link
    from hub.settings import Settings
    from linkage import store

    settings = Settings.from_env(env)
    engine = settings.engine()
    with engine.begin() as conn:  # link from scratch every time the bench runs
        for table in reversed(store.metadata.sorted_tables):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table.name}"))
    engine.dispose()
    report = BenchReport(f"link {args.residents:,} residents' staged records")
    start = time.perf_counter()
    result = run_link(settings)
    total = time.perf_counter() - start
    for name, seconds in result.seconds.items():
        report.stages[f"pass: {name}"] = StageTiming(f"pass: {name}", result.records, seconds)
    report.stages["whole linkage (wall)"] = StageTiming("whole linkage (wall)", result.records, total)
    peak = peak_rss_mib()

    joined = exact_floor(settings, report)
    ratio = report.stages["pass: exact"].seconds / max(report.floors["DuckDB join of link tokens"].seconds, 1e-9)
    report.notes += [
        f"records {result.records:,}: exact {result.exact:,}, probabilistic {result.probabilistic:,}, "
        f"unplaced {result.unplaced:,}; persons {result.persons:,}; joined by the floor {joined:,}",
        f"peak memory of the linkage itself: {peak:,.0f} MiB (generation and ingest ran in child processes)",
        f"exact pass / DuckDB join: {ratio:.2f} (target <= {TARGET_RATIO})",
        f"target: whole linkage <= {TARGET_SECONDS} s and <= {TARGET_MIB // 1024} GiB: "
        f"{'met' if total <= TARGET_SECONDS and peak <= TARGET_MIB else 'NOT met'} ({total:.1f} s, {peak:,.0f} MiB)",
    ]
    report.print(ratios={"pass: exact": "DuckDB join of link tokens"})
    return 0 if total <= TARGET_SECONDS and peak <= TARGET_MIB and ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
