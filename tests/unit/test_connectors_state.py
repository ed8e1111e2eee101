"""Incremental state on a real SQLite database: watermarks, lag re-reads with boundary de-dup, file hashes."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from connectors.chunk import SourceChunk
from connectors.errors import StateError
from connectors.state import (
    IncrementalRun,
    StateStore,
    Watermark,
    drop_seen,
    fold_watermark,
    record_digests,
    shift_back,
)

DATASET = "gongan.hukou"
PK = ("rkid",)


def _frame(rows: list[tuple[str, str]], cursor: str = "gxsj") -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["rkid", cursor]).astype("string")


def _chunk(rows: list[tuple[str, str]]) -> SourceChunk:
    frame = _frame(rows)
    return SourceChunk(DATASET, frame, json.dumps({"page": 1}), str(frame["gxsj"].max()))


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'hub.db'}")


def test_shift_back_keeps_the_source_format() -> None:
    lag = timedelta(minutes=10)
    assert shift_back("2026-10-31T23:55:00", lag) == "2026-10-31T23:45:00"
    assert shift_back("2026-11-01 00:05:00", lag) == "2026-10-31 23:55:00"
    assert shift_back("2026-11-01T00:05:00.250000", lag) == "2026-10-31T23:55:00.250000"
    assert shift_back("2026-11-01", timedelta(days=1)) == "2026-10-31"
    with pytest.raises(StateError, match="not an ISO date-time"):
        shift_back("42", lag)


def test_fold_keeps_only_keys_inside_the_lag_window() -> None:
    frame = _frame([("a", "2026-10-31T23:00:00"), ("b", "2026-10-31T23:52:00"), ("c", "2026-11-01T00:00:00")])
    mark = fold_watermark(None, frame, "gxsj", PK, timedelta(minutes=10), position="p1")
    assert mark is not None and mark.cursor == "2026-11-01T00:00:00" and mark.position == "p1"
    assert sorted(mark.boundary.values()) == ["2026-10-31T23:52:00", "2026-11-01T00:00:00"]
    later = mark.including(_frame([("d", "2026-11-01T00:05:00")]), "gxsj", PK, timedelta(minutes=10))
    assert sorted(later.boundary.values()) == ["2026-11-01T00:00:00", "2026-11-01T00:05:00"]
    assert later.position == "p1"  # no new position given: the last one stays
    assert fold_watermark(None, frame.iloc[0:0], "gxsj", PK) is None


def test_drop_seen_keeps_changes_and_drops_re_reads() -> None:
    staged = _frame([("a", "2026-10-31T23:55:00"), ("b", "2026-11-01T00:00:00")])
    mark = fold_watermark(None, staged, "gxsj", PK)
    reread = _frame(
        [
            ("a", "2026-10-31T23:55:00"),  # seen
            ("b", "2026-11-01T00:00:00"),  # seen, at the mark
            ("c", "2026-10-31T23:58:00"),  # late arrival inside the lag
            ("a", "2026-11-01T00:01:00"),  # changed again: new cursor value
        ]
    )
    fresh = drop_seen(mark, reread, "gxsj", PK)
    assert fresh.values.tolist() == [["c", "2026-10-31T23:58:00"], ["a", "2026-11-01T00:01:00"]]
    assert drop_seen(None, reread, "gxsj", PK) is reread


def test_digests_cover_composite_keys_and_carry_no_plaintext() -> None:
    frame = pd.DataFrame({"k1": ["甲", "甲"], "k2": ["乙", "丙"], "t": ["x", "x"]}, dtype="string")
    digests = record_digests(frame, "t", ("k1", "k2"))
    assert digests.str.fullmatch(r"[0-9a-f]{32}").all() and digests.nunique() == 2  # hex, not the keys
    swapped = frame.rename(columns={"k1": "k2", "k2": "k1"})
    assert not record_digests(swapped, "t", ("k1", "k2")).isin(digests).any()


def test_store_round_trip_and_unchanged_rerun_yields_nothing(store: StateStore) -> None:
    assert store.watermark(DATASET) is None
    run = store.begin(DATASET, "gxsj", PK)
    assert run.since is None
    first = _chunk([("a", "2026-10-31T23:40:00"), ("b", "2026-10-31T23:55:00"), ("c", "2026-11-01T00:00:00")])
    assert len(run.accept(first)) == 3
    run.commit()

    again = StateStore(store.engine).begin(DATASET, "gxsj", PK)
    assert again.since == "2026-10-31T23:50:00"
    assert again.accept(_chunk([("b", "2026-10-31T23:55:00"), ("c", "2026-11-01T00:00:00")])).empty
    again.commit()
    mark = store.watermark(DATASET)
    assert mark is not None and mark.cursor == "2026-11-01T00:00:00" and mark.position == '{"page": 1}'

    # the store-level API does the same for callers that keep their own watermark
    reread = _frame([("b", "2026-10-31T23:55:00"), ("b", "2026-11-01T00:03:00")])
    assert store.unseen(DATASET, reread, "gxsj", PK)["gxsj"].tolist() == ["2026-11-01T00:03:00"]


def test_advance_is_atomic_and_never_moves_backwards(store: StateStore) -> None:
    store.advance(DATASET, Watermark("2026-11-01T00:00:00", {"f" * 32: "2026-11-01T00:00:00"}))
    with pytest.raises(StateError, match="backwards"):
        store.advance(DATASET, Watermark("2026-10-01T00:00:00", {"e" * 32: "2026-10-01T00:00:00"}))
    mark = store.watermark(DATASET)
    assert mark is not None and dict(mark.boundary) == {"f" * 32: "2026-11-01T00:00:00"}
    store.reset(DATASET)
    assert store.watermark(DATASET) is None
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ingest_boundary_key")).scalar_one() == 0


def test_run_without_rows_does_not_write(store: StateStore) -> None:
    run: IncrementalRun = store.begin(DATASET, "gxsj", PK)
    run.accept(_chunk([]))
    run.commit()
    assert store.watermark(DATASET) is None and run.rows_read == 0


def test_file_records(store: StateStore) -> None:
    sha = "0" * 64
    assert store.file_status("jisheng.births", sha) is None
    store.record_file("jisheng.births", sha, "births_20261025.csv", "rejected", "ragged rows")
    assert store.file_known("jisheng.births", sha) and not store.file_ingested("jisheng.births", sha)
    store.record_file("jisheng.births", sha, "births_20261025.csv", "ingested")  # steward re-admitted it
    assert store.file_ingested("jisheng.births", sha)
    assert [(f.file_name, f.status, f.reason) for f in store.files("jisheng.births")] == [
        ("births_20261025.csv", "ingested", None)
    ]
    assert store.files("canlian.disability") == []
    with pytest.raises(StateError, match="file status"):
        store.record_file("jisheng.births", sha, "x.csv", "done")
