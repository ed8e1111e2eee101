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
from collections.abc import Callable, Generator
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
            pages_per_chunk=max(1, BATCH_ROWS // decl.page_size),
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
        with SqlSource.from_location(decl.dataset, location, lag=decl.lag, chunk_rows=BATCH_ROWS) as table:
            yield from table.read(since=since)
    else:
        from connectors.files import FileDropSource

        root = ctx.locations.files[decl.system] / (decl.path or "")
        drops = FileDropSource(decl.dataset, root, decl.pattern or "*", state=ctx.state)
        yield from drops.read()


def ingest_dataset(decl: SourceDecl, ctx: IngestContext, progress: Progress | None = None) -> IngestResult:
    """Run one dataset end to end; errors stop the dataset (not the others) and are reported, not raised."""
    contract = decl.contract
    result = IngestResult(decl.dataset)
    results_dir = ctx.results_dir / decl.dataset
    try:
        for stale in staging.remove_stale_temp(ctx.staging_root, decl.dataset):
            log.warning("%s: removed %s, left by a run killed while staging", decl.dataset, stale.name)
        run: IncrementalRun | None = None
        if contract.cursor:
            roll_forward(ctx, decl.dataset)
            run = ctx.state.begin(decl.dataset, contract.cursor, contract.primary_key, decl.lag)
        with closing(_chunks(decl, ctx, run)) as chunks:
            while True:
                t0 = time.perf_counter()
                chunk = next(chunks, None)
                result.times.extract += time.perf_counter() - t0
                if chunk is None:
                    break
                _ingest_chunk(decl, ctx, run, chunk, result, results_dir)
                if progress:
                    progress(decl.dataset, len(chunk))
        if decl.kind == "files":
            result.rejected_files = [(f.file_name, f.reason or "") for f in ctx.state.files(decl.dataset, ["rejected"])]
    except HubError as exc:
        result.error = str(exc)
        log.error("%s stopped: %s", decl.dataset, exc)
    except OSError as exc:  # disk full, permissions, a vanished folder: name the file, go on with the others
        where = f" ({exc.filename})" if exc.filename else ""
        result.error = f"{type(exc).__name__}{where}: {exc.strerror or exc}"
        log.error("%s stopped: %s", decl.dataset, result.error)
    return result


def _ingest_chunk(
    decl: SourceDecl,
    ctx: IngestContext,
    run: IncrementalRun | None,
    chunk: SourceChunk,
    result: IngestResult,
    results_dir: Path,
) -> None:
    contract = decl.contract
    before = run.next if run else None
    raw = run.accept(chunk) if run else chunk.frame
    result.rows_read += len(chunk.frame)
    result.duplicates_skipped += len(chunk.frame) - len(raw)
    start = before.cursor if before else (chunk.file.sha256 if chunk.file else None)
    batch_id = staging.batch_id_for(decl.dataset, raw.drop(columns=[SOURCE_POSITION], errors="ignore"), start)

    if not staging.is_staged(ctx.staging_root, decl.dataset, batch_id) and len(raw):
        t0 = time.perf_counter()
        conformed = conform(raw, contract)
        t1 = time.perf_counter()
        checked = validate(conformed, contract, results_dir=results_dir / batch_id)
        t2 = time.perf_counter()
        result.times.conform += t1 - t0
        result.times.validate += t2 - t1
        result.dropped_columns.update(conformed.unknown_columns)
        for problem, count in checked.field_problems.items():
            result.field_problems[problem] = result.field_problems.get(problem, 0) + count
        bad = raw.loc[checked.bad_index]
        if len(bad):
            ctx.quarantine.put(decl.dataset, batch_id, bad, checked.reasons.loc[bad.index], bad[SOURCE_POSITION])
            for reasons in checked.reasons.loc[bad.index]:
                for reason in str(reasons).split(";"):
                    result.quarantine_reasons[reason] = result.quarantine_reasons.get(reason, 0) + 1
        rows = len(checked.good) + len(bad)
        rate = len(bad) / max(rows, ctx.quarantine_window)
        if rate > ctx.max_quarantine_rate:
            raise QuarantineRateExceeded(
                f"{decl.dataset} batch {batch_id} ({chunk.position}): {len(bad)} of {rows} rows quarantined, "
                f"{rate:.1%} over a window of max({rows}, {ctx.quarantine_window}) rows exceeds the limit "
                f"{ctx.max_quarantine_rate:.1%}; the batch is not staged and the watermark is kept. "
                f"See the reasons: hub quarantine list --dataset {decl.dataset}; after fixing the source, "
                f"or to accept it: hub ingest {decl.dataset} --max-quarantine-rate {min(1.0, rate + 0.005):.3f}"
            )
        unkeyed = id_only_failures(checked.reasons.loc[bad.index], contract)
        rows_of = checked.cleaned if checked.cleaned is not None else conformed.data
        to_protect = pd.concat([checked.good, rows_of.loc[unkeyed]]) if len(unkeyed) else checked.good
        t3 = time.perf_counter()
        protected = protect(to_protect, contract, ctx.policy, ctx.keyring)
        t4 = time.perf_counter()
        manifest = {
            "dataset": decl.dataset,
            "batch_id": batch_id,
            "cursor_from": start,
            "cursor_to": chunk.cursor_max,
            "source_positions": chunk.position,
            "rows_in": len(chunk.frame),
            "staged": len(protected.data),
            "quarantined": len(bad),
            "unkeyed": len(unkeyed),
            "field_problems": dict(checked.field_problems),
            "duplicates_skipped": len(chunk.frame) - len(raw),
            "contract_version": contract.version,
            "key_versions": dict(protected.key_versions),
            "dropped_columns": sorted(set(conformed.unknown_columns) | {d for d, *_ in _names(protected.dropped)}),
            "watermark_after": _watermark_json(run.next) if run else None,
            "staged_at": time.time_ns(),
        }
        staging.write_batch(ctx.staging_root, manifest, protected.data, protected.linkage)
        result.times.protect += t4 - t3
        result.times.stage += time.perf_counter() - t4
        result.staged += len(protected.data)
        result.unkeyed += len(unkeyed)
        result.quarantined += len(bad)
        result.batches.append(batch_id)
    if run:
        run.commit()
    elif chunk.file is not None and chunk.ends_file:
        ctx.state.record_file(decl.dataset, chunk.file.sha256, chunk.file.name, "ingested")


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
