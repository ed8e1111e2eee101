"""One publish, one transaction: diff the built state against the database, merge, log every change.

For each table the database's (key, row_hash) pairs are read, compared in DuckDB with the new state, and only
the difference is written: rows to insert or update through ``INSERT … ON CONFLICT DO UPDATE`` (COPY into
a temporary table first on PostgreSQL), rows to delete by key. An empty table is loaded by COPY straight
into it with its indexes built after. Every written row gets a change-log row (table, key, operation, the
row's community), and the publish a ``publish_batch`` row. A publish that finds nothing to change writes
nothing at all, so publishing the same staged batches twice leaves every table identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from linkage import store as identity
from privacy.keyring import Keyring
from privacy.operators import seal_array
from privacy.policy import Policy
from publish.build import HOUSEHOLD_TABLES, Batch, Builder, Changes
from publish.state_cache import TableStates, publish_mark, read_lineage
from schemas.base import HubError
from schemas.bulk import delete_keys, qualified, read_arrow, upsert_arrow, write_arrow
from schemas.contract import Contract
from schemas.migrate import prepared
from schemas.unified import published_tables, table

log = logging.getLogger(__name__)

#: sealed columns (randomised AEAD) -> the unified field whose policy domain keys them
SEALED: dict[str, dict[str, str]] = {
    "sensitive.person_contact": {"name_enc": "person.name", "phone_enc": "person.phone"},
    "sensitive.community_correction": {
        "correction_type_enc": "community_correction.correction_type",
        "start_date_enc": "community_correction.start_date",
        "end_date_enc": "community_correction.end_date",
    },
}
_LOCK = 7_402_100  # pg_advisory_xact_lock id: one publish at a time per database


class PublishError(HubError):
    """A publish cannot run (the message says what to do)."""


@dataclass
class TableChange:
    """What one publish did to one table."""

    table: str
    rows: int
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    seconds: float = 0.0
    loaded: bool = False  # loaded whole into an empty table: one change-log row 'load'
    load_seconds: float = 0.0  # of ``seconds``, writing to the database (the rest: building, diffing, sealing)

    @property
    def changes(self) -> int:
        """Change-log rows written for the table."""
        return 1 if self.loaded else self.inserted + self.updated + self.deleted


@dataclass
class PublishResult:
    """The outcome of ``publish``: the batch id (None when nothing changed) and per-table counts."""

    publish_id: int | None
    tables: list[TableChange]
    records_read: int
    unlinked: dict[str, int]
    rekeyed: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    scoped: bool = False  # built for the persons changed since the last publish only (``records_read`` theirs)

    @property
    def changes(self) -> int:
        """All change-log rows of this publish."""
        return sum(t.changes for t in self.tables)

    def summary(self) -> dict[str, Any]:
        """Counts only, for the publish batch row and logs."""
        return {
            "tables": {
                t.table: {"rows": t.rows, "insert": t.inserted, "update": t.updated, "delete": t.deleted}
                for t in self.tables
            },
            "records_read": self.records_read,
            "unlinked": self.unlinked,
            "rekeyed": self.rekeyed,
        }


def _pk(t: sa.Table) -> list[str]:
    return [c.name for c in t.primary_key.columns]


def _joined(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """The key columns as one text, '|'-joined (the change log's row key and the seal's context)."""
    first = frame[columns[0]].astype("string")
    return first.str.cat([frame[c].astype("string") for c in columns[1:]], sep="|") if len(columns) > 1 else first


def _seal(name: str, rows: pa.Table, keyring: Keyring, policy: Policy) -> pa.Table:
    """Seal a table's sealed columns (randomised, bound to the row key) on the rows about to be written."""
    columns = SEALED.get(name)
    if not columns or rows.num_rows == 0:
        return rows
    pk = _pk(table(name))
    context = _joined(rows.select(pk).to_pandas(), pk).tolist()
    for column, unified in columns.items():
        rule = policy.fields.get(unified)
        domain = rule.treatment.arg if rule is not None and rule.treatment.arg else unified.replace(".", "_")
        sealed = seal_array(rows.column(column), keyring, domain, context)
        rows = rows.set_column(rows.schema.get_field_index(column), column, sealed)
    return rows


