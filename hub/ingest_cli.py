"""`hub ingest` and `hub quarantine`: run the ingest stages without Airflow, and let stewards see bad rows."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hub.settings import Settings

if TYPE_CHECKING:
    from hub.ingest import IngestContext, IngestResult

    Progress = Callable[[str, int], None]


log = logging.getLogger(__name__)


def build_context(settings: Settings, max_quarantine_rate: float | None = None) -> IngestContext:
    """Open state, staging, quarantine, policy and keyring as the settings say."""
    from connectors.registry import locate
    from connectors.state import StateStore
    from hub.ingest import IngestContext
    from privacy.policy import load_policy
    from privacy.reveal import quarantine_key
    from schemas.base import private_dir
    from schemas.quarantine import QuarantineStore

    private_dir(settings.home)
    keyring = settings.load_keyring()
    version = keyring.active_version
    return IngestContext(
        state=StateStore(settings.engine()),
        staging_root=settings.home / "staging",
        quarantine=QuarantineStore(settings.home / "quarantine", quarantine_key(keyring, version), version),
        policy=load_policy(),
        keyring=keyring,
        locations=locate(settings.sim_data, settings.sources),
        results_dir=settings.home / "runs" / "gx",
        max_quarantine_rate=settings.max_quarantine_rate if max_quarantine_rate is None else max_quarantine_rate,
        quarantine_window=settings.quarantine_window_rows,
    )


def default_workers() -> int:
    """Worker processes for ``hub ingest``: one per core this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


# Heaviest first, so the long datasets start at once and the short ones fill the gaps (rows at 1 M residents:
# insurance 1.4 M, hukou 0.9 M, employment 0.24 M, migrant 0.12 M, dibao 80 k, the rest smaller; XLSX is slow).
_HEAVY_FIRST = ("renshe.insurance", "gongan.hukou", "canlian.disability", "renshe.employment", "gongan.migrant")


def run_ingest(
    datasets: list[str],
    settings: Settings,
    max_quarantine_rate: float | None = None,
    workers: int | None = None,
) -> list[IngestResult]:
    """Ingest the named datasets with a rich progress display; one IngestResult each, failures included.

    With ``workers`` > 1 (default: one per core) the stages run in that many worker processes: datasets
    side by side, and the chunks of one dataset side by side while its source is read on. Batches are
    committed in source order per dataset, so what is staged equals a serial run (``workers=1``).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    workers = default_workers() if workers is None else max(1, workers)
    ctx = build_context(settings, max_quarantine_rate)
    columns = (TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, transient=False) as bar, worker_pool(ctx, workers) as pool:
            tasks = {name: bar.add_task(name, total=None) for name in datasets}

            def one(name: str) -> IngestResult:
                return _ingest_one(name, ctx, pool, lambda _d, n: bar.advance(tasks[name], n))

            if pool is None:
                results = {name: one(name) for name in datasets}
            else:
                heavy = {name: i for i, name in enumerate(_HEAVY_FIRST)}
                order = sorted(datasets, key=lambda n: heavy.get(n, len(heavy)))
                # a thread per dataset being read (the reading is I/O and parsing; the stages are in the pool)
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as readers:
                    futures = {name: readers.submit(one, name) for name in order}
                    results = {name: futures[name].result() for name in datasets}
            for name in datasets:
                bar.update(tasks[name], total=bar.tasks[tasks[name]].completed)
    finally:
        ctx.state.engine.dispose()
    return [results[name] for name in datasets]


def _ingest_one(name: str, ctx: IngestContext, pool: Executor | None, progress: Progress) -> IngestResult:
    """One dataset; a bug in its path must not cost the others their run."""
    from connectors.registry import get_source
    from hub.ingest import IngestResult, ingest_dataset

    try:
        return ingest_dataset(get_source(name), ctx, progress, pool=pool)
    except Exception as exc:
        # the stack, not the message: library messages may quote the cell that failed
        stack = "".join(traceback.format_tb(exc.__traceback__))
        log.error("%s: unexpected %s at\n%s", name, type(exc).__name__, stack)
        return IngestResult(name, error=f"unexpected {type(exc).__name__}; see the log above")


@contextmanager
def worker_pool(ctx: IngestContext, workers: int) -> Iterator[Executor | None]:
    """A process pool whose workers hold the batch context (None for a serial run), for ``ingest_dataset``.

    Workers start from a fork server that has the stage packages imported, so none inherits this
    process's threads, database connections or open sources; their log records are handled by this
    process's loggers, and they exit if this process dies. An Airflow task ingesting one dataset on the
    worker's cores: ``with worker_pool(ctx, n) as pool: ingest_dataset(decl, ctx, pool=pool)``.
    """
    if workers <= 1:
        yield None
        return
    import multiprocessing

    from hub.ingest import WorkerSetup, init_worker

    mp = multiprocessing.get_context("forkserver")
    # the stage packages and GX (its import alone takes ~4 s) are imported once, in the fork server
    mp.set_forkserver_preload(["hub.ingest", "great_expectations"])
    logs = mp.Queue()
    # the workers' log records are handled here, by this process's loggers and handlers
    listener = logging.handlers.QueueListener(logs, _Relay())
    listener.start()
    level = logging.getLogger().getEffectiveLevel()
    setup = WorkerSetup.of(ctx)
    lifeline, alive = mp.Pipe(duplex=False)  # workers hold the read end; only this process holds the other
    pool = ProcessPoolExecutor(
        workers, mp_context=mp, initializer=init_worker, initargs=(setup, logs, level, lifeline)
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        alive.close()
        lifeline.close()
        listener.stop()
        logs.close()


class _Relay(logging.Handler):
    """Hands a worker's log record to the logger of the same name in this process."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def report_failures(results: list[IngestResult]) -> None:
    """Name every dataset that failed, and exit 1 when any did (after all of them ran)."""
    failed = [r for r in results if r.error]
    if failed:
        click.echo(f"\n{len(failed)} of {len(results)} dataset(s) failed:", err=True)
        for r in failed:
            click.echo(f"  {r.dataset}: {r.error}", err=True)
        sys.exit(1)


