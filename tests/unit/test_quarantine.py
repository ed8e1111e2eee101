"""The quarantine keeps bad rows encrypted (AES-256-GCM), one file per batch, with a header of counts only."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from schemas.quarantine import (
    MAGIC,
    POSITION_COLUMN,
    REASONS_COLUMN,
    QuarantineEntry,
    QuarantineError,
    QuarantineStore,
)
from tests.unit.test_conform import ID_15, ID_A, ID_B, ID_X, dirty_hukou

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def _bad_rows() -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    raw = dirty_hukou().loc[[104, 105, 106, 107]]
    reasons = pd.Series(
        [
            "conform:id_number_invalid:id_number",
            ["conform:required_missing:id_number", "gx:expect_column_values_to_not_be_null:id_number"],
            "gx:expect_column_values_to_be_in_set:sex;conform:code_not_allowed:sex",
            "conform:required_missing:name",
        ],
        index=raw.index,
    )
    return raw, reasons, raw["_source_position"]


@pytest.fixture
def stored(tmp_path: Path) -> tuple[QuarantineStore, QuarantineEntry]:
    store = QuarantineStore(tmp_path / "quarantine", KEY, key_version=3)
    rows, reasons, positions = _bad_rows()
    return store, store.put("gongan.hukou", "b000001", rows, reasons, positions)


def test_round_trip(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, entry = stored
    rows, _, positions = _bad_rows()
    back = store.read(entry)
    assert list(back.index) == list(rows.index)
    for column in rows.columns:
        if column != POSITION_COLUMN:
            assert back[column].tolist() == rows[column].tolist(), column
    assert back[POSITION_COLUMN].tolist() == positions.tolist()
    assert back.loc[105, REASONS_COLUMN] == (
        "conform:required_missing:id_number;gx:expect_column_values_to_not_be_null:id_number"
    )


def test_header_describes_the_batch_without_values(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, entry = stored
    assert (entry.dataset, entry.batch_id, entry.rows, entry.key_version) == ("gongan.hukou", "b000001", 4, 3)
    assert entry.reasons["conform:required_missing:id_number"] == 1
    assert entry.reasons["gx:expect_column_values_to_be_in_set:sex"] == 1
    assert sum(entry.reasons.values()) == 6
    assert store.entries() == [entry]
    assert store.entries("gongan.hukou") == [entry]
    assert store.entries("jisheng.births") == []


def test_one_owner_only_file_per_batch(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, entry = stored
    rows, reasons, positions = _bad_rows()
    again = store.put("gongan.hukou", "b000001", rows.iloc[:2], reasons.iloc[:2], positions.iloc[:2])
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert files == [entry.path] and again.path == entry.path  # replaced, no temp files left
    assert again.rows == 2 and len(store.read(again)) == 2
    assert stat.S_IMODE(os.stat(entry.path).st_mode) == 0o600
    assert entry.path.read_bytes().startswith(MAGIC)


def test_wrong_key_fails_naming_the_file(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, entry = stored
    with pytest.raises(QuarantineError, match="cannot decrypt") as caught:
        QuarantineStore(store.root, OTHER_KEY, key_version=3).read(entry)
    assert str(entry.path) in str(caught.value)
    assert KEY.hex() not in str(caught.value) and OTHER_KEY.hex() not in str(caught.value)
    with pytest.raises(QuarantineError, match="key version 3, this store holds version 4"):
        QuarantineStore(store.root, KEY, key_version=4).read(entry)


def test_tampered_ciphertext_fails(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, entry = stored
    blob = bytearray(entry.path.read_bytes())
    blob[-20] ^= 0x01
    entry.path.write_bytes(bytes(blob))
    with pytest.raises(QuarantineError, match="or the file was altered"):
        store.read(entry)


def _rewrite_header(path: Path, change: dict[str, object]) -> None:
    blob = path.read_bytes()
    length = int.from_bytes(blob[len(MAGIC): len(MAGIC) + 4], "big")
    header = json.loads(blob[len(MAGIC) + 4: len(MAGIC) + 4 + length])
    header.update(change)
    head = json.dumps(header).encode()
    path.write_bytes(MAGIC + len(head).to_bytes(4, "big") + head + blob[len(MAGIC) + 4 + length:])


def test_tampered_header_fails(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, entry = stored
    _rewrite_header(entry.path, {"batch_id": "b000002"})  # moved to another batch: associated data differs
    with pytest.raises(QuarantineError, match="cannot decrypt"):
        store.read(entry.path)
    _rewrite_header(entry.path, {"batch_id": "b000001", "rows": 1})  # counts no longer match the content
    with pytest.raises(QuarantineError, match="counts do not match"):
        store.read(entry.path)
    entry.path.write_bytes(b"not a quarantine file")
    with pytest.raises(QuarantineError, match="not a quarantine file"):
        store.entries()


def test_no_plaintext_at_rest(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, _ = stored
    rows, _, _ = _bad_rows()
    personal = ("gmsfhm", "xm", "lxdh", "hh", "sqdm", "hjdz")
    secrets = {str(v) for column in personal for v in rows[column].dropna()}
    secrets |= {ID_A, ID_B, ID_X, ID_15}
    secrets = {s.strip() for s in secrets if s.strip()}
    on_disk = b"".join(p.read_bytes() for p in store.root.rglob("*") if p.is_file())
    for secret in secrets:
        for encoding in ("utf-8", "utf-16-le", "gb18030"):
            assert secret.encode(encoding) not in on_disk


def test_xlsx_cells_of_mixed_types_survive(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path, KEY, key_version=1)
    rows = pd.DataFrame(
        {"出生日期": [dt.datetime(1962, 7, 4), 40179, "2010年1月1日"], "残疾等级": ["二级", 1, None]},
        dtype=object,
    )
    reasons = pd.Series(["conform:date_unparseable:birth_date"] * 3)
    entry = store.put("canlian.disability", "x1", rows, reasons, pd.Series(["row 2", "row 3", "row 4"]))
    back = store.read(entry)
    assert back["出生日期"].astype(str).tolist() == ["1962-07-04 00:00:00", "40179", "2010年1月1日"]
    assert back["残疾等级"].tolist()[:2] == ["二级", "1"] and pd.isna(back["残疾等级"].iloc[2])


def test_refuses_bad_names_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        QuarantineStore(tmp_path, b"short", key_version=1)
    store = QuarantineStore(tmp_path, KEY, key_version=1)
    rows, reasons, positions = _bad_rows()
    with pytest.raises(ValueError, match="batch_id must be a plain file-name token"):
        store.put("gongan.hukou", "../escape", rows, reasons, positions)
    with pytest.raises(ValueError, match="differ in length"):
        store.put("gongan.hukou", "b1", rows, reasons.iloc[:1], positions)
    assert KEY.hex() not in repr(store) and "key_version=1" in repr(store)
