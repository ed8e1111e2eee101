"""End to end: a whole city from the department systems to the published PostgreSQL database, then a day's change.

Usage: python -m bench.e2e [--residents 200000] [--workdir DIR] [--workers N] [--changed 0.01] [--keep-db]

1. Generate N residents (not counted; an existing DIR/sim is reused) and serve the REST systems in a child
   process (a department system is not the hub: its CPU and memory are not counted, but it shares the cores).
2. Full run, timed: ``hub ingest --all`` (worker processes), ``hub link``, ``hub publish`` into a fresh
   PostgreSQL database (hub_bench_<random> on 127.0.0.1:5432, user postgres; kept in DIR/bench-e2e-database).
3. Floors, measured in the same run on the same data: a raw HMAC/AES-SIV loop (protect), a plain Parquet write
   of the staged tables (stage), a plain DuckDB join of the link tokens (the exact linkage pass), a raw COPY of
   the published rows into UNLOGGED tables without indexes (publish's load).
4. ``hub simulate advance --changed 0.01`` (not counted; nor is the wait until the simulated systems have
re-read their changed files), then the incremental run timed the same way.

Printed per stage: seconds, records/s, cores used (CPU seconds of the hub's processes / wall), the ratio to
its floor; peak memory is the largest sum of the hub's processes' resident memory seen (sampled every 0.1 s), per
stage and overall, with the processes that made up the overall peak.
Targets (issue 12): 1,000,000 residents <= 150 s and <= 6 GiB; 2,200,000 <= 300 s and <= 12 GiB; the 1 %
change <= 15 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import BenchReport, StageTiming

DB_FILE = "bench-e2e-database"
TARGETS = {1_000_000: (150.0, 6 * 1024), 2_200_000: (300.0, 12 * 1024)}
INCREMENTAL_TARGET = 15.0


@dataclass
class Tree:
    """Samples the hub's processes (this one and its descendants, the simulators excluded): peak memory, CPU."""

    exclude: set[int] = field(default_factory=set)
    peak_mib: float = 0.0
    lap_peak_mib: float = 0.0  # since the current lap began (see `lap`)
    at_peak: list[tuple[str, float]] = field(default_factory=list)  # (process, MiB) when the overall peak was seen
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> last CPU seconds seen (exited ones keep theirs)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        import psutil

        me = psutil.Process()
        rss, seen = 0, []
        for proc in [me, *me.children(recursive=True)]:
            if proc.pid in self.exclude:
                continue
            try:
                one = proc.memory_info().rss
                times = proc.cpu_times()
                self.cpu[proc.pid] = times.user + times.system
                seen.append((proc, one / 2**20))
            except psutil.Error:
                continue
            rss += one
        mib = rss / 2**20
        self.lap_peak_mib = max(self.lap_peak_mib, mib)
        if mib > self.peak_mib:
            self.peak_mib, self.at_peak = mib, [(_label(p), m) for p, m in sorted(seen, key=lambda s: -s[1])]

    def cpu_seconds(self) -> float:
        """CPU seconds of every hub process seen so far."""
        self.sample()
        return sum(self.cpu.values())

    @contextmanager
    def running(self) -> Iterator[Tree]:
        def loop() -> None:
            while not self._stop.wait(0.1):
                self.sample()

        thread = threading.Thread(target=loop, name="bench-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def _label(proc: Any) -> str:
    """A process's pid and what it runs, short (the bench itself, an ingest worker, PostgreSQL is not a child)."""
    import psutil

    try:
        cmd = " ".join(a for a in proc.cmdline()[1:] if a not in ("-B", "-s", "-E")) or proc.name()
    except psutil.Error:  # gone, or not ours to read: the pid is enough
        cmd = "?"
    return f"{proc.pid} ({cmd[:70]})"


@dataclass
class Lap:
    """One timed stage: wall seconds, the CPU seconds the hub's processes spent in it, their peak memory in it."""

    wall: float = 0.0
    cpu: float = 0.0
    peak_mib: float = 0.0

    @property
    def cores(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


@contextmanager
def lap(tree: Tree, into: dict[str, Lap], name: str) -> Iterator[None]:
    outer = tree.lap_peak_mib  # laps nest (the whole run holds its stages): the outer one keeps its peak
    tree.lap_peak_mib = 0.0
    cpu0, t0 = tree.cpu_seconds(), time.perf_counter()
    try:
        yield
    finally:
        into[name] = Lap(time.perf_counter() - t0, tree.cpu_seconds() - cpu0, tree.lap_peak_mib)
        tree.lap_peak_mib = max(outer, tree.lap_peak_mib)


def _serve(env: dict[str, str]) -> subprocess.Popen[str]:
    """The simulated REST systems in a child process; returns once they have written serve.json."""
    hub = [sys.executable, "-c", "from hub.cli import main; main()"]
    server = subprocess.Popen([*hub, "simulate", "serve"], env=env, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    for line in server.stdout:  # wait for the servers to announce themselves
        if line.startswith("serve.json"):
            break
    return server


def _wait_current(sim: Path, deadline_s: float = 600.0) -> None:
    """Wait until both simulated systems serve their files as ``advance`` left them (their watcher re-reads a
    changed file at once, as a department's system indexes its data when it changes; not the hub's work)."""
    import json

    import requests

    serve = json.loads((sim / "serve.json").read_text())
    deadline = time.monotonic() + deadline_s
    with requests.Session() as session:
        for system in ("gongan", "renshe"):
            headers = {"Authorization": f"Bearer {serve['tokens'][system]}"}
            while not session.get(f"{serve[system]}/_admin/stats", headers=headers, timeout=30).json()["current"]:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the simulated {system} system did not re-read its files in {deadline_s:.0f} s")
                time.sleep(0.1)  # polling a server in another process, with a deadline


def _run(settings: Any, workers: int, tree: Tree, laps: dict[str, Lap], prefix: str) -> dict[str, Any]:
    """ingest + link + publish, each timed; returns what the report needs."""
    from connectors.registry import registry
    from hub.ingest_cli import run_ingest
    from hub.link_cli import run_link
    from hub.publish_cli import run_publish

    with lap(tree, laps, f"{prefix}ingest"):
        results = run_ingest(list(registry()), settings, workers=workers)
    errors = [f"{r.dataset}: {r.error}" for r in results if r.error]
    if errors:
        raise SystemExit("ingest failed: " + "; ".join(errors))
    with lap(tree, laps, f"{prefix}link"):
        linked = run_link(settings)
    parts: dict[str, float] = {}
    with lap(tree, laps, f"{prefix}publish"), _timed(parts):
        published, release = run_publish(settings)
    return {"ingest": results, "link": linked, "publish": published, "release": release, "parts": parts}


SIDE = "(thread) "  # a part `hub publish` runs in a thread beside another: its seconds overlap the wall time
#: what `hub publish` does besides publish(): module, function, label
_PUBLISH_PARTS = (
    ("hub.publish_cli", "migrated_engine", "migrations check, roles, views"),
    ("publish.lookup", "refresh_lookup", SIDE + "front desk lookup index, beside publish()"),
    ("publish.release", "publish_release", "release tier (k/l gate)"),
    ("service.worklist", "sync_cases", SIDE + "service worklist cases, beside the release tier"),
)


@contextmanager
def _timed(parts: dict[str, float]) -> Iterator[None]:
    """Time the steps `hub publish` takes besides publish() (they are looked up at call time, so wrapped here)."""
    import importlib

    saved = []
    for module_name, name, label in _PUBLISH_PARTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        original = getattr(module, name, None)
        if original is None:
            continue

        def wrapper(*args: Any, _f: Any = original, _label: str = label, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                parts[_label] = parts.get(_label, 0.0) + time.perf_counter() - t0

        setattr(module, name, wrapper)
        saved.append((module, name, original))
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def _floors(settings: Any, report: BenchReport, dbname: str, published: Any) -> None:
    """Each stage's floor on this run's data (see the module docstring)."""
    import pyarrow.parquet as pq

    from bench.link import exact_floor
    from bench.protect import _floor_calls, run_floor
    from bench.publish import _floor as copy_floor
    from hub import staging
    from privacy.policy import load_policy
    from privacy.synthetic import conformed_batch
    from schemas.contract import get_contract

    # protect: the policy's HMAC and AES-SIV calls, one per row and column, on hukou-shaped rows (the
    # heaviest dataset per row); plain Python, no pandas
    contract, keyring = get_contract("gongan.hukou"), settings.load_keyring()
    sample = conformed_batch(contract, 200_000, seed=20261101)
    hmacs, sivs = _floor_calls(sample, contract, load_policy(), keyring)
    with report.stage("HMAC + AES-SIV loop (hukou rows)", records=len(sample), floor=True):
        run_floor(hmacs, sivs)
    del sample, hmacs, sivs

    # stage: the same staged tables written as plain Parquet (zstd), no fsync, no manifest
    out = Path(tempfile.mkdtemp(prefix="floor-", dir=settings.home))
    try:
        rows, seconds = 0, 0.0
        for manifest in staging.staged_batches(settings.home / "staging"):
            folder = staging.batch_dir(settings.home / "staging", manifest.dataset, manifest.batch_id)
            for part in ("data", "linkage"):
                table = pq.read_table(folder / f"{part}.parquet")
                t0 = time.perf_counter()
                pq.write_table(table, out / f"{manifest.batch_id}-{part}.parquet", compression="zstd")
                seconds += time.perf_counter() - t0
            rows += manifest.staged
        report.floors["plain Parquet write"] = StageTiming("plain Parquet write", rows, seconds)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    # the exact linkage pass: the same tokens joined to the index by DuckDB
    exact_floor(settings, report)

    # publish: a raw COPY of every row it wrote, into UNLOGGED tables without indexes
    names = [t.table for t in published.tables if t.inserted + t.updated] + ["core.change_log"]
    copies = copy_floor(dbname, names)
    report.floors["raw COPY, same rows"] = StageTiming(
        "raw COPY, same rows", sum(r for r, _ in copies.values()), sum(s for _, s in copies.values())
    )


def _stage_rows(report: BenchReport, laps: dict[str, Lap], run: dict[str, Any], prefix: str, label: str) -> int:
    """Add one run's stages to the report; returns the number of source records read."""
    results, linked, published = run["ingest"], run["link"], run["publish"]
    read = sum(r.rows_read for r in results)
    staged = sum(r.staged for r in results)

    def add(name: str, records: int, seconds: float) -> None:
        report.stages[f"{label}{name}"] = StageTiming(f"{label}{name}", records, seconds)

    ingest = laps[f"{prefix}ingest"]
    add("ingest (wall)", read, ingest.wall)
    for stage in ("extract", "conform", "validate", "protect", "stage"):
        add(f"  {stage} (worker s)", read if stage in ("extract", "conform", "validate") else staged,
            sum(getattr(r.times, stage) for r in results))  # fmt: skip
    add("link (wall)", linked.records, laps[f"{prefix}link"].wall)
    for name, seconds in linked.seconds.items():
        add(f"  link: {name}", linked.records, seconds)
    add("publish (wall)", published.records_read, laps[f"{prefix}publish"].wall)
    written = sum(t.inserted + t.updated + t.deleted for t in published.tables)
    load = sum(t.load_seconds for t in published.tables)
    for name, seconds in published.timings.items():
        add(f"  publish: {name}", published.records_read, seconds)
    merge = published.timings.get("merge", 0.0)
    log_seconds = max(merge - sum(t.seconds for t in published.tables), 0.0)  # change log, batch row, commit
    add("  publish: load (COPY)", written, load + log_seconds)
    # hub publish around publish(): migrations check, roles and views, the front desk's lookup, the release tier
    for part, seconds in run["parts"].items():
        add(f"  hub publish: {part}", published.records_read, seconds)
    serial = sum(v for k, v in run["parts"].items() if not k.startswith(SIDE))
    rest = laps[f"{prefix}publish"].wall - sum(published.timings.values()) - serial
    add("  hub publish: the rest", published.records_read, max(rest, 0.0))
    return read


def main(argv: list[str] | None = None) -> int:
    """Prepare, run, measure floors, advance, run again, print; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__)
    parser.add_argument("--residents", type=int, default=200_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=None, help="ingest worker processes (default: one per core)")
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--keep-db", action="store_true", help="keep the bench database (kept with --workdir)")
    parser.add_argument("--no-floors", action="store_true", help="skip the floors (quicker)")
    args = parser.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

    from bench.publish import SERVER, _database, _drop_database
    from hub.ingest_cli import default_workers
    from hub.settings import Settings
    from privacy.keyring import init_keyfile
    from simulators.advance import advance
    from simulators.generate import generate

    work = args.workdir or Path(tempfile.mkdtemp(prefix="hub-bench-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    workers = args.workers or default_workers()
    notes: list[str] = []
    sim = work / "sim"
    if not (sim / "manifest.json").is_file():
        t0 = time.perf_counter()
        summary = generate(sim, residents=args.residents, seed=1)
        notes.append(f"generation (not counted): {time.perf_counter() - t0:.1f} s, {sum(summary.rows.values()):,} rows")
    home = work / "hub"
    shutil.rmtree(home, ignore_errors=True)  # every run starts from an empty hub
    recorded = work / DB_FILE
    if recorded.is_file():
        _drop_database(recorded.read_text().strip())
        recorded.unlink()
    dbname, _created = _database(work)  # a fresh database (bench.publish's helper records it in its own file)
    (work / "bench-publish-database").replace(recorded)
    env = {**os.environ, "HUB_HOME": str(home), "HUB_SIM_DATA": str(sim), "HUB_DATABASE_URL": f"{SERVER}/{dbname}"}
    settings = Settings.from_env(env)
    init_keyfile(settings.keyring)

    server = _serve(env)
    tree = Tree(exclude={server.pid})
    laps: dict[str, Lap] = {}
    report = BenchReport(f"end to end, {args.residents:,} residents, {workers} ingest workers, {os.cpu_count()} cores")
    try:
        with tree.running():
            with lap(tree, laps, "full"):
                full = _run(settings, workers, tree, laps, "")
            peak_full = tree.peak_mib
            t0 = time.perf_counter()
            changes = advance(sim, changed=args.changed, late=args.changed / 5, seed=7)
            t1 = time.perf_counter()
            _wait_current(sim)
            waited = time.perf_counter() - t1
            notes.append(
                f"advance --changed {args.changed} (not counted): {t1 - t0:.1f} s, then {waited:.1f} s "
                "until the simulated systems had re-read their changed files"
            )
            del changes
            with lap(tree, laps, "incremental"):
                again = _run(settings, workers, tree, laps, "inc ")
        read = _stage_rows(report, laps, full, "", "")
        report.stages["whole run (wall)"] = StageTiming("whole run (wall)", read, laps["full"].wall)
        read_again = _stage_rows(report, laps, again, "inc ", "1% change: ")
        report.stages["1% change: whole run (wall)"] = StageTiming(
            "1% change: whole run (wall)", read_again, laps["incremental"].wall
        )
        if not args.no_floors:
            _floors(settings, report, dbname, full["publish"])
    finally:
        server.terminate()
        server.wait(timeout=30)
        if args.workdir is None and not args.keep_db:
            _drop_database(dbname)

    for name in ("ingest", "link", "publish", "full", "inc ingest", "inc link", "inc publish", "incremental"):
        one = laps[name]
        notes.append(
            f"cores used, {name}: {one.cores:.2f} ({one.cpu:.1f} CPU s over {one.wall:.1f} s wall), "
            f"peak memory {one.peak_mib:,.0f} MiB"
        )
    notes.append(f"peak memory of the hub's processes: full run {peak_full:,.0f} MiB, overall {tree.peak_mib:,.0f} MiB")
    notes.append("  at the overall peak: " + "; ".join(f"{who} {mib:,.0f} MiB" for who, mib in tree.at_peak[:6]))
    wall, inc = laps["full"].wall, laps["incremental"].wall
    target = TARGETS.get(args.residents)
    ok = inc <= INCREMENTAL_TARGET
    if target:
        met = wall <= target[0] and peak_full <= target[1]
        ok &= met
        notes.append(
            f"target {args.residents:,}: <= {target[0]:.0f} s and <= {target[1] / 1024:.0f} GiB: "
            f"{'met' if met else 'NOT met'} ({wall:.1f} s, {peak_full / 1024:.1f} GiB)"
        )
    notes.append(f"target 1% change <= {INCREMENTAL_TARGET:.0f} s: {'met' if inc <= INCREMENTAL_TARGET else 'NOT met'} "
                 f"({inc:.1f} s)")  # fmt: skip
    notes.append(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
    if not args.no_floors:
        notes.extend(_ratios(report))
    report.notes = notes
    report.print()
    return 0 if ok else 1


def _ratios(report: BenchReport) -> list[str]:
    """Each stage against its floor: seconds per record over the floor's (how many times slower)."""
    pairs = {
        "  protect (worker s)": "HMAC + AES-SIV loop (hukou rows)",
        "  stage (worker s)": "plain Parquet write",
        "  link: exact": "DuckDB join of link tokens",
        "  publish: load (COPY)": "raw COPY, same rows",
    }
    out = []
    for stage, floor in pairs.items():
        s, f = report.stages.get(stage), report.floors.get(floor)
        if s is None or f is None or not s.records or not f.records or not f.seconds:
            continue
        if stage == "  link: exact":  # the same records both ways: compare seconds
            ratio = s.seconds / f.seconds
        else:
            ratio = (s.seconds / s.records) / (f.seconds / f.records)
        out.append(f"ratio to floor, {stage.strip()} / {floor}: {ratio:.2f}x")
    return out


if __name__ == "__main__":
    sys.exit(main())
