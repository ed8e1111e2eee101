"""The publish's kept table copies: written in a thread, but only ever in place after the commit."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from publish.state_cache import TableStates
from schemas.unified import table


def _state(n: int) -> pa.Table:
    return pa.table({"person_key": [f"p{i:031d}" for i in range(n)], "row_hash": [f"{i:016x}" for i in range(n)]})


def test_staged_copies_appear_on_commit_and_vanish_on_discard(tmp_path: Path) -> None:
    person, contact = table("core.person"), table("sensitive.person_contact")
    states = TableStates(tmp_path)
    states.stage(person, _state(3), ["person_key", "row_hash"], 7)
    states.stage(contact, _state(2), ["person_key", "row_hash"], 7)
    states.written()
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == []  # only temporary files before the commit
    states.commit()
    kept = pq.read_table(tmp_path / "core.person.parquet")
    assert kept.num_rows == 3 and kept.schema.metadata[b"hub.top"] == b"7"
    assert pq.read_table(tmp_path / "sensitive.person_contact.parquet").num_rows == 2

    states.stage(person, _state(5), ["person_key", "row_hash"], 8)
    states.discard()
    assert pq.read_table(tmp_path / "core.person.parquet").num_rows == 3  # the committed copy stays
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
