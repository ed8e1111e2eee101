"""Ingest one source dataset without Airflow: extract → conform → validate → quarantine → protect → stage.

Each chunk a connector yields becomes one staged batch. The staged batch is the commit point: its
manifest carries the watermark reached, and a run first rolls the durable state forward to the newest
staged batch, so a run killed between staging and advancing the state neither loses nor repeats rows.
A failing dataset is reported in its result and never stops the others.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from connectors.chunk import SOURCE_POSITION, SourceChunk
from connectors.errors import SourceError
from connectors.registry import Locations, SourceDecl
from connectors.state import IncrementalRun, StateStore, Watermark
from hub import staging
from privacy.keyring import Keyring
from privacy.policy import Policy
from privacy.protect import protect
from schemas.base import HubError
from schemas.conform import conform
from schemas.contract import Contract
from schemas.quarantine import QuarantineStore
from schemas.validation import validate

log = logging.getLogger(__name__)

DEFAULT_MAX_QUARANTINE_RATE = 0.05
# A rate over fewer rows says nothing: one bad row in a 19-row drop is not 5 % of anything that matters.
DEFAULT_QUARANTINE_WINDOW = 200
# Rows per staged batch: coarse, because each batch pays a fixed GX and file cost (DESIGN: coarse tasks).
BATCH_ROWS = 100_000


class QuarantineRateExceeded(HubError):
    """A batch had too many bad rows: it is not staged and its watermark does not move."""


@dataclass
class StageTimes:
    """Seconds spent per stage, for the closing summary and the benchmark."""

    extract: float = 0.0
    conform: float = 0.0
    validate: float = 0.0
    protect: float = 0.0
    stage: float = 0.0


@dataclass
class IngestResult:
    """What one dataset run did: counts, batches, drift, files set aside, and an error if it stopped."""

    dataset: str
    rows_read: int = 0
    duplicates_skipped: int = 0
    staged: int = 0
    unkeyed: int = 0  # staged without a usable ID number, for linkage to place (also quarantined for stewards)
    quarantined: int = 0
    batches: list[str] = field(default_factory=list)
    dropped_columns: set[str] = field(default_factory=set)
    rejected_files: list[tuple[str, str]] = field(default_factory=list)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    field_problems: dict[str, int] = field(default_factory=dict)  # "field:reason" -> optional values set missing
    times: StageTimes = field(default_factory=StageTimes)
    error: str | None = None


@dataclass(frozen=True)
class IngestContext:
    """Everything a run needs, passed explicitly (no shared mutable state)."""

    state: StateStore
    staging_root: Path
    quarantine: QuarantineStore
    policy: Policy
    keyring: Keyring
    locations: Locations
    results_dir: Path
    max_quarantine_rate: float = DEFAULT_MAX_QUARANTINE_RATE
    quarantine_window: int = DEFAULT_QUARANTINE_WINDOW
    batch_rows: int | None = None  # rows per staged batch; None: BATCH_ROWS as the module holds it now

    def batch_context(self) -> BatchContext:
        """The part of the context the stages of one batch need (no database)."""
        return BatchContext(
            self.staging_root,
            self.quarantine,
            self.policy,
            self.keyring,
            self.results_dir,
            self.max_quarantine_rate,
            self.quarantine_window,
        )


Progress = Callable[[str, int], None]


def _watermark_json(mark: Watermark | None) -> dict[str, Any] | None:
    if mark is None:
        return None
    return {"cursor": mark.cursor, "boundary": dict(mark.boundary), "position": mark.position}


def roll_forward(ctx: IngestContext, dataset: str) -> None:
    """Advance the durable watermark to the newest staged batch (the commit point) if a run died before."""
    durable = ctx.state.watermark(dataset)
    newest: dict[str, Any] | None = None
    for manifest_path in staging.batch_manifest_paths(ctx.staging_root, dataset):
        mark = json.loads(manifest_path.read_text(encoding="utf-8")).get("watermark_after")
        if mark and (newest is None or mark["cursor"] > newest["cursor"]):
            newest = mark
    if newest and (durable is None or newest["cursor"] > durable.cursor):
        log.warning("%s: rolling the watermark forward to the newest staged batch", dataset)
        ctx.state.advance(dataset, Watermark(newest["cursor"], newest["boundary"], newest.get("position")))


def _chunks(decl: SourceDecl, ctx: IngestContext, run: IncrementalRun | None) -> Generator[SourceChunk, None, None]:
    """The connector for a registered source, reading from where the state says; closing it closes the connector."""
    since = run.since if run else None
    rows = ctx.batch_rows or BATCH_ROWS
    if decl.kind == "http":
        from connectors.http import HttpSource, endpoint_for

        base = ctx.locations.http.get(decl.system)
        if not base:
            raise SourceError(
                decl.dataset,
                "",
                f"no URL for system '{decl.system}' (run `hub simulate serve` or set "
                f"HUB_SOURCE_{decl.system.upper()}_URL)",
            )
        token = ctx.locations.tokens.get(decl.system)
        if not token:
            name = decl.system.upper()
            raise SourceError(
                decl.dataset,
                "",
                f"no credential for system '{decl.system}' (set HUB_SOURCE_{name}_TOKEN or AIRFLOW_CONN_HUB_{name})",
            )
        with HttpSource(
            decl.dataset,
            base,
            token=token,
            endpoint=endpoint_for(decl.dataset),
            lag=decl.lag,
            page_size=min(decl.page_size, rows),
            pages_per_chunk=max(1, rows // min(decl.page_size, rows)),
        ) as http:
            yield from http.read(since=since)
    elif decl.kind == "sql":
        from connectors.sql import SqlSource

        location = ctx.locations.sql.get(decl.dataset)
        if not location:
            raise SourceError(
                decl.dataset,
                "",
                f"no database location (run `hub simulate generate` or set HUB_SOURCE_{decl.system.upper()}_URL)",
            )
        with SqlSource.from_location(decl.dataset, location, lag=decl.lag, chunk_rows=rows) as table:
            yield from table.read(since=since)
    else:
        from connectors.files import FileDropSource

        root = ctx.locations.files[decl.system] / (decl.path or "")
        drops = FileDropSource(
            decl.dataset, root, decl.pattern or "*", state=ctx.state, caller_records_cut_files=True
        )
        yield from drops.read()


@dataclass(frozen=True)
class BatchContext:
    """What turning one chunk into a staged batch needs: no database, so a worker process can hold it."""

    staging_root: Path
    quarantine: QuarantineStore
    policy: Policy
    keyring: Keyring
    results_dir: Path
    max_quarantine_rate: float = DEFAULT_MAX_QUARANTINE_RATE
    quarantine_window: int = DEFAULT_QUARANTINE_WINDOW


@dataclass(frozen=True)
class WorkerSetup:
    """A ``BatchContext`` in picklable form, sent once to each worker process (the quarantine key is derived
    there from the keyring, as ``hub ingest`` derives it)."""

    staging_root: Path
    quarantine_root: Path
    quarantine_version: int
    policy: Policy
    keyring: Keyring
    results_dir: Path
    max_quarantine_rate: float
    quarantine_window: int

    @classmethod
    def of(cls, ctx: IngestContext) -> WorkerSetup:
        """The setup a worker needs to stage batches exactly as ``ctx`` would."""
        return cls(
            ctx.staging_root,
            ctx.quarantine.root,
            ctx.quarantine.key_version,
            ctx.policy,
            ctx.keyring,
            ctx.results_dir,
            ctx.max_quarantine_rate,
            ctx.quarantine_window,
        )

    def context(self) -> BatchContext:
        """The batch context, built in the worker."""
        from privacy.reveal import quarantine_key

        store = QuarantineStore(
            self.quarantine_root, quarantine_key(self.keyring, self.quarantine_version), self.quarantine_version
        )
        return BatchContext(
            self.staging_root,
            store,
            self.policy,
            self.keyring,
            self.results_dir,
            self.max_quarantine_rate,
            self.quarantine_window,
        )


@dataclass
class BatchJob:
    """One chunk to conform, validate, quarantine, protect and write (not yet commit) as a staged batch."""

    contract: Contract
    batch_id: str
    raw: pd.DataFrame
    manifest: dict[str, Any]  # what the run knows before the stages: cursor, positions, watermark, order
    position: str  # the chunk's source position, for messages


@dataclass
class BatchOutcome:
    """What the stages made of one chunk; ``folder`` is the prepared batch to commit (None: nothing staged)."""

    batch_id: str
    folder: Path | None = None
    staged: int = 0
    unkeyed: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    field_problems: dict[str, int] = field(default_factory=dict)
    dropped_columns: set[str] = field(default_factory=set)
    times: StageTimes = field(default_factory=StageTimes)


class BatchFailed(HubError):
    """A worker hit an unexpected error; the message carries its type and stack only (a library's message may
    quote the cell that failed)."""


def stage_batch(job: BatchJob, bctx: BatchContext) -> BatchOutcome:
    """Conform, validate, quarantine, protect and write one chunk as a prepared (uncommitted) staged batch.

    A pure function of the job and the context (no database, no watermark), so a worker process gives the
    same batch as the run itself. Raises QuarantineRateExceeded when the batch must be held back.
    """
    contract, raw, batch_id = job.contract, job.raw, job.batch_id
    out = BatchOutcome(batch_id)
    t0 = time.perf_counter()
    conformed = conform(raw, contract)
    t1 = time.perf_counter()
    checked = validate(conformed, contract, results_dir=bctx.results_dir / contract.dataset / batch_id)
    t2 = time.perf_counter()
    out.times.conform, out.times.validate = t1 - t0, t2 - t1
    out.dropped_columns.update(conformed.unknown_columns)
    out.field_problems = dict(checked.field_problems)
    bad = raw.loc[checked.bad_index]
    if len(bad):
        bctx.quarantine.put(contract.dataset, batch_id, bad, checked.reasons.loc[bad.index], bad[SOURCE_POSITION])
        counts = checked.reasons.loc[bad.index].astype(str).str.split(";").explode().value_counts()
        out.quarantine_reasons = {str(k): int(v) for k, v in counts.items()}
    rows = len(checked.good) + len(bad)
    rate = len(bad) / max(rows, bctx.quarantine_window)
    if rate > bctx.max_quarantine_rate:
        raise QuarantineRateExceeded(
            f"{contract.dataset} batch {batch_id} ({job.position}): {len(bad)} of {rows} rows quarantined, "
            f"{rate:.1%} over a window of max({rows}, {bctx.quarantine_window}) rows exceeds the limit "
            f"{bctx.max_quarantine_rate:.1%}; the batch is not staged and the watermark is kept. "
            f"See the reasons: hub quarantine list --dataset {contract.dataset}; after fixing the source, "
            f"or to accept it: hub ingest {contract.dataset} --max-quarantine-rate {min(1.0, rate + 0.005):.3f}"
        )
    unkeyed = id_only_failures(checked.reasons.loc[bad.index], contract)
    rows_of = checked.cleaned if checked.cleaned is not None else conformed.data
    to_protect = pd.concat([checked.good, rows_of.loc[unkeyed]]) if len(unkeyed) else checked.good
    t3 = time.perf_counter()
    protected = protect(to_protect, contract, bctx.policy, bctx.keyring)
    t4 = time.perf_counter()
    manifest = {
        **job.manifest,
        "dataset": contract.dataset,
        "batch_id": batch_id,
        "staged": len(protected.data),
        "quarantined": len(bad),
        "unkeyed": len(unkeyed),
        "field_problems": dict(checked.field_problems),
        "contract_version": contract.version,
        "key_versions": dict(protected.key_versions),
        "dropped_columns": sorted(set(conformed.unknown_columns) | {d for d, *_ in _names(protected.dropped)}),
    }
    out.folder = staging.prepare_batch(bctx.staging_root, manifest, protected.data, protected.linkage)
    out.times.protect, out.times.stage = t4 - t3, time.perf_counter() - t4
    out.staged, out.unkeyed, out.quarantined = len(protected.data), len(unkeyed), len(bad)
    return out


_WORKER_CONTEXT: BatchContext | None = None


def init_worker(setup: WorkerSetup, logs: Any = None, level: int = logging.WARNING, lifeline: Any = None) -> None:
    """Process-pool initializer: build this worker's batch context once; send its log records to ``logs``
    (a multiprocessing queue the run's process logs from), at the run's level; exit when ``lifeline`` (the
    read end of a pipe only the run's process can write) closes, i.e. when that process is gone, even killed.
    """
    global _WORKER_CONTEXT
    if lifeline is not None:
        import os
        import threading

        def watch() -> None:
            try:
                lifeline.recv_bytes()
            except (EOFError, OSError):
                pass
            os._exit(1)  # the run's process died: nothing of ours may outlive it (an orphan holds its pipes)

        threading.Thread(target=watch, name="ingest-lifeline", daemon=True).start()
    if logs is not None:
        import logging.handlers

        root = logging.getLogger()
        root.handlers[:] = [logging.handlers.QueueHandler(logs)]
        root.setLevel(level)
    _WORKER_CONTEXT = setup.context()


def stage_in_worker(job: BatchJob) -> BatchOutcome:
    """``stage_batch`` in a worker process set up by ``init_worker``; unexpected errors lose their message."""
    if _WORKER_CONTEXT is None:
        raise BatchFailed("the worker process was not initialised (init_worker)")
    try:
        return stage_batch(job, _WORKER_CONTEXT)
    except (HubError, OSError):
        raise
    except Exception as exc:
        stack = "".join(traceback.format_tb(exc.__traceback__))
        raise BatchFailed(f"unexpected {type(exc).__name__} in a worker at\n{stack}") from None


@dataclass
class _Planned:
    """A chunk handed to the stages, waiting for its turn to commit (source order)."""

    outcome: Future[BatchOutcome | None]
    rows: int
    mark: Watermark | None
    chunk: SourceChunk


def _done(value: BatchOutcome | None) -> Future[BatchOutcome | None]:
    future: Future[BatchOutcome | None] = Future()
    future.set_result(value)
    return future


def ingest_dataset(
    decl: SourceDecl,
    ctx: IngestContext,
    progress: Progress | None = None,
    pool: Executor | None = None,
    ahead: int = 3,
) -> IngestResult:
    """Run one dataset end to end; errors stop the dataset (not the others) and are reported, not raised.

    Without ``pool`` each chunk is staged before the next is read. With a process pool (``init_worker``
    run in each worker), up to ``ahead`` chunks are in the workers while the source is read on; batches are
    committed (renamed into place, watermark advanced, file recorded) strictly in source order, so the
    staged batches are the same as a serial run's, and a run stopped anywhere has staged a prefix.
    """
    result = IngestResult(decl.dataset)
    pending: deque[_Planned] = deque()
    bctx = ctx.batch_context()
    try:
        for stale in staging.remove_stale_temp(ctx.staging_root, decl.dataset):
            log.warning("%s: removed %s, left by a run killed while staging", decl.dataset, stale.name)
        run: IncrementalRun | None = None
        if decl.contract.cursor:
            roll_forward(ctx, decl.dataset)
            run = ctx.state.begin(decl.dataset, decl.contract.cursor, decl.contract.primary_key, decl.lag)

        def submit(chunk: SourceChunk) -> None:
            job = _plan(decl, ctx, run, chunk, result)
            if job is None:
                outcome = _done(None)
            elif pool is None:
                outcome = _done(stage_batch(job, bctx))
            else:
                outcome = pool.submit(stage_in_worker, job)
            pending.append(_Planned(outcome, len(chunk.frame), run.next if run else None, chunk))

        def commit_ready(block: bool) -> None:
            while pending and (block or pending[0].outcome.done()):
                _commit(decl, ctx, run, pending.popleft(), result, progress)
                block = False

        with closing(_chunks(decl, ctx, run)) as chunks:
            if pool is None:
                while True:
                    t0 = time.perf_counter()
                    chunk = next(chunks, None)
                    result.times.extract += time.perf_counter() - t0
                    if chunk is None:
                        break
                    submit(chunk)
                    commit_ready(block=True)
            else:
                _pipeline(chunks, submit, commit_ready, pending, ahead, result)
        while pending:
            commit_ready(block=True)
        if decl.kind == "files":
            result.rejected_files = [(f.file_name, f.reason or "") for f in ctx.state.files(decl.dataset, ["rejected"])]
    except HubError as exc:
        result.error = str(exc)
        log.error("%s stopped: %s", decl.dataset, exc)
    except OSError as exc:  # disk full, permissions, a vanished folder: name the file, go on with the others
        where = f" ({exc.filename})" if exc.filename else ""
        result.error = f"{type(exc).__name__}{where}: {exc.strerror or exc}"
        log.error("%s stopped: %s", decl.dataset, result.error)
    finally:
        _discard(pending)
    return result


def _pipeline(
    chunks: Generator[SourceChunk, None, None],
    submit: Callable[[SourceChunk], None],
    commit_ready: Callable[[bool], None],
    pending: deque[_Planned],
    ahead: int,
    result: IngestResult,
) -> None:
    """Read on (in a thread) while workers stage; commit each batch as soon as it and those before it are done."""

    def read() -> tuple[SourceChunk | None, float]:
        t0 = time.perf_counter()
        chunk = next(chunks, None)
        return chunk, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-read") as reader:
        reading: Future[tuple[SourceChunk | None, float]] | None = reader.submit(read)
        while reading is not None or pending:
            waiting: list[Future[Any]] = [reading] if reading is not None else []
            if pending:
                waiting.append(pending[0].outcome)
            wait(waiting, return_when=FIRST_COMPLETED)
            commit_ready(False)
            if reading is not None and reading.done():
                if reading.exception() is not None:
                    while pending:  # the chunks read before the failure are staged first, as in a serial run
                        commit_ready(True)
                chunk, seconds = reading.result()
                result.times.extract += seconds
                reading = None
                if chunk is None:
                    break
                submit(chunk)
                if len(pending) < ahead:
                    reading = reader.submit(read)
            elif reading is None and len(pending) < ahead:
                reading = reader.submit(read)


def _discard(pending: deque[_Planned]) -> None:
    """Batches prepared after the one that stopped a run: wait for them and delete them, uncommitted."""
    while pending:
        planned = pending.popleft()
        try:
            outcome = planned.outcome.result()
        except Exception:  # the run already stopped for the first error; these are not staged
            continue
        if outcome is not None and outcome.folder is not None:
            staging.discard_batch(outcome.folder)


def _plan(
    decl: SourceDecl, ctx: IngestContext, run: IncrementalRun | None, chunk: SourceChunk, result: IngestResult
) -> BatchJob | None:
    """Filter a chunk against the watermark and name its batch; None when there is nothing new to stage."""
    before = run.next if run else None
    raw = run.accept(chunk) if run else chunk.frame
    result.rows_read += len(chunk.frame)
    result.duplicates_skipped += len(chunk.frame) - len(raw)
    start = before.cursor if before else (chunk.file.sha256 if chunk.file else None)
    batch_id = staging.batch_id_for(decl.dataset, raw.drop(columns=[SOURCE_POSITION], errors="ignore"), start)
    if not len(raw) or staging.is_staged(ctx.staging_root, decl.dataset, batch_id):
        return None
    manifest = {
        "cursor_from": start,
        "cursor_to": chunk.cursor_max,
        "source_positions": chunk.position,
        "rows_in": len(chunk.frame),
        "duplicates_skipped": len(chunk.frame) - len(raw),
        "watermark_after": _watermark_json(run.next) if run else None,
        # source order: linkage reads a record staged twice as its newest version by this stamp
        "staged_at": time.time_ns(),
    }
    return BatchJob(decl.contract, batch_id, raw, manifest, chunk.position)


def _commit(
    decl: SourceDecl,
    ctx: IngestContext,
    run: IncrementalRun | None,
    planned: _Planned,
    result: IngestResult,
    progress: Progress | None,
) -> None:
    """Make one batch visible and advance the state past its chunk (in source order only)."""
    outcome = planned.outcome.result()
    if outcome is not None and outcome.folder is not None:
        t0 = time.perf_counter()
        staging.commit_batch(ctx.staging_root, decl.dataset, outcome.batch_id, outcome.folder)
        outcome.times.stage += time.perf_counter() - t0
        for name in ("conform", "validate", "protect", "stage"):
            setattr(result.times, name, getattr(result.times, name) + getattr(outcome.times, name))
        result.dropped_columns.update(outcome.dropped_columns)
        for problem, count in outcome.field_problems.items():
            result.field_problems[problem] = result.field_problems.get(problem, 0) + count
        for reason, count in outcome.quarantine_reasons.items():
            result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + count
        result.staged += outcome.staged
        result.unkeyed += outcome.unkeyed
        result.quarantined += outcome.quarantined
        result.batches.append(outcome.batch_id)
    chunk = planned.chunk
    if run:
        run.commit(planned.mark)
    elif chunk.file is not None and chunk.ends_file:
        status = "rejected" if chunk.set_aside else "ingested"
        ctx.state.record_file(decl.dataset, chunk.file.sha256, chunk.file.name, status, chunk.set_aside)
    if progress:
        progress(decl.dataset, planned.rows)


def id_only_failures(reasons: pd.Series, contract: Contract) -> pd.Index:
    """Rows whose every reason is about the person's ID number: staged unkeyed so linkage can place them.

    Reason codes end in the field they name (``conform:id_number_invalid:id_number``); a cross-field
    mismatch names the other field, so such a row stays in quarantine only.
    """
    person = contract.by_unified("person.id_number")
    if person is None or reasons.empty:
        return reasons.index[:0]
    parts = reasons.astype("string").str.split(";").explode()
    about_id = parts.str.rsplit(":", n=1).str[-1].eq(person.name)
    only = about_id.groupby(level=0).all()
    return only.index[only.to_numpy(dtype=bool)]


def _names(dropped: Any) -> list[tuple[str, ...]]:
    """Normalise ``ProtectedBatch.dropped`` entries to (column, ...) tuples."""
    return [(d,) if isinstance(d, str) else tuple(d) for d in dropped]


def summary_frame(results: list[IngestResult]) -> pd.DataFrame:
    """One row per dataset for the closing summary (counts only)."""
    return pd.DataFrame(
        [
            {
                "dataset": r.dataset,
                "read": r.rows_read,
                "staged": r.staged,
                "unkeyed": r.unkeyed,
                "quarantined": r.quarantined,
                "skipped": r.duplicates_skipped,
                "batches": len(r.batches),
                "dropped columns": ", ".join(sorted(r.dropped_columns)),
                "fields nulled": sum(r.field_problems.values()),
                "files set aside": len(r.rejected_files),
                "error": r.error or "",
            }
            for r in results
        ]
    )
