"""The quarantine keeps bad rows encrypted (AES-256-GCM), one file per batch, with a header of counts only."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from privacy.audit_log import read_entries, verify_log
from privacy.keyring import KEYRING_ENV, Keyring, destroy_key_version, init_keyfile, rotate_keyfile
from privacy.reveal import RevealRefused, read_quarantine
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
    back = store._read(entry)
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
    assert again.rows == 2 and len(store._read(again)) == 2
    assert stat.S_IMODE(os.stat(entry.path).st_mode) == 0o600
    assert entry.path.read_bytes().startswith(MAGIC)


def test_wrong_key_fails_naming_the_file(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, entry = stored
    with pytest.raises(QuarantineError, match="cannot decrypt") as caught:
        QuarantineStore(store.root, OTHER_KEY, key_version=3)._read(entry)
    assert str(entry.path) in str(caught.value)
    assert KEY.hex() not in str(caught.value) and OTHER_KEY.hex() not in str(caught.value)
    with pytest.raises(QuarantineError, match="key version 3, this store holds version 4"):
        QuarantineStore(store.root, KEY, key_version=4)._read(entry)


def test_tampered_ciphertext_fails(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, entry = stored
    blob = bytearray(entry.path.read_bytes())
    blob[-20] ^= 0x01
    entry.path.write_bytes(bytes(blob))
    with pytest.raises(QuarantineError, match="or the file was altered"):
        store._read(entry)


def _rewrite_header(path: Path, change: dict[str, object]) -> None:
    blob = path.read_bytes()
    length = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 4], "big")
    header = json.loads(blob[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
    header.update(change)
    head = json.dumps(header).encode()
    path.write_bytes(MAGIC + len(head).to_bytes(4, "big") + head + blob[len(MAGIC) + 4 + length :])


def test_tampered_header_fails(stored: tuple[QuarantineStore, QuarantineEntry]) -> None:
    store, entry = stored
    _rewrite_header(entry.path, {"batch_id": "b000002"})  # moved to another batch: associated data differs
    with pytest.raises(QuarantineError, match="cannot decrypt"):
        store._read(entry.path)
    _rewrite_header(entry.path, {"batch_id": "b000001", "rows": 1})  # counts no longer match the content
    with pytest.raises(QuarantineError, match="counts do not match"):
        store._read(entry.path)
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
    back = store._read(entry)
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


# -- the audited way in: privacy.reveal.read_quarantine logs operator and reason first -------------------


def _ids() -> set[str]:
    """The ID numbers among the bad rows: shown to the steward, never written to the log."""
    return {str(v) for v in _bad_rows()[0]["gmsfhm"].dropna()}


def _keyed_store(root: Path, keyring: Keyring, version: int) -> QuarantineStore:
    return QuarantineStore(root, keyring.derive("quarantine", "quarantine", version), version)


def test_store_has_no_public_read() -> None:
    """Reading a batch goes through read_quarantine, which logs; the store's own decrypt is private."""
    assert not hasattr(QuarantineStore, "read")


def test_read_quarantine_logs_who_and_why_without_values(tmp_path: Path) -> None:
    keyring, engine, log = Keyring.generate(), sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}"), tmp_path / "a.log"
    store = _keyed_store(tmp_path / "quarantine", keyring, 1)
    entry = store.put("gongan.hukou", "b000001", *_bad_rows())
    frame = read_quarantine(store, entry, "steward1", "fix ID numbers", keyring, log, engine)
    assert len(frame) == 4 and set(frame["gmsfhm"].dropna()) == _ids()
    (logged,) = read_entries(log)
    assert (logged["action"], logged["operator"], logged["reason"], logged["outcome"]) == (
        "quarantine_show",
        "steward1",
        "fix ID numbers",
        "shown",
    )
    assert (logged["dataset"], logged["batch_id"], logged["rows"], logged["key_version"]) == (
        "gongan.hukou",
        "b000001",
        4,
        1,
    )
    assert not any(i in log.read_text(encoding="utf-8") for i in _ids()) and verify_log(log, engine, keyring).ok