def print_summary(results: list[IngestResult]) -> None:
    """The closing table: counts per dataset, drift, files set aside, errors."""
    from rich.console import Console
    from rich.table import Table

    from hub.ingest import summary_frame

    frame = summary_frame(results)
    table = Table(title="ingest summary")
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "iu" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    Console(width=160).print(table)
    for r in results:
        for name, reason in r.rejected_files:
            click.echo(f"  {r.dataset}: file {name} set aside: {reason}")
        if r.quarantine_reasons:
            top = sorted(r.quarantine_reasons.items(), key=lambda kv: -kv[1])[:5]
            click.echo(f"  {r.dataset}: quarantine reasons " + ", ".join(f"{k}={v}" for k, v in top))
        if r.field_problems:
            top = sorted(r.field_problems.items(), key=lambda kv: -kv[1])[:5]
            click.echo(
                f"  {r.dataset}: optional values set missing, record kept " + ", ".join(f"{k}={v}" for k, v in top)
            )


@click.command("ingest")
@click.argument("datasets", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Ingest every registered dataset.")
@click.option(
    "--max-quarantine-rate",
    default=None,
    type=click.FloatRange(0, 1),
    help="A batch whose bad rows exceed this share of max(its rows, HUB_QUARANTINE_WINDOW_ROWS) is not staged "
    "and its watermark does not move (default: HUB_MAX_QUARANTINE_RATE, 0.05).",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1),
    help="Worker processes for the stages (default: one per core); 1 runs everything in this process.",
)
def ingest(datasets: tuple[str, ...], all_: bool, max_quarantine_rate: float | None, workers: int | None) -> None:
    """Extract, conform, validate, quarantine, pseudonymise and stage source DATASETS (or --all).

    Sources are found through HUB_SOURCE_<SYSTEM>_URL/_DIR/_TOKEN (or AIRFLOW_CONN_HUB_<SYSTEM>) or the
    local simulators (HUB_SIM_DATA); staged batches go to $HUB_HOME/staging, encrypted quarantine to
    $HUB_HOME/quarantine. Re-running continues from the durable watermark. Every dataset runs even when
    another fails; the exit status is 1 if any failed, and each failure is named at the end.
    """
    from connectors.registry import registry

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = list(registry()) if all_ else list(datasets)
    if not names:
        raise click.UsageError("name one or more datasets, or --all; known: " + ", ".join(registry()))
    unknown = [n for n in names if n not in registry()]
    if unknown:
        raise click.UsageError(f"unknown dataset(s) {unknown}; known: {', '.join(registry())}")
    results = run_ingest(names, Settings.from_env(), max_quarantine_rate, workers)
    print_summary(results)
    report_failures(results)


@click.group("quarantine")
def quarantine() -> None:
    """List quarantined batches, or decrypt one for a data steward (logged like a reveal)."""


@quarantine.command("list")
@click.option("--dataset", default=None, help="Only this dataset.")
def quarantine_list(dataset: str | None) -> None:
    """Quarantined batches with row counts and reason codes (no values)."""
    ctx = build_context(Settings.from_env())
    entries = ctx.quarantine.entries(dataset)
    if not entries:
        click.echo("quarantine is empty")
    for e in entries:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(e.reasons.items()))
        click.echo(f"{e.dataset}\t{e.batch_id}\t{e.rows} rows\tkey v{e.key_version}\t{reasons}")


@quarantine.command("show")
@click.argument("batch_id")
@click.option("--reason", default=None, help="Why the steward needs the plaintext, 4+ characters (logged).")
@click.option("--operator", default=None, help="Who is looking (logged).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Write CSV here (mode 0600) instead of stdout."
)
def quarantine_show(batch_id: str, reason: str | None, operator: str | None, out: Path | None) -> None:
    """Decrypt one quarantined batch; needs --operator and --reason; every attempt is in the audit log."""
    from privacy.audit_log import AuditLogError, append_audit
    from privacy.reveal import RevealRefused, read_quarantine
    from schemas.base import write_atomic

    settings = Settings.from_env()
    ctx = build_context(settings)
    engine = settings.engine()
    try:
        match = [e for e in ctx.quarantine.entries() if e.batch_id == batch_id]
        if not match:
            event = {"action": "quarantine_show", "operator": operator, "reason": reason, "batch_id": batch_id}
            append_audit({**event, "outcome": "not_found"}, settings.audit_log, engine, ctx.keyring)
            raise click.ClickException(f"no quarantined batch {batch_id}; see `hub quarantine list`")
        entry = match[0]
        frame = read_quarantine(ctx.quarantine, entry, operator, reason, ctx.keyring, settings.audit_log, engine)
    except RevealRefused as exc:
        hint = " (give --operator and --reason)" if str(exc).startswith("refused") else ""
        raise click.ClickException(f"quarantine show {exc}{hint}; attempt recorded in the audit log") from None
    except AuditLogError as exc:
        raise click.ClickException(f"quarantine show not possible: {exc}") from None
    finally:
        engine.dispose()
    if out:
        write_atomic(out, frame.to_csv(index=False))
        click.echo(f"{entry.rows} rows written to {out}")
    else:
        click.echo(frame.to_csv(index=False))
