"""HMAC-chained audit log (JSON lines): reveals, failed reveal attempts, quarantine views.

Each entry carries ``seq``, ``prev_hash``, ``chain_key_version`` and ``hash`` = HMAC-SHA256 under the audit
chain key of that version (HKDF ``audit_chain/reveal_log/vN``) over the canonical JSON of the entry without
its hash, so nobody without the keyring can edit, remove, reorder or append entries. The head (last seq and
hash) is kept twice, in ``<log>.head`` and in the hub database (``audit_head``), so cutting entries off the
end or deleting the log shows too. The first entry under a new key version is an ``audit_reseal`` that
vouches for the bytes of everything before it, so the log stays verifiable after an old version is destroyed.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from privacy.keyring import Keyring, KeyVersionError
from schemas.base import HubError, write_atomic

GENESIS_HASH = "0" * 64
AUDIT_CHAIN_PURPOSE = "audit_chain"
AUDIT_CHAIN_DOMAIN = "reveal_log"
RESEAL_ACTION = "audit_reseal"
_CHAIN_KEYS = ("seq", "prev_hash", "chain_key_version", "hash")

metadata = sa.MetaData()

audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("log", sa.Text, primary_key=True, comment="the log's file name, e.g. reveal.log"),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("updated", sa.Text, nullable=False),
    comment="last entry of each audit log, kept apart from the file so a rewritten or deleted log shows",
)


class AuditLogError(HubError):
    """The audit log cannot take an entry (its file and heads disagree); nothing may be revealed then."""


@dataclass(frozen=True)
class LogVerification:
    """Outcome of checking a log: how many entries, and the first broken entry (1-based line) if any."""

    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _Walk:
    """What reading the whole file found: entries, the last hash, the first problem."""

    entries: int
    last_hash: str
    broken: LogVerification | None
    unverified: tuple[int, int] | None  # (line, key version) of the first entry no held key can check


def _canonical(entry: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def entry_mac(entry: Mapping[str, Any], keyring: Keyring, version: int) -> str:
    """HMAC-SHA256 (hex) of an entry without its hash, under the audit chain key of ``version``."""
    key = keyring.derive(AUDIT_CHAIN_PURPOSE, AUDIT_CHAIN_DOMAIN, version)
    return hmac.new(key, _canonical(entry), hashlib.sha256).hexdigest()


def _head_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".head")


@contextmanager
def _locked(log_path: Path) -> Iterator[None]:
    """An exclusive lock beside the log, so concurrent writers (reveal, quarantine viewer) keep one chain."""
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(log_path.with_name(log_path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _last_entry(log_path: Path) -> dict[str, Any] | None:
    """The last JSON line of the log, read from the end so long logs stay cheap to append to."""
    if not log_path.exists():
        return None
    with log_path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        block, data = 4096, b""
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            data = fh.read(end - start) + data
            end = start
            lines = [ln for ln in data.split(b"\n") if ln.strip()]
            if len(lines) >= 2 or (lines and end == 0):
                try:
                    return dict(json.loads(lines[-1]))
                except (json.JSONDecodeError, TypeError, ValueError):
                    raise AuditLogError(f"{log_path}: the last line is not a JSON entry") from None
    return None


def _file_head(log_path: Path) -> tuple[int, str] | str | None:
    """The head file's (seq, hash), None when it is missing, or a problem text when it is unreadable."""
    path = _head_path(log_path)
    if not path.exists():
        return None
    try:
        mark = json.loads(path.read_text(encoding="utf-8"))
        return int(mark["seq"]), str(mark["hash"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return "head file is not a JSON object with seq and hash"


def _db_head(engine: sa.Engine, name: str) -> tuple[int, str] | None:
    """The (seq, hash) the hub database records for a log, None when it records none."""
    if not sa.inspect(engine).has_table(audit_head.name):
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.log == name)).first()
    return None if row is None else (int(row.seq), str(row.hash))


