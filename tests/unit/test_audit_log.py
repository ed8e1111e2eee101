"""The reveal log is an HMAC chain with its head in the file and in the hub database: forgery of any kind shows."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from privacy.audit_log import (
    AUDIT_CHAIN_DOMAIN,
    AUDIT_CHAIN_PURPOSE,
    AuditLogError,
    append_audit,
    audit_head,
    read_entries,
    reseal_log,
    verify_log,
)
from privacy.keyring import Keyring
from schemas.base import HubError


@dataclass
class Log:
    """One hub's reveal log: the file, the state database holding its head, and the keyring."""

    path: Path
    engine: sa.Engine
    keyring: Keyring

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        return append_audit(event, self.path, self.engine, self.keyring)

    def verify(self, keyring: Keyring | None = None):  # type: ignore[no-untyped-def]
        return verify_log(self.path, self.engine, keyring or self.keyring)

    def lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8").splitlines(keepends=True)

    def rewrite(self, lines: list[str]) -> None:
        self.path.write_text("".join(lines), encoding="utf-8")

    def db_head(self) -> tuple[int, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.log == self.path.name)
            ).first()
        return None if row is None else (int(row.seq), str(row.hash))

    def set_heads(self, seq: int, digest: str) -> None:
        """What a forger with write access to the file system and the database does after rewriting the log."""
        self.path.with_name(self.path.name + ".head").write_text(json.dumps({"seq": seq, "hash": digest}))
        with self.engine.begin() as conn:
            conn.execute(sa.update(audit_head).where(audit_head.c.log == self.path.name).values(seq=seq, hash=digest))


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(
        tmp_path / "audit" / "reveal.log", sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}"), Keyring.generate()
    )


def _filled(log: Log, entries: int = 5) -> Log:
    for i in range(entries):
        log.append({"action": "quarantine_show", "operator": f"steward{i}", "rows": i})
    return log