def read_identity(conn: sa.Connection, state: Path | None = None) -> tuple[pa.Table, pa.Table, pa.Table, int | None]:
    """Lineage, merged keys, identity events and the last link run, from the identity index.

    With ``state`` (a private folder), the lineage comes from the copy kept there plus the rows of later link
    runs (``publish.state_cache.read_lineage``).
    """
    lineage = read_lineage(conn, state)
    merged = read_arrow(
        conn,
        "SELECT person_key, merged_into FROM link_person WHERE merged_into IS NOT NULL",
        ("person_key", "merged_into"),
    )
    events = read_arrow(
        conn,
        "SELECT seq, kind, person_key, survivor_key, created_at FROM link_event",
        ("seq", "kind", "person_key", "survivor_key", "created_at"),
    )
    run = conn.execute(sa.select(sa.func.max(identity.link_run.c.run_id))).scalar()
    return lineage, merged, events, run


def _diff(con: duckdb.DuckDBPyConnection, name: str, new: pa.Table, old: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(rows to write with their ``_op``, keys to delete with their community) for one table."""
    t = table(name)
    pk = _pk(t)
    con.register("_new", new)
    con.register("_old", old)
    match = " AND ".join(f"CAST(n.{c} AS VARCHAR) = CAST(o.{c} AS VARCHAR)" for c in pk)
    changed = con.sql(
        f"SELECT n.*, CASE WHEN o.row_hash IS NULL THEN 'insert' ELSE 'update' END AS _op "
        f"FROM _new n LEFT JOIN _old o ON {match} WHERE o.row_hash IS DISTINCT FROM n.row_hash "
        f"ORDER BY {', '.join(f'n.{c}' for c in pk)}"
    ).to_arrow_table()
    community = "o.community_code" if "community_code" in old.column_names else "NULL::VARCHAR"
    gone = con.sql(
        f"SELECT {', '.join(f'o.{c}' for c in pk)}, {community} AS community_code FROM _old o "
        f"ANTI JOIN _new n ON {match} ORDER BY {', '.join(f'o.{c}' for c in pk)}"
    ).to_arrow_table()
    con.unregister("_new")
    con.unregister("_old")
    return changed, gone


def _log_rows(name: str, pk: Sequence[str], rows: pa.Table, operations: pa.Array | str) -> pd.DataFrame:
    key = _joined(rows.select(list(pk)).to_pandas(), pk)
    community = rows.column("community_code").to_pandas() if "community_code" in rows.column_names else None
    return pd.DataFrame(
        {
            "table_name": name,
            "row_key": key.to_numpy(),
            "operation": operations if isinstance(operations, str) else operations.to_pandas().to_numpy(),
            "community_code": community.to_numpy() if community is not None else None,
        }
    )


#: what the kept copy of a release table holds besides its columns: the person (never published there) and a
#: hash of the row without the consumer's token, so the next release finds the persons whose rows changed
#: without computing every person's tokens (``publish.release``)
RELEASE_KEPT = ("person_key", "content_hash")


def kept_columns(t: sa.Table) -> list[str]:
    """What a publish compares and keeps of a table's rows: key, row hash, community, person (for a scoped diff)."""
    extra = [c for c in ("community_code", "person_key") if c in t.c and c not in _pk(t)]
    if t.schema == "release":
        extra += RELEASE_KEPT
    return [*_pk(t), "row_hash", *extra]


def _read_old(conn: sa.Connection, t: sa.Table) -> pa.Table:
    cols = [c for c in kept_columns(t) if c in t.c]
    query = f"SELECT {', '.join(cols)} FROM {qualified(conn, t)}"
    return read_arrow(conn, query, cols).cast(pa.schema([(c, pa.string()) for c in cols]))


#: tables a scoped publish rebuilds for the persons and households in scope (identity_event is rebuilt whole)
SCOPED = tuple(t.fullname for t in published_tables() if "row_hash" in t.c and t.schema != "release"
               and t.fullname != "core.identity_event")  # fmt: skip


def _in_scope(con: duckdb.DuckDBPyConnection, name: str, kept: pa.Table, new: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(the kept rows a scoped build recomputed, the kept rows it left alone) of one table."""
    pk = _pk(table(name))
    if name in HOUSEHOLD_TABLES:
        inside = f"{pk[0]} IN (SELECT k FROM scope_{name.split('.')[1]})"
    elif "person_key" in kept.column_names:
        inside = "person_key IN (SELECT person_key FROM scope_persons)"
    else:
        inside = "false"
    con.register("_kept", kept)
    con.register("_newkeys", new.select(pk))
    match = " AND ".join(f"CAST(n.{c} AS VARCHAR) = o.{c}" for c in pk)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _scoped AS SELECT o.* FROM _kept o WHERE {inside} "
        f"UNION ALL SELECT o.* FROM _kept o SEMI JOIN _newkeys n ON {match} WHERE NOT ({inside})"
    )
    scoped = con.sql("SELECT * FROM _scoped").to_arrow_table()
    rest = con.sql(
        f"SELECT o.* FROM _kept o ANTI JOIN _scoped n ON {' AND '.join(f'n.{c} = o.{c}' for c in pk)}"
    ).to_arrow_table()
    con.execute("DROP TABLE _scoped")
    con.unregister("_kept")
    con.unregister("_newkeys")
    return scoped, rest


#: the build's DuckDB memory per staged row: 1.5 GiB held a million residents' 2.9 M staged rows (spilling past it)
_BYTES_PER_STAGED_ROW = 1536 * 2**20 / 2_900_000


def memory_for(batches: Sequence[Batch]) -> str:
    """The build's DuckDB memory limit: 1.5 GiB, or more in proportion to the staged rows (DuckDB's window over
    every record's versions does not spill all of its state: 2.2 M residents failed at 1.5 GiB)."""
    rows = sum(pq.read_metadata(b.data).num_rows for b in batches if b.data.is_file())
    return f"{max(1536, int(rows * _BYTES_PER_STAGED_ROW / 2**20) + 1)}MB"


def build_fingerprint(contracts: Mapping[str, Contract], policy: Policy) -> str:
    """SHA-256 of what shapes the built rows besides the data: the build's code, DuckDB (its hash makes the row
    hashes), the contract files and the policy file. A scoped build is used only under the same fingerprint:
    changed rules must reach every row, not only the persons changed since."""
    from publish import build

    digest = hashlib.sha256(Path(build.__file__).read_bytes())
    digest.update(duckdb.__version__.encode())
    # each file by its name and content, not its absolute path: the same rules installed in another folder (a
    # clone, an Airflow worker's image) must not make every publish a full build
    for file in sorted(
        {Path(c.path) for c in contracts.values()} | {Path(policy.path)}, key=lambda f: (f.name, str(f))
    ):
        digest.update(file.name.encode() + b"\0" + (file.read_bytes() if file.is_file() else b"?"))
    return digest.hexdigest()


def _changes(
    conn: sa.Connection, states: TableStates, batches: Sequence[Batch], active: int, fingerprint: str
) -> Changes | None:
    """What changed since the last publish, when a scoped build may be used; None for a full build.

    A scoped build needs the last publish's record of what it read, made under the same build fingerprint,
    and a matching kept copy of every table; no batch protected under an older key version (re-keying changes
    record keys); and every batch that publish read still staged."""
    last = states.scope()
    if last is None or last.get("fingerprint") != fingerprint:
        return None
    if any(v != active for b in batches for v in b.key_versions.values()):
        return None
    published = {(str(d), str(b)) for d, b in last["batches"]}
    present = {(b.dataset, b.batch_id) for b in batches}
    if not published <= present:
        return None
    if not all(states.usable(conn, table(name), kept_columns(table(name))) for name in SCOPED):
        return None
    relinked = read_arrow(
        conn,
        f"SELECT dataset, record_id FROM link_record WHERE run_id > {int(last['link_run'])}",
        ("dataset", "record_id"),
    )
    events = conn.execute(
        sa.text("SELECT person_key, survivor_key FROM link_event WHERE seq > :seq"), {"seq": int(last["event_seq"])}
    ).all()
    keys = sorted({k for row in events for k in row if k is not None})
    new = [b for b in batches if (b.dataset, b.batch_id) not in published]
    return Changes(new, relinked.cast(pa.schema([("dataset", pa.string()), ("record_id", pa.string())])), keys)


def publish(
    engine: sa.Engine,
    batches: Sequence[Batch],
    keyring: Keyring,
    policy: Policy,
    contracts: Mapping[str, Contract],
    progress: Callable[[str], None] | None = None,
    threads: int = 2,
    spill: Path | None = None,
    state: Path | None = None,
) -> PublishResult:
    """Publish the linked records of ``batches`` (staging order) into the unified model, in one transaction.

    ``spill``: a private folder the build may spill to (keeps its memory bounded at a million residents).
    ``state``: a private folder where the publish keeps copies of what it leaves in the database (each table's
    keys, row hashes and communities; the identity lineage), so the next publish does not read them back
    (``publish.state_cache``); without it everything is read from the database.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    say = progress or (lambda _stage: None)

    def lap(stage: str) -> None:
        now = time.perf_counter()
        timings[stage] = round(now - started - sum(timings.values()), 3)

    builder = Builder(contracts, policy, keyring, threads=threads, spill=spill, memory_limit=memory_for(batches))
    states = TableStates(state) if state is not None else None
    try:
        say("reading the identity index")
        with engine.connect() as raw:
            conn = prepared(raw)
            if not sa.inspect(conn).has_table("link_record"):
                raise PublishError("the hub database has no identity index: run `hub link` before `hub publish`")
            lineage, merged, events, run_id = read_identity(conn, state)
            fingerprint = build_fingerprint(contracts, policy)
            since = _changes(conn, states, batches, keyring.active_version, fingerprint) if states else None
        say("reading the staged batches" + (" of the persons changed since the last publish" if since else ""))
        builder.load(batches, lineage=lineage, events=events, merged=merged, changes=since)
        lap("read")
        say("building the published tables")
        built = builder.build()
        lap("build")
        if states is not None:
            seq = pc.max(events.column("seq").cast(pa.int64())).as_py() if events.num_rows else 0
            states.stage_scope(
                {
                    "batches": [[b.dataset, b.batch_id] for b in batches],
                    "link_run": run_id or 0,
                    "event_seq": seq,
                    "fingerprint": fingerprint,
                }
            )
        publish_id, changes = apply(
            engine, builder.con, built.tables, keyring, policy, run_id, len(batches), say, states,
            scoped=SCOPED if since is not None else (),
        )  # fmt: skip
        lap("merge")
        return PublishResult(
            publish_id, changes, built.records_read, built.unlinked, built.rekeyed, timings, scoped=since is not None
        )
    finally:
        builder.close()


def apply(
    engine: sa.Engine,
    duck: duckdb.DuckDBPyConnection,
    tables: Mapping[str, pa.Table | str],
    keyring: Keyring,
    policy: Policy,
    run_id: int | None,
    batches: int,
    say: Callable[[str], None],
    states: TableStates | None = None,
    scoped: Collection[str] = (),
) -> tuple[int | None, list[TableChange]]:
    """Merge the new state of ``tables`` (Arrow, or a DuckDB query run now) into the database in one
    transaction, with the change log. Returns the publish batch id (None when nothing differed: then
    nothing at all is written).

    A table that is empty is loaded whole: COPY with its keys and indexes built after, and one change-log
    row ``load`` (row key ``*``) that tells consumers to read the table whole, instead of a row per row.

    With ``states``, a table's old (key, row_hash, community) come from the copy the previous publish kept,
    while no publish since changed the table (``TableStates.old``); each table's new state is kept for the next
    publish once this one commits, marked with the newest publish batch it reflects.
    ``scoped``: the tables whose new states hold only the rows of the persons and households in scope (``duck``'s
    tables ``scope_persons`` and ``scope_<household table>``, as ``Builder.load`` with changes makes them); they
    are compared with the kept rows in scope, and the kept copy is the rows out of scope plus the new ones.
    """
    changes: list[TableChange] = []
    publish_id: int | None = None
    try:
        with engine.begin() as raw:
            conn = prepared(raw)
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK})")
            logs: list[pd.DataFrame] = []
            for name, state in tables.items():
                t = table(name)
                tick = time.perf_counter()
                say(f"merging {name}")
                new = duck.sql(state).to_arrow_table() if isinstance(state, str) else state
                kept = states.old(conn, t) if states is not None else None
                old = kept if kept is not None else _read_old(conn, t)
                rest = None
                if name in scoped:
                    if kept is None:
                        raise PublishError(f"{name} changed while this publish read it: run `hub publish` again")
                    old, rest = _in_scope(duck, name, kept, new)
                change = TableChange(name, new.num_rows if rest is None else new.num_rows + rest.num_rows)
                if old.num_rows == 0 and (rest is None or rest.num_rows == 0):  # the table is empty
                    if new.num_rows:
                        publish_id = publish_id or _open_batch(conn, run_id, batches, states)
                        rows = new.append_column("publish_id", pa.array([publish_id] * new.num_rows, pa.int64()))
                        rows = _seal(name, rows, keyring, policy)
                        writing = time.perf_counter()
                        write_arrow(conn, t, rows, empty=True)
                        change.load_seconds = time.perf_counter() - writing
                        change.inserted, change.loaded = new.num_rows, True
                        logs.append(_load_row(name))
                else:
                    changed, gone = _diff(duck, name, new, old)
                    if changed.num_rows or gone.num_rows:
                        publish_id = publish_id or _open_batch(conn, run_id, batches, states)
                        ops = changed.column("_op")
                        rows = changed.drop_columns(["_op"]).append_column(
                            "publish_id", pa.array([publish_id] * changed.num_rows, pa.int64())
                        )
                        rows = _seal(name, rows, keyring, policy)
                        writing = time.perf_counter()
                        delete_keys(conn, t, gone.select(_pk(t)))
                        upsert_arrow(conn, t, rows)
                        change.load_seconds = time.perf_counter() - writing
                        inserted = int(pc.sum(pc.equal(ops, "insert")).as_py() or 0)
                        change.inserted, change.updated = inserted, changed.num_rows - inserted
                        change.deleted = gone.num_rows
                        logs.append(_log_rows(name, _pk(t), changed, ops))
                        if gone.num_rows:
                            logs.append(_log_rows(name, _pk(t), gone, "delete"))
                columns = kept_columns(t)
                missing = kept is None or not set(columns) <= set(kept.column_names)
                if states is not None and (missing or change.inserted or change.updated or change.deleted):
                    whole = new.select(columns)
                    if rest is not None:
                        whole = pa.concat_tables([rest.select(columns), whole.cast(rest.select(columns).schema)])
                    # what the table holds as of the newest batch now (this publish's own once it opened one)
                    states.stage(t, whole, columns, publish_mark(conn))
                del new, old, rest  # one table's state in memory at a time
                change.seconds = round(time.perf_counter() - tick, 3)
                change.load_seconds = round(change.load_seconds, 3)
                changes.append(change)
            stale = [qualified(conn, table(c.table)) for c in changes if _stale_statistics(c)]
            if stale and conn.dialect.name == "postgresql":
                # the planner's row counts: without them the conflict views and row-level security (a join per
                # row) pick nested loops over a million rows (28 s instead of 3 s for the worklist's read)
                say("analysing the changed tables")
                conn.exec_driver_sql(f"ANALYZE {', '.join(stale)}")
            if publish_id is not None:
                say("writing the change log")
                feed = pd.concat(logs, ignore_index=True)
                feed.insert(0, "publish_id", publish_id)
                write_arrow(conn, table("core.change_log"), pa.Table.from_pandas(feed, preserve_index=False))
                counts = {
                    c.table: {"rows": c.rows, "insert": c.inserted, "update": c.updated, "delete": c.deleted}
                    for c in changes
                }
                batch = table("core.publish_batch")
                conn.execute(
                    sa.update(batch)
                    .where(batch.c.publish_id == publish_id)
                    .values(
                        finished_at=identity.now(),
                        changes=len(feed),
                        summary=json.dumps({"tables": counts}, sort_keys=True),
                    )
                )
            if states is not None:
                states.written()  # the kept copies are on disk before the transaction commits
    except BaseException:
        if states is not None:
            states.discard()
        raise
    if states is not None:
        states.commit()
    return publish_id, changes


def _stale_statistics(change: TableChange) -> bool:
    """Whether a table's planner statistics are stale after this write: loaded whole, or a tenth of it changed
    (autovacuum's default analyse threshold, which it would reach only later)."""
    return change.loaded or (change.inserted + change.updated + change.deleted) * 10 > max(change.rows, 1)


LOAD = "load"  # change-log operation: the table was loaded whole (row key '*'); read it whole


def _load_row(name: str) -> pd.DataFrame:
    return pd.DataFrame({"table_name": [name], "row_key": ["*"], "operation": [LOAD], "community_code": [None]})


def _open_batch(conn: sa.Connection, run_id: int | None, batches: int, states: TableStates | None) -> int:
    """This publish's batch row (its summary is written when the merge ends); the kept copies skip it."""
    inserted = conn.execute(
        sa.insert(table("core.publish_batch")).values(
            started_at=identity.now(), link_run_id=run_id, staged_batches=batches, changes=0
        )
    )
    publish_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
    if states is not None:
        states.opened = publish_id
    return publish_id


def table_checksums(engine: sa.Engine, tables: Sequence[sa.Table] | None = None) -> dict[str, str]:
    """SHA-256 of every published table's rows in key order (what "nothing changed" is tested against)."""
    from schemas.unified import published_tables

    out = {}
    with engine.connect() as raw:
        conn = prepared(raw)
        for t in tables or published_tables():
            digest = hashlib.sha256()
            for row in conn.execute(sa.select(t).order_by(*t.primary_key.columns)):
                digest.update(repr(tuple(row)).encode())
            out[t.fullname] = digest.hexdigest()
    return out