def _walk(path: Path, keyring: Keyring) -> _Walk:
    """Check every entry: its HMAC (when its key is held), its link to the previous one and its seq."""
    prev_hash, count, unverified = GENESIS_HASH, 0, None
    digest = hashlib.sha256()

    def broken(number: int, reason: str) -> _Walk:
        return _Walk(count, prev_hash, LogVerification(False, count, number, reason), unverified)

    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                return broken(number, "blank line inside the log")
            if not raw.endswith(b"\n"):
                return broken(number, "the last line is incomplete (a torn write or an edit)")
            try:
                entry = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                return broken(number, "not valid JSON")
            if not isinstance(entry, dict) or any(k not in entry for k in _CHAIN_KEYS):
                return broken(number, "missing seq, prev_hash, chain_key_version or hash")
            version = entry["chain_key_version"]
            if not isinstance(version, int) or not isinstance(entry["hash"], str):
                return broken(number, "chain_key_version or hash has the wrong type")
            try:
                expected: str | None = entry_mac(entry, keyring, version)
            except KeyVersionError:
                expected = None
                unverified = unverified or (number, version)
            if expected is not None and not hmac.compare_digest(expected, entry["hash"]):
                return broken(number, "entry was edited or forged (its HMAC does not match)")
            if entry["prev_hash"] != prev_hash:
                return broken(number, "chain broken: an entry before it was removed or moved")
            if entry["seq"] != number:
                return broken(number, f"sequence {entry['seq']} found where {number} belongs")
            if expected is not None and entry.get("action") == RESEAL_ACTION:
                if entry.get("prefix_sha256") != digest.hexdigest() or entry.get("prefix_entries") != count:
                    return broken(number, "entries before this reseal were altered after it was written")
                if entry.get("prefix_verified") is True:
                    unverified = None  # a held key vouches for the bytes of everything before it
            digest.update(raw)
            prev_hash, count = entry["hash"], count + 1
    return _Walk(count, prev_hash, None, unverified)


def _compare_heads(
    path: Path, entries: int, last_hash: str, file_head: tuple[int, str] | str | None, db_head: tuple[int, str] | None
) -> LogVerification | None:
    """The first disagreement between the log's end and its two heads (file, database), or None."""
    for where, head in (("head file", file_head), ("hub database", db_head)):
        if isinstance(head, str):
            return LogVerification(False, entries, entries + 1, head)
        if head is None:
            if entries:
                return LogVerification(False, entries, entries, f"the {where} records no head for {path.name}")
            continue
        seq, digest = head
        if seq > entries:
            return LogVerification(
                False,
                entries,
                entries + 1,
                f"log ends at entry {entries} but the {where} records entry {seq}: entries were cut off the end",
            )
        if seq < entries:
            return LogVerification(
                False, entries, seq + 1, f"log runs past entry {seq}, the last one the {where} records"
            )
        if not hmac.compare_digest(digest, last_hash):
            return LogVerification(
                False, entries, entries, f"the last entry is not the one the {where} records (log replaced)"
            )
    return None


def verify_log(log_path: Path | str, engine: sa.Engine, keyring: Keyring) -> LogVerification:
    """Check every HMAC and link, then that both heads (file and database) name the last entry.

    A hub with neither log nor heads is fine (0 entries); a log without heads, or heads without a log, fails.
    """
    path = Path(log_path)
    file_head, db_head = _file_head(path), _db_head(engine, path.name)
    if not path.exists():
        if file_head is None and db_head is None:
            return LogVerification(True, 0)
        return LogVerification(False, 0, 1, f"the log file {path.name} is missing but a head records entries")
    walk = _walk(path, keyring)
    if walk.broken is not None:
        return walk.broken
    if walk.unverified is not None:
        line, version = walk.unverified
        return LogVerification(
            False,
            walk.entries,
            line,
            f"chained under key version {version}, which this keyring does not hold (destroyed?), "
            "and no verified reseal under a held version covers it",
        )
    mismatch = _compare_heads(path, walk.entries, walk.last_hash, file_head, db_head)
    return mismatch or LogVerification(True, walk.entries)


def _move_db_head(conn: sa.Connection, path: Path, previous: tuple[int, str], entry: Mapping[str, Any]) -> None:
    """Move the database head to ``entry``, only from the head this append started at (uncommitted)."""
    values = {"seq": entry["seq"], "hash": entry["hash"], "updated": str(entry["timestamp"])}
    if previous[0] == 0:
        try:
            conn.execute(sa.insert(audit_head).values(log=path.name, **values))
        except sa.exc.IntegrityError:
            raise AuditLogError(f"{path}: another writer created the database head first") from None
        return
    moved = conn.execute(
        sa.update(audit_head)
        .where(audit_head.c.log == path.name, audit_head.c.seq == previous[0], audit_head.c.hash == previous[1])
        .values(**values)
    )
    if moved.rowcount != 1:
        raise AuditLogError(f"{path}: the database head moved under this append; another writer?")


