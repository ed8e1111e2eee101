"""The SQL connector and incremental state on the simulated 民政/司法 databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from connectors.chunk import SOURCE_POSITION
from connectors.errors import SourceError, StateError
from connectors.sql import SqlSource
from connectors.state import StateStore, Watermark
from simulators.advance import advance
from simulators.generate import generate

RESIDENTS = 2000
SEED = 13
DATASET = "minzheng.dibao"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One simulator data folder (SQLite databases) for the module; tests that change data use a copy."""
    folder = tmp_path_factory.mktemp("sim") / "data"
    generate(folder, residents=RESIDENTS, seed=SEED)
    return folder


def _copy(generated: Path, tmp_path: Path) -> Path:
    """A private copy of the folder, with the manifest's SQLite URLs pointing into it."""
    folder = Path(shutil.copytree(generated, tmp_path / "data"))
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace(str(generated), str(folder)))
    return folder


def _location(folder: Path, dataset: str = DATASET) -> dict[str, Any]:
    location: dict[str, Any] = json.loads((folder / "manifest.json").read_text())["datasets"][dataset][
        "location"
    ]
    return location


def _table(engine: sa.Engine, location: dict[str, Any]) -> sa.Table:
    return sa.Table(location["table"], sa.MetaData(schema=location["schema"]), autoload_with=engine)


def _shifted(moment: str, **delta: float) -> str:
    return (pd.Timestamp(moment) + pd.Timedelta(**delta)).strftime("%Y-%m-%d %H:%M:%S")


def _run(source: SqlSource, state: StateStore) -> tuple[pd.DataFrame, int]:
    """One incremental run as the pipeline does it: read from the watermark, drop re-reads, advance."""
    job = state.begin(source.dataset, source.cursor_col, source.pk_cols, lag=source.lag)
    fresh = [job.accept(chunk) for chunk in source.read(since=job.since)]
    job.commit()  # after the staged batch is durably written
    return pd.concat(fresh, ignore_index=True), job.rows_read


def _incremental_scenario(
    folder: Path, engine: sa.Engine, state: StateStore, sql_url: str | None = None
) -> None:
    """Full read; unchanged re-run; a change, a late update inside the lag, one older; then ``advance``."""
    location = _location(folder)
    source = SqlSource(DATASET, engine, table=location["table"], schema=location["schema"], chunk_rows=40)
    table = _table(engine, location)
    with engine.connect() as conn:
        original = pd.DataFrame(conn.execute(sa.select(table).order_by(table.c.updated_at)).mappings().all())
    first, _ = _run(source, state)
    assert len(first) == len(original) and set(first["member_id"]) == set(original["member_id"])
    again, reread = _run(source, state)
    assert reread > 0 and again.empty  # the lag window is read again, and all of it was seen

    top = str(original["updated_at"].max())
    changed, late, too_late = original["member_id"].iloc[:3]
    with engine.begin() as conn:
        for member, values in [
            (changed, {"status": "停保", "updated_at": _shifted(top, minutes=1)}),
            (late, {"updated_at": _shifted(top, minutes=-4)}),  # a late update, inside the lag
            (too_late, {"updated_at": _shifted(top, minutes=-30)}),  # older than the lag: not caught
        ]:
            conn.execute(sa.update(table).where(table.c.member_id == member).values(**values))
    third, _ = _run(source, state)
    assert sorted(third["member_id"]) == sorted([changed, late])
    assert third.loc[third["member_id"] == changed, "status"].item() == "停保"
    assert _run(source, state)[0].empty
    mark = state.watermark(DATASET)
    assert mark is not None and mark.cursor == _shifted(top, minutes=1)

    summary = advance(folder, changed=0.05, late=0.03, seed=2, sql_url=sql_url)
    changes = pd.read_parquet(summary.changes_path)
    changes = changes[changes["dataset"] == DATASET]
    fourth, _ = _run(source, state)
    assert sorted(fourth["member_id"]) == sorted(changes["record_id"])
    assert _run(source, state)[0].empty