@pytest.mark.parametrize(
    ("operator", "reason"), [("steward1", ""), ("steward1", "   "), ("steward1", "fix"), (" ", "fix IDs")]
)
def test_read_quarantine_refuses_without_operator_or_reason_and_logs_it(
    tmp_path: Path, operator: str, reason: str
) -> None:
    keyring, engine, log = Keyring.generate(), sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}"), tmp_path / "a.log"
    store = _keyed_store(tmp_path / "quarantine", keyring, 1)
    entry = store.put("gongan.hukou", "b000001", *_bad_rows())
    with pytest.raises(RevealRefused, match="refused"):
        read_quarantine(store, entry, operator, reason, keyring, log, engine)
    (logged,) = read_entries(log)
    assert logged["outcome"].startswith("refused") and logged["batch_id"] == "b000001"


def test_read_quarantine_under_a_destroyed_key_version_is_reported_and_logged(tmp_path: Path) -> None:
    keyring, engine, log = Keyring.generate(), sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}"), tmp_path / "a.log"
    entry = _keyed_store(tmp_path / "quarantine", keyring, 1).put("gongan.hukou", "b000001", *_bad_rows())
    shredded = keyring.rotated().without(1)
    store = _keyed_store(tmp_path / "quarantine", shredded, 2)
    with pytest.raises(RevealRefused, match="crypto-shredded"):
        read_quarantine(store, entry, "steward1", "fix ID numbers", shredded, log, engine)
    (logged,) = read_entries(log)
    assert logged["outcome"].startswith("failed") and "destroyed" in logged["outcome"]


def test_quarantine_show_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused (and logged) without a real reason; shown with one; a shredded version reported, not a crash."""
    from hub.ingest_cli import quarantine
    from hub.privacy_cli import privacy

    home = tmp_path / "hub"
    for name in ("HUB_DATABASE_URL", "HUB_KEYRING", KEYRING_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HUB_HOME", str(home))
    monkeypatch.setenv("HUB_SIM_DATA", str(tmp_path / "sim"))
    keyfile = home / "keys" / "demo-keyring.json"
    keyring = init_keyfile(keyfile)
    _keyed_store(home / "quarantine", keyring, 1).put("gongan.hukou", "b000001", *_bad_rows())
    runner, log = CliRunner(), home / "audit" / "reveal.log"
    show = ["show", "b000001", "--operator", "steward1"]
    refused = runner.invoke(quarantine, [*show, "--reason", ""])
    assert refused.exit_code == 1 and "reason" in refused.output and not any(i in refused.output for i in _ids())
    assert read_entries(log)[-1]["outcome"].startswith("refused")
    shown = runner.invoke(quarantine, [*show, "--reason", "fix ID numbers"])
    assert shown.exit_code == 0, shown.output
    assert "gmsfhm" in shown.output and all(i in shown.output for i in _ids())
    rotate_keyfile(keyfile)
    again = runner.invoke(quarantine, [*show, "--reason", "fix ID numbers"])
    assert again.exit_code == 0, again.output
    destroy_key_version(keyfile, 1)
    gone = runner.invoke(quarantine, [*show, "--reason", "fix ID numbers"])
    assert gone.exit_code == 1 and "crypto-shredded" in gone.output and not any(i in gone.output for i in _ids())
    assert gone.exception is None or isinstance(gone.exception, SystemExit)
    outcomes = [e["outcome"].split(":")[0] for e in read_entries(log) if e["action"] == "quarantine_show"]
    assert outcomes == ["refused", "shown", "shown", "failed"]
    verified = runner.invoke(privacy, ["verify-log"])
    assert verified.exit_code == 0 and "entries, chain intact" in verified.output, verified.output