def _append_locked(path: Path, event: Mapping[str, Any], engine: sa.Engine, keyring: Keyring) -> dict[str, Any]:
    """Append under the lock: refuse unless file and both heads agree, then write the line and move both heads."""
    last = _last_entry(path)
    tail = (int(last["seq"]), str(last["hash"])) if last else (0, GENESIS_HASH)
    for where, head in (("head file", _file_head(path)), ("hub database", _db_head(engine, path.name))):
        if isinstance(head, str):
            raise AuditLogError(f"{path}: {head}; run `hub privacy verify-log`")
        recorded = head or (0, GENESIS_HASH)
        if recorded != tail:
            state = "missing" if not path.exists() else f"at entry {tail[0]}"
            raise AuditLogError(
                f"{path}: the log is {state} but the {where} head records entry {recorded[0]}: "
                "it was cut, replaced or deleted; run `hub privacy verify-log` and restore it before appending"
            )
    version = keyring.active_version
    entry: dict[str, Any] = {"timestamp": datetime.now(UTC).isoformat(timespec="microseconds")}
    entry |= dict(event)
    entry |= {"seq": tail[0] + 1, "prev_hash": tail[1], "chain_key_version": version}
    entry = json.loads(json.dumps(entry, ensure_ascii=False, default=str))  # MAC exactly what is stored
    entry["hash"] = entry_mac(entry, keyring, version)
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
    with engine.begin() as conn:  # the database head commits only after the line and the head file are down
        _move_db_head(conn, path, tail, entry)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        write_atomic(_head_path(path), json.dumps({"seq": entry["seq"], "hash": entry["hash"]}) + "\n")
    return entry


def _reseal_locked(path: Path, engine: sa.Engine, keyring: Keyring) -> dict[str, Any] | None:
    """Under the lock: when the last entry is under another key version, chain a reseal under the active one."""
    last = _last_entry(path)
    if last is None or last.get("chain_key_version") == keyring.active_version:
        return None
    walk = _walk(path, keyring)
    with path.open("rb") as fh:
        prefix = hashlib.file_digest(fh, "sha256").hexdigest()
    event = {
        "action": RESEAL_ACTION,
        "from_key_version": last.get("chain_key_version"),
        "prefix_entries": int(last["seq"]),
        "prefix_sha256": prefix,
        # only a prefix whose every entry checked out may later stand in for a destroyed key
        "prefix_verified": walk.broken is None and walk.unverified is None,
    }
    return _append_locked(path, event, engine, keyring)


def append_audit(event: Mapping[str, Any], log_path: Path | str, engine: sa.Engine, keyring: Keyring) -> dict[str, Any]:
    """Append one event to the chained log and return the stored entry (with seq, prev_hash, hash).

    The event must carry no plaintext personal values: tokens and counts only. Raises AuditLogError when
    the log and its heads disagree, so a cut or replaced log is never re-signed by a new entry.
    """
    path = Path(log_path)
    clash = set(event) & set(_CHAIN_KEYS)
    if clash:
        raise ValueError(f"audit event may not set {sorted(clash)}")
    metadata.create_all(engine, checkfirst=True)
    with _locked(path):
        _reseal_locked(path, engine, keyring)
        return _append_locked(path, event, engine, keyring)


def reseal_log(log_path: Path | str, engine: sa.Engine, keyring: Keyring) -> dict[str, Any] | None:
    """Chain the log under the active key version now (call after a rotation, before destroying the old one).

    Returns the reseal entry, or None when the active version already signs the last entry (or no log yet).
    """
    path = Path(log_path)
    metadata.create_all(engine, checkfirst=True)
    with _locked(path):
        return _reseal_locked(path, engine, keyring)


def read_entries(log_path: Path | str) -> list[dict[str, Any]]:
    """All entries of a log (empty when it does not exist); malformed lines raise ValueError with the line."""
    path = Path(log_path)
    if not path.exists():
        return []
    entries = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ValueError(f"{path}: line {number} is not valid JSON") from None
    return entries
