"""Incremental ingest state in the hub database: cursor watermarks with boundary de-duplication, file hashes.

A watermark is the largest cursor value staged for a dataset plus digests of the (primary key, cursor) pairs
staged at or within the lag before it. The next run re-reads from ``cursor - lag`` so late updates inside the
lag come through, and the digests drop the rows it already staged. Tables are SQLAlchemy Core, created if
missing, and work on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import pandas as pd
import sqlalchemy as sa

from connectors.chunk import SourceChunk, cursor_max
from connectors.errors import StateError

#: Default lag: how far before the watermark each incremental run re-reads, to catch late-arriving updates.
DEFAULT_LAG = timedelta(minutes=10)

FileStatus = Literal["ingested", "rejected"]
FILE_STATUSES: tuple[str, ...] = ("ingested", "rejected")

metadata = sa.MetaData()

ingest_watermark = sa.Table(
    "ingest_watermark",
    metadata,
    sa.Column("dataset", sa.String(100), primary_key=True),
    sa.Column(
        "cursor_value",
        sa.String(64),
        nullable=False,
        comment="largest staged cursor value, as the source writes it",
    ),
    sa.Column("position", sa.Text, nullable=True, comment="last chunk position (JSON), for operators"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    comment="per dataset: how far incremental ingest has durably staged",
)

ingest_boundary_key = sa.Table(
    "ingest_boundary_key",
    metadata,
    sa.Column("dataset", sa.String(100), primary_key=True),
    sa.Column("record_digest", sa.String(32), primary_key=True, comment="sha256(primary key, cursor) prefix"),
    sa.Column("cursor_value", sa.String(64), nullable=False),
    comment="records staged at or within the lag before the watermark; re-reads of them are dropped",
)

ingest_file = sa.Table(
    "ingest_file",
    metadata,
    sa.Column("dataset", sa.String(100), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    comment="dropped files by content hash: each is ingested once, or set aside whole with its reason",
)


def shift_back(cursor: str, lag: timedelta) -> str:
    """``cursor - lag`` written in the cursor's own format (``T`` or space separator, same precision)."""
    try:
        moment = datetime.fromisoformat(cursor)
    except ValueError as exc:
        raise StateError(
            f"cursor value is not an ISO date-time; lag needs one (length {len(cursor)})"
        ) from exc
    earlier = moment - lag
    if len(cursor) == 10:
        return earlier.date().isoformat()
    sep = "T" if "T" in cursor else " "
    spec = "seconds" if len(cursor) == 19 else "auto"
    return earlier.isoformat(sep=sep, timespec=spec)


def record_digests(frame: pd.DataFrame, cursor_col: str, pk_cols: Sequence[str]) -> pd.Series:
    """Digest of each row's (primary key, cursor value): the boundary de-duplication key, no plaintext."""
    if frame.empty:
        return pd.Series([], index=frame.index, dtype="string")
    key = frame[pk_cols[0]].astype("string").fillna("")
    for col in pk_cols[1:]:
        key = key + "\x1f" + frame[col].astype("string").fillna("")
    key = key + "\x1e" + frame[cursor_col].astype("string").fillna("")
    digests = [hashlib.sha256(k.encode()).hexdigest()[:32] for k in key.tolist()]
    return pd.Series(digests, index=frame.index, dtype="string")


@dataclass(frozen=True)
class Watermark:
    """Largest staged cursor value and the digests of records staged within the lag before it."""

    cursor: str
    boundary: Mapping[str, str] = field(default_factory=dict)  # record digest -> cursor value
    position: str | None = None

    def since(self, lag: timedelta = DEFAULT_LAG) -> str:
        """Where the next run starts reading (inclusive): the watermark minus the lag."""
        return shift_back(self.cursor, lag)

    def including(
        self,
        frame: pd.DataFrame,
        cursor_col: str,
        pk_cols: Sequence[str],
        lag: timedelta = DEFAULT_LAG,
        position: str | None = None,
    ) -> Watermark:
        """This watermark moved over a staged frame: new maximum, boundary pruned to the lag window."""
        folded = fold_watermark(self, frame, cursor_col, pk_cols, lag, position)
        assert folded is not None  # folding into an existing mark always gives a mark
        return folded