def _canonical(entry: dict[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"


def test_chain_verifies_links_and_carries_its_key_version(log: Log) -> None:
    _filled(log)
    entries = read_entries(log.path)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert {e["chain_key_version"] for e in entries} == {1}
    key = log.keyring.derive(AUDIT_CHAIN_PURPOSE, AUDIT_CHAIN_DOMAIN, 1)
    assert entries[2]["hash"] == hmac.new(key, _canonical(entries[2]), "sha256").hexdigest()
    assert log.db_head() == (5, entries[-1]["hash"])
    result = log.verify()
    assert result.ok and result.entries == 5


def test_brand_new_hub_without_log_or_head_is_ok(log: Log) -> None:
    result = log.verify()
    assert result.ok and result.entries == 0


def test_edit_is_detected(log: Log) -> None:
    lines = _filled(log).lines()
    entry = json.loads(lines[2])
    entry["operator"] = "someone else"
    lines[2] = _line(entry)
    log.rewrite(lines)
    result = log.verify()
    assert not result.ok and result.first_broken == 3 and "HMAC" in str(result.reason)


def test_removal_is_detected(log: Log) -> None:
    lines = _filled(log).lines()
    log.rewrite(lines[:1] + lines[2:])
    result = log.verify()
    assert not result.ok and result.first_broken == 2


def test_reorder_is_detected(log: Log) -> None:
    lines = _filled(log).lines()
    lines[1], lines[3] = lines[3], lines[1]
    log.rewrite(lines)
    result = log.verify()
    assert not result.ok and result.first_broken == 2


def test_truncation_is_detected(log: Log) -> None:
    lines = _filled(log).lines()
    log.rewrite(lines[:-1])
    result = log.verify()
    assert not result.ok and result.first_broken == 5 and "cut off" in str(result.reason)


def test_whole_log_rewritten_with_plain_sha256_and_both_heads_is_detected(log: Log) -> None:
    """The old forgery: recompute every hash with SHA-256 and rewrite the heads; now the HMAC catches it."""
    entries = read_entries(_filled(log).path)
    entries[1]["reason"] = "covering my tracks"
    prev = "0" * 64
    for entry in entries:
        entry["prev_hash"] = prev
        entry["hash"] = prev = hashlib.sha256(_canonical(entry)).hexdigest()
    log.rewrite([_line(e) for e in entries])
    log.set_heads(5, prev)
    result = log.verify()
    assert not result.ok and result.first_broken == 1 and "HMAC" in str(result.reason)


@pytest.mark.parametrize("forge", ["sha256", "wrong_key"])
def test_appended_forged_entry_with_recomputed_chain_is_detected(log: Log, forge: str) -> None:
    last = read_entries(_filled(log).path)[-1]
    fake: dict[str, Any] = {
        "timestamp": last["timestamp"],
        "action": "reveal",
        "operator": "clerk-09",
        "outcome": "refused: a reason required",
        "seq": 6,
        "prev_hash": last["hash"],
        "chain_key_version": 1,
    }
    if forge == "sha256":
        fake["hash"] = hashlib.sha256(_canonical(fake)).hexdigest()
    else:
        other = Keyring.generate().derive(AUDIT_CHAIN_PURPOSE, AUDIT_CHAIN_DOMAIN, 1)
        fake["hash"] = hmac.new(other, _canonical(fake), "sha256").hexdigest()
    log.rewrite([*log.lines(), _line(fake)])
    log.set_heads(6, fake["hash"])
    result = log.verify()
    assert not result.ok and result.first_broken == 6 and "HMAC" in str(result.reason)


def test_missing_file_head_is_detected(log: Log) -> None:
    _filled(log).path.with_name("reveal.log.head").unlink()
    result = log.verify()
    assert not result.ok and "head file" in str(result.reason)


def test_missing_database_head_is_detected(log: Log) -> None:
    _filled(log)
    with log.engine.begin() as conn:
        conn.execute(sa.delete(audit_head))
    result = log.verify()
    assert not result.ok and "database" in str(result.reason)


def test_rolled_back_database_head_is_detected(log: Log) -> None:
    entries = read_entries(_filled(log).path)
    with log.engine.begin() as conn:
        conn.execute(sa.update(audit_head).values(seq=3, hash=entries[2]["hash"]))
    result = log.verify()
    assert not result.ok and result.first_broken == 4 and "database" in str(result.reason)


def test_deleted_log_with_a_recorded_head_is_detected(log: Log) -> None:
    _filled(log)
    log.path.unlink()
    log.path.with_name("reveal.log.head").unlink()
    result = log.verify()
    assert not result.ok and "missing" in str(result.reason)


def test_append_refuses_to_continue_a_cut_or_replaced_log(log: Log) -> None:
    """Appending after a truncation would re-sign the shorter log: refuse, so the cut stays visible."""
    lines = _filled(log).lines()
    log.rewrite(lines[:-2])
    with pytest.raises(AuditLogError, match="head"):
        log.append({"action": "reveal", "operator": "clerk-01"})
    log.path.unlink()
    with pytest.raises(AuditLogError, match="missing"):
        log.append({"action": "reveal", "operator": "clerk-01"})
    assert issubclass(AuditLogError, HubError)


def test_append_refuses_to_forge_chain_fields(log: Log) -> None:
    for field in ("hash", "seq", "prev_hash", "chain_key_version"):
        with pytest.raises(ValueError, match="may not set"):
            log.append({"action": "x", field: 1})


def test_rotation_then_shredding_keeps_the_log_verifiable(log: Log) -> None:
    _filled(log, 2)
    log.keyring = log.keyring.rotated()
    log.append({"action": "reveal", "operator": "clerk-01"})
    entries = read_entries(log.path)
    # the first entry under v2 is a reseal that vouches for the bytes of everything chained under v1
    assert [e["chain_key_version"] for e in entries] == [1, 1, 2, 2]
    assert entries[2]["action"] == "audit_reseal" and entries[2]["prefix_verified"] is True
    assert log.verify().ok and log.verify().entries == 4
    shredded = log.keyring.without(1)
    assert log.verify(shredded).ok
    lines = log.lines()
    edited = json.loads(lines[0])
    edited["operator"] = "nobody"
    log.rewrite([_line(edited), *lines[1:]])
    result = log.verify(shredded)
    assert not result.ok and result.first_broken == 3 and "altered" in str(result.reason)


def test_entries_under_a_key_destroyed_before_any_reseal_are_unverifiable(log: Log) -> None:
    _filled(log, 2)
    shredded = log.keyring.rotated().without(1)
    result = log.verify(shredded)
    assert not result.ok and result.first_broken == 1 and "key version 1" in str(result.reason)
    # appending still works (a reveal must be loggable) but the reseal cannot vouch for what it could not check
    append_audit({"action": "reveal", "operator": "clerk-01"}, log.path, log.engine, shredded)
    assert read_entries(log.path)[2]["prefix_verified"] is False
    assert not log.verify(shredded).ok


def test_reseal_log_is_a_no_op_when_the_active_version_already_signs(log: Log) -> None:
    _filled(log, 2)
    assert reseal_log(log.path, log.engine, log.keyring) is None
    rotated = log.keyring.rotated()
    sealed = reseal_log(log.path, log.engine, rotated)
    assert sealed is not None and sealed["seq"] == 3 and sealed["chain_key_version"] == 2
    assert reseal_log(log.path, log.engine, rotated) is None
    assert verify_log(log.path, log.engine, rotated.without(1)).ok


@pytest.mark.postgres
def test_database_head_on_postgresql(tmp_path: Path, fresh_pg_url: str) -> None:
    pg = Log(tmp_path / "reveal.log", sa.create_engine(fresh_pg_url), Keyring.generate())
    last = _filled(pg, 3).append({"action": "reveal", "operator": "clerk-01"})
    assert pg.db_head() == (4, last["hash"]) and pg.verify().ok
    pg.rewrite(pg.lines()[:-1])
    with pytest.raises(AuditLogError, match="head"):
        pg.append({"action": "reveal", "operator": "clerk-01"})
    result = pg.verify()
    assert not result.ok and result.first_broken == 4
    pg.engine.dispose()
