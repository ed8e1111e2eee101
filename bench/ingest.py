"""Ingest every dataset for N residents from the running simulators; print records/s per stage and peak memory.

Usage: python -m bench.ingest [--residents 1000000] [--workdir DIR]. Target (issue 4): all datasets in at
most 180 s and at most 4 GiB at 1,000,000 residents. Generation is timed apart and not counted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.measure import BenchReport, StageTiming


def main() -> None:
    """Generate, serve, ingest all, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hub-bench-ingest-"))
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

    from connectors.registry import registry
    from hub.ingest_cli import run_ingest
    from hub.settings import Settings
    from privacy.keyring import init_keyfile
    from simulators.generate import generate
    from simulators.http_server import start_servers

    settings = Settings.from_env({**os.environ, "HUB_HOME": str(work / "hub"), "HUB_SIM_DATA": str(work / "sim")})
    report = BenchReport(f"ingest all datasets, {args.residents:,} residents")
    t0 = time.perf_counter()
    summary = generate(settings.sim_data, residents=args.residents, seed=1)
    report.notes.append(
        f"generation (not counted): {time.perf_counter() - t0:.1f}s, {sum(summary.rows.values()):,} rows"
    )
    init_keyfile(settings.keyring)
    with start_servers(settings.sim_data) as servers:
        del servers
        start = time.perf_counter()
        results = run_ingest(list(registry()), settings)
        total = time.perf_counter() - start
    rows = sum(r.rows_read for r in results)
    for stage in ("extract", "conform", "validate", "protect", "stage"):
        timing = report.stages.setdefault(stage, StageTiming(stage))
        timing.records = rows
        timing.seconds = sum(getattr(r.times, stage) for r in results)
    end_to_end = report.stages.setdefault("all stages (wall)", StageTiming("all stages (wall)"))
    end_to_end.records, end_to_end.seconds = rows, total
    errors = [f"{r.dataset}: {r.error}" for r in results if r.error]
    report.notes.append(
        f"staged {sum(r.staged for r in results):,}, quarantined {sum(r.quarantined for r in results):,}"
    )
    report.notes.append(f"target: <= 180 s for all datasets: {'met' if total <= 180 else 'NOT met'} ({total:.1f}s)")
    report.notes.extend(errors)
    report.print()


if __name__ == "__main__":
    main()