def fold_watermark(
    previous: Watermark | None,
    frame: pd.DataFrame,
    cursor_col: str,
    pk_cols: Sequence[str],
    lag: timedelta = DEFAULT_LAG,
    position: str | None = None,
) -> Watermark | None:
    """Fold a staged frame into a watermark (None before any row); pure, so callers advance when ready."""
    top = cursor_max(frame, cursor_col)
    if top is None:
        return previous
    if previous is not None and previous.cursor >= top:
        top = previous.cursor
    floor = shift_back(top, lag)
    cursors = frame[cursor_col].astype("string")
    recent = frame[(cursors >= floor).fillna(False).to_numpy(dtype=bool)]
    boundary = {d: c for d, c in (previous.boundary.items() if previous else ()) if c >= floor}
    boundary.update(
        zip(record_digests(recent, cursor_col, pk_cols), recent[cursor_col].astype(str), strict=True)
    )
    return Watermark(
        top, boundary, position if position is not None else (previous.position if previous else None)
    )


def drop_seen(
    previous: Watermark | None, frame: pd.DataFrame, cursor_col: str, pk_cols: Sequence[str]
) -> pd.DataFrame:
    """Rows of a re-read whose (pk, cursor) were not staged before; only rows at or below the mark qualify."""
    if previous is None or not previous.boundary or frame.empty:
        return frame
    at_or_below = (frame[cursor_col].astype("string") <= previous.cursor).fillna(False).to_numpy(dtype=bool)
    if not at_or_below.any():
        return frame
    digests = record_digests(frame[at_or_below], cursor_col, pk_cols)
    seen = pd.Series(False, index=frame.index)
    seen[at_or_below] = digests.isin(previous.boundary.keys()).to_numpy(dtype=bool)
    return frame[~seen.to_numpy(dtype=bool)]


@dataclass(frozen=True)
class FileRecord:
    """One dropped file the hub has handled: ingested, or set aside whole with its reason."""

    dataset: str
    sha256: str
    file_name: str
    status: str
    reason: str | None
    recorded_at: datetime


