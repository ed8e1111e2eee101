"""The publish's kept table copies: written in a thread, but only ever in place after the commit."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