def test_sqlite_full_read_streams_in_keyset_order(generated: Path) -> None:
    location = _location(generated)
    source = SqlSource.from_location(DATASET, location, chunk_rows=50)
    chunks = list(source.read())
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    rows = len(frame)
    assert [len(c) for c in chunks] == [50] * (rows // 50) + ([rows % 50] if rows % 50 else [])
    assert frame["member_id"].is_unique
    assert frame[["updated_at", "member_id"]].apply(tuple, axis=1).is_monotonic_increasing
    assert frame[SOURCE_POSITION].str.fullmatch(r"dibao_member rowid \d+").all()
    assert all(str(t) == "string" for t in frame.dtypes)
    assert chunks[0].cursor_max == frame["updated_at"].iloc[49]
    # a read resumed from a chunk's position continues right after it
    after = json.loads(chunks[1].position)["after"]
    rest = pd.concat([c.frame for c in source.read(after=after)], ignore_index=True)
    assert rest["member_id"].tolist() == frame["member_id"].iloc[100:].tolist()
    # and the other tables of the simulated systems read the same way
    for dataset in ("minzheng.relief", "sifa.corrections"):
        other = SqlSource.from_location(dataset, _location(generated, dataset))
        assert sum(len(c) for c in other.read()) > 0


def test_sqlite_incremental_state(generated: Path, tmp_path: Path) -> None:
    folder = _copy(generated, tmp_path)
    engine = sa.create_engine(_location(folder)["url"])
    try:
        _incremental_scenario(folder, engine, StateStore(f"sqlite:///{tmp_path / 'hub.db'}"))
    finally:
        engine.dispose()


def test_missing_table_and_columns_are_named(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(SourceError, match=r"sifa\.corrections sqjz_dx: table not found"):
        list(SqlSource("sifa.corrections", engine).read())
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE sqjz_dx (jzid TEXT)"))
    with pytest.raises(SourceError, match=r"missing key columns \['updated_at'\]"):
        list(SqlSource("sifa.corrections", engine).read())
    engine.dispose()


def test_sql_source_from_airflow_connection(generated: Path) -> None:
    database = sa.engine.make_url(_location(generated)["url"]).database
    conn = json.dumps({"conn_type": "sqlite", "host": database})
    rows = sum(len(c) for c in SqlSource(DATASET, airflow_conn=conn).read())
    assert rows == json.loads((generated / "manifest.json").read_text())["datasets"][DATASET]["rows"]


@pytest.mark.postgres
def test_postgres_incremental_state_with_server_side_cursor(pg_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    generate(folder, residents=RESIDENTS, seed=SEED, sql_url=pg_url)
    engine = sa.create_engine(pg_url)
    try:
        _incremental_scenario(folder, engine, StateStore(engine), sql_url=pg_url)
        # while a read is paused between chunks, the server holds a cursor and is asked for the next rows
        source = SqlSource(DATASET, engine, schema="minzheng", chunk_rows=50)
        reader = source.read()
        first = next(reader)
        assert first.frame[SOURCE_POSITION].str.fullmatch(r"dibao_member ctid \(\d+,\d+\)").all()
        with engine.connect() as conn:
            queries = (
                conn.execute(
                    sa.text(
                        "SELECT query FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                .scalars()
                .all()
            )
        assert any(q.startswith("FETCH FORWARD") for q in queries), queries
        rows = json.loads((folder / "manifest.json").read_text())["datasets"][DATASET]["rows"]
        assert sum(len(c) for c in reader) == rows - 50
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_state_store(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        store = StateStore(engine)
        StateStore(engine)  # tables exist: creating again is a no-op
        mark = Watermark("2026-10-31T23:50:00", {"d" * 32: "2026-10-31T23:45:00"}, '{"page": 3}')
        store.advance("gongan.hukou", mark)
        assert StateStore(engine).watermark("gongan.hukou") == mark
        with pytest.raises(StateError, match="backwards"):
            store.advance("gongan.hukou", Watermark("2026-10-01T00:00:00"))
        store.record_file("jisheng.births", "a" * 64, "births_20261025.csv", "ingested")
        store.record_file("jisheng.births", "b" * 64, "births_20261026.csv", "rejected", "ragged rows")
        assert store.file_ingested("jisheng.births", "a" * 64)
        assert not store.file_ingested("jisheng.births", "b" * 64)
        assert store.file_known("jisheng.births", "b" * 64)
        assert [f.reason for f in store.files("jisheng.births", ["rejected"])] == ["ragged rows"]
    finally:
        engine.dispose()