class StateStore:
    """Incremental state for every dataset, in the hub database (tables created if missing)."""

    def __init__(self, engine: sa.Engine | str, create: bool = True) -> None:
        self.engine = sa.create_engine(engine) if isinstance(engine, str) else engine
        if create:
            metadata.create_all(self.engine, checkfirst=True)
        self._marks: dict[str, Watermark | None] = {}

    # -- cursor watermarks -------------------------------------------------------------------------------

    def watermark(self, dataset: str) -> Watermark | None:
        """The durable watermark of a dataset, or None before its first staged batch."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(ingest_watermark.c.cursor_value, ingest_watermark.c.position).where(
                    ingest_watermark.c.dataset == dataset
                )
            ).first()
            if row is None:
                mark = None
            else:
                keys = conn.execute(
                    sa.select(ingest_boundary_key.c.record_digest, ingest_boundary_key.c.cursor_value).where(
                        ingest_boundary_key.c.dataset == dataset
                    )
                ).all()
                mark = Watermark(
                    row.cursor_value, {k.record_digest: k.cursor_value for k in keys}, row.position
                )
        self._marks[dataset] = mark
        return mark

    def unseen(
        self, dataset: str, frame: pd.DataFrame, cursor_col: str, pk_cols: Sequence[str]
    ) -> pd.DataFrame:
        """Drop rows whose (pk, cursor value) were already staged (the lag re-read); keeps changed records."""
        mark = self._marks[dataset] if dataset in self._marks else self.watermark(dataset)
        return drop_seen(mark, frame, cursor_col, pk_cols)

    def advance(self, dataset: str, watermark: Watermark) -> None:
        """Store a new watermark in one transaction; call only after its staged batch is durably written."""
        with self.engine.begin() as conn:
            current = conn.execute(
                sa.select(ingest_watermark.c.cursor_value)
                .where(ingest_watermark.c.dataset == dataset)
                .with_for_update()
            ).scalar_one_or_none()
            if current is not None and watermark.cursor < current:
                raise StateError(
                    f"{dataset}: watermark would move backwards; another run may have advanced it"
                )
            conn.execute(sa.delete(ingest_watermark).where(ingest_watermark.c.dataset == dataset))
            conn.execute(sa.delete(ingest_boundary_key).where(ingest_boundary_key.c.dataset == dataset))
            conn.execute(
                sa.insert(ingest_watermark).values(
                    dataset=dataset,
                    cursor_value=watermark.cursor,
                    position=watermark.position,
                    updated_at=datetime.now(UTC),
                )
            )
            if watermark.boundary:
                conn.execute(
                    sa.insert(ingest_boundary_key),
                    [
                        {"dataset": dataset, "record_digest": d, "cursor_value": c}
                        for d, c in watermark.boundary.items()
                    ],
                )
        self._marks[dataset] = watermark

    def reset(self, dataset: str) -> None:
        """Forget a dataset's watermark so the next run reads everything again (a full reload)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(ingest_watermark).where(ingest_watermark.c.dataset == dataset))
            conn.execute(sa.delete(ingest_boundary_key).where(ingest_boundary_key.c.dataset == dataset))
        self._marks[dataset] = None

    def begin(
        self, dataset: str, cursor_col: str, pk_cols: Sequence[str], lag: timedelta = DEFAULT_LAG
    ) -> IncrementalRun:
        """Start one incremental run of a dataset from its durable watermark."""
        return IncrementalRun(self, dataset, cursor_col, tuple(pk_cols), lag, self.watermark(dataset))

    # -- dropped files -----------------------------------------------------------------------------------

    def file_status(self, dataset: str, sha256: str) -> str | None:
        """``"ingested"``, ``"rejected"`` or None for a file content hash never handled."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(ingest_file.c.status).where(
                    ingest_file.c.dataset == dataset, ingest_file.c.sha256 == sha256
                )
            ).scalar_one_or_none()

    def file_ingested(self, dataset: str, sha256: str) -> bool:
        """Whether a file with this content hash was already ingested for the dataset."""
        return self.file_status(dataset, sha256) == "ingested"

    def file_known(self, dataset: str, sha256: str) -> bool:
        """Whether a file with this content hash was handled (ingested or rejected): skip it on later runs."""
        return self.file_status(dataset, sha256) is not None

    def record_file(
        self, dataset: str, sha256: str, name: str, status: str, reason: str | None = None
    ) -> None:
        """Record a file as ingested (after its rows are durably staged) or rejected with its reason."""
        if status not in FILE_STATUSES:
            raise StateError(f"file status must be one of {FILE_STATUSES}, not {status!r}")
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(ingest_file).where(ingest_file.c.dataset == dataset, ingest_file.c.sha256 == sha256)
            )
            conn.execute(
                sa.insert(ingest_file).values(
                    dataset=dataset,
                    sha256=sha256,
                    file_name=name,
                    status=status,
                    reason=reason,
                    recorded_at=datetime.now(UTC),
                )
            )

    def files(self, dataset: str, statuses: Iterable[str] = FILE_STATUSES) -> list[FileRecord]:
        """Files handled for a dataset, in name order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(ingest_file)
                .where(ingest_file.c.dataset == dataset, ingest_file.c.status.in_(list(statuses)))
                .order_by(ingest_file.c.file_name, ingest_file.c.sha256)
            ).all()
        return [FileRecord(r.dataset, r.sha256, r.file_name, r.status, r.reason, r.recorded_at) for r in rows]


@dataclass
class IncrementalRun:
    """One run over a cursor dataset: filters re-read rows and folds staged ones into the next watermark."""

    store: StateStore
    dataset: str
    cursor_col: str
    pk_cols: tuple[str, ...]
    lag: timedelta
    previous: Watermark | None
    next: Watermark | None = None
    rows_read: int = 0
    rows_fresh: int = 0
    committed: Watermark | None = None

    def __post_init__(self) -> None:
        self.next = self.committed = self.previous

    @property
    def since(self) -> str | None:
        """Inclusive lower bound for the source query: previous watermark minus the lag (None: read all)."""
        return self.previous.since(self.lag) if self.previous else None

    def accept(self, chunk: SourceChunk) -> pd.DataFrame:
        """The chunk's rows not staged before; the chunk counts toward the next watermark."""
        fresh = drop_seen(self.previous, chunk.frame, self.cursor_col, self.pk_cols)
        self.next = fold_watermark(
            self.next, chunk.frame, self.cursor_col, self.pk_cols, self.lag, chunk.position
        )
        self.rows_read += len(chunk.frame)
        self.rows_fresh += len(fresh)
        return fresh

    def commit(self, mark: Watermark | None = None) -> None:
        """Advance the durable watermark; call after every accepted frame is durably staged.

        May be called after each staged chunk; the re-read filter keeps using the run's starting mark.
        ``mark`` is ``next`` as it stood after a given chunk was accepted, for a run that reads ahead of
        what is staged (the parallel runner); by default the whole of ``next``.
        """
        target = self.next if mark is None else mark
        if target is not None and target != self.committed:
            self.store.advance(self.dataset, target)
            self.committed = target
