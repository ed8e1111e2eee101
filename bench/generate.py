"""Benchmark: generate the simulated source systems for a large population (default 1,000,000 residents).

Prints records/s for the population, the service facts and each system's writer, two I/O floors
measured in the same run (re-writing the largest Parquet file, re-inserting the 低保 table into
SQLite), and peak memory. Target on the 2-core reference machine: <= 120 s and <= 4 GiB.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from bench.measure import BenchReport, StageTiming, peak_rss_mib
from simulators.generate import HTTP_DATASETS, SQL_DATASETS, generate

TARGET_SECONDS = 120.0
TARGET_MIB = 4096.0


def _floors(report: BenchReport, out: Path) -> None:
    """Plain I/O floors on the generated data: Parquet re-write and SQLite re-insert."""
    table = pq.read_table(out / "http" / "renshe.insurance.parquet")
    with report.stage("parquet write", records=table.num_rows, floor=True):
        pq.write_table(table, out / "floor.parquet", compression="zstd")
    (out / "floor.parquet").unlink()
    source = sqlite3.connect(out / "sql" / "minzheng.sqlite")
    rows = source.execute("SELECT * FROM dibao_member").fetchall()
    source.close()
    target = sqlite3.connect(out / "floor.sqlite")
    marks = ", ".join("?" for _ in rows[0]) if rows else "?"
    target.execute(f"CREATE TABLE t ({', '.join(f'c{i} TEXT' for i in range(len(rows[0]) if rows else 1))})")
    with report.stage("sqlite insert", records=len(rows), floor=True):
        target.executemany(f"INSERT INTO t VALUES ({marks})", rows)
        target.commit()
    target.close()
    (out / "floor.sqlite").unlink()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__)
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="keep the output here (default: a temp dir)")
    args = parser.parse_args(argv)

    report = BenchReport(f"generate {args.residents:,} residents (seed {args.seed})")
    with tempfile.TemporaryDirectory(prefix="hub-bench-gen-") as tmp:
        out = args.out or Path(tmp) / "sim"
        summary = generate(out, residents=args.residents, seed=args.seed)
        records = {"population": args.residents, "truth": summary.truth_records, **summary.rows}
        records["services"] = sum(summary.rows.values())  # service facts ~ source rows (before duplicates)
        for name, seconds in summary.stage_seconds.items():
            report.stages[name] = StageTiming(name, records.get(name, 0), seconds)
        total_rows = sum(summary.rows.values())
        report.stages["total"] = StageTiming("total (all source rows)", total_rows, summary.seconds)
        _floors(report, out)
    peak = peak_rss_mib()
    ok = summary.seconds <= TARGET_SECONDS and peak <= TARGET_MIB
    report.notes.append(
        f"target: <= {TARGET_SECONDS:.0f} s and <= {TARGET_MIB:,.0f} MiB -> "
        f"{summary.seconds:.1f} s, {peak:,.0f} MiB: {'met' if ok else 'MISSED'}"
    )
    ratios = {d: "parquet write" for d in HTTP_DATASETS}
    ratios.update({d: "sqlite insert" for group in SQL_DATASETS.values() for d in group})
    report.print(ratios=ratios)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
