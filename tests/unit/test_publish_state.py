"""The publish's kept table copies: written in a thread, in place only after the commit, used while current."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from publish.state_cache import TableStates, publish_mark
from schemas.migrate import prepared, upgrade
from schemas.unified import table


def _state(n: int) -> pa.Table:
    return pa.table({"person_key": [f"p{i:031d}" for i in range(n)], "row_hash": [f"{i:016x}" for i in range(n)]})


def test_staged_copies_appear_on_commit_and_vanish_on_discard(tmp_path: Path) -> None:
    person, contact = table("core.person"), table("sensitive.person_contact")
    states = TableStates(tmp_path)
    states.stage(person, _state(3), ["person_key", "row_hash"], "7@2026-12-01 00:00:00")
    states.stage(contact, _state(2), ["person_key", "row_hash"], "7@2026-12-01 00:00:00")
    states.written()
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == []  # only temporary files before the commit
    states.commit()
    kept = pq.read_table(tmp_path / "core.person.parquet")
    assert kept.num_rows == 3 and kept.schema.metadata[b"hub.mark"] == b"7@2026-12-01 00:00:00"
    assert pq.read_table(tmp_path / "sensitive.person_contact.parquet").num_rows == 2

    states.stage(person, _state(5), ["person_key", "row_hash"], "8@2026-12-01 00:00:01")
    states.discard()
    assert pq.read_table(tmp_path / "core.person.parquet").num_rows == 3  # the committed copy stays
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def _batch(conn: sa.Connection, changed: dict[str, int] | None, started: datetime) -> None:
    """A publish batch as apply() leaves it: its summary counts each table's changes (None: no summary)."""
    summary = None
    if changed is not None:
        summary = json.dumps(
            {"tables": {n: {"rows": 9, "insert": k, "update": 0, "delete": 0} for n, k in changed.items()}}
        )
    conn.execute(
        sa.insert(table("core.publish_batch")).values(started_at=started, staged_batches=1, changes=0, summary=summary)
    )


def test_a_kept_copy_is_current_until_a_later_publish_changes_its_table(tmp_path: Path) -> None:
    """Copies are checked by the publish batches since the one they reflect (no table is counted): a batch that
    changed a table makes its copy stale and leaves the others current; so does a batch without a summary, and a
    database built anew whose batch of the same number started at another time."""
    person, household = table("core.person"), table("core.household")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    upgrade(engine)
    states = TableStates(tmp_path / "state")
    with engine.begin() as raw:
        conn = prepared(raw)
        assert publish_mark(conn) == ""
        _batch(conn, {"core.person": 3, "core.household": 1}, datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
        mark = publish_mark(conn)
        assert mark.startswith("1@")
        states.stage(person, _state(3), ["person_key", "row_hash"], mark)
        states.stage(household, _state(1), ["person_key", "row_hash"], mark)
        states.written()
    states.commit()

    def current(t: sa.Table) -> bool:
        with engine.connect() as raw:
            conn = prepared(raw)
            return states.old(conn, t) is not None and states.usable(conn, t, ["row_hash"])

    assert current(person) and current(household)
    with engine.begin() as raw:  # another hub's batch changes households only; a release batch changes neither
        _batch(prepared(raw), {"core.household": 2, "core.person": 0}, datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
        _batch(prepared(raw), {"release.resident": 5}, datetime(2026, 12, 1, 9, 1, tzinfo=UTC))
    assert current(person) and not current(household)
    with engine.begin() as raw:  # a batch without a summary: a publish's own while it merges, or a broken one
        _batch(prepared(raw), None, datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    states.opened = 4
    assert current(person)
    states.opened = None
    assert not current(person)

    rebuilt = sa.create_engine(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    upgrade(rebuilt)
    with rebuilt.begin() as raw:  # batch 1 again, but not the batch the copies reflect
        _batch(prepared(raw), {"core.household": 1}, datetime(2026, 12, 2, 8, 0, tzinfo=UTC))
    with rebuilt.connect() as raw:
        assert states.old(prepared(raw), person) is None
    engine.dispose()
    rebuilt.dispose()


def test_the_build_memory_grows_with_the_staged_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1.5 GiB up to a million residents' 2.9 M staged rows, in proportion above (2.2 M residents failed at 1.5)."""
    from publish.build import Batch
    from publish.publisher import memory_for

    def batches(rows: int, files: int) -> list[Batch]:
        out = []
        for i in range(files):
            path = tmp_path / f"{rows}-{i}.parquet"
            pq.write_table(pa.table({"record_id": [str(n) for n in range(rows // files)]}), path)
            out.append(Batch("gongan.hukou", f"b{i}", path))
        return out

    assert memory_for(batches(1000, 2)) == "1536MB"
    assert memory_for([]) == "1536MB"
    big = batches(58_000, 2)  # stands for 5.8 M rows: the limit is read from the files' row counts
    assert memory_for(big) == "1536MB"
    from publish import publisher

    # as if each row were a hundred: 5.8 M rows' worth
    monkeypatch.setattr(publisher, "_BYTES_PER_STAGED_ROW", publisher._BYTES_PER_STAGED_ROW * 100)
    assert memory_for(big) == "3073MB"


def test_an_unreadable_copy_is_logged_by_its_file_name_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The two warnings about an unreadable kept file name the file (a table's or the name forms' fixed name) and
    nothing read from it: its bytes may be anything, here a personal-looking value."""
    from linkage.resolve import NAME_FORMS
    from linkage.workspace import Workspace
    from privacy.keyring import Keyring, init_keyfile

    garbage = "张三 110101199003071234".encode()
    (tmp_path / "core.person.parquet").write_bytes(garbage)
    forms = tmp_path / NAME_FORMS
    forms.write_bytes(garbage)
    init_keyfile(tmp_path / "keys.json")
    keyring = Keyring.load(None, tmp_path / "keys.json")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    upgrade(engine)
    with caplog.at_level("WARNING"):
        with engine.connect() as raw:
            assert TableStates(tmp_path).old(prepared(raw), table("core.person")) is None
        with Workspace() as ws:
            ws.register("rec", pa.table({"qi_name": pa.array([], pa.string())}))
            assert ws.name_forms(keyring, forms) == 0
    assert pq.read_table(forms).num_rows == 0  # rewritten whole, readable
    engine.dispose()
    assert [r.getMessage() for r in caplog.records] == [
        "publish state copy core.person.parquet is unreadable or from an older hub; reading the database instead",
        "name-forms.parquet is unreadable; the names are decrypted again",
    ]
