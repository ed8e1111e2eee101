"""Hash-chained audit log (JSON lines): reveals, failed reveal attempts, quarantine views.

Each entry carries ``seq``, ``prev_hash`` and ``hash`` = SHA-256 over the canonical JSON of the entry
without its own hash, so an edited, removed or reordered entry breaks the chain. A sidecar head file
(``<log>.head``) records the last sequence number and hash, so cutting entries off the end shows too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS_HASH = "0" * 64
_CHAIN_KEYS = ("seq", "prev_hash", "hash")


def default_log_path() -> Path:
    """The reveal log of this hub: <HUB_HOME>/audit/reveal.log."""
    from hub.settings import Settings

    return Settings.from_env().home / "audit" / "reveal.log"


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of an entry without its 'hash'."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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
                return dict(json.loads(lines[-1]))
    return None


def append_audit(event: Mapping[str, Any], log_path: Path | str | None = None) -> dict[str, Any]:
    """Append one event to the chained log and return the stored entry (with seq, prev_hash, hash).

    The event must carry no plaintext personal values: tokens and counts only.
    """
    path = Path(log_path) if log_path is not None else default_log_path()
    clash = set(event) & set(_CHAIN_KEYS)
    if clash:
        raise ValueError(f"audit event may not set {sorted(clash)}")
    with _locked(path):
        last = _last_entry(path)
        entry: dict[str, Any] = {"timestamp": datetime.now(UTC).isoformat(timespec="microseconds")}
        entry |= dict(event)
        entry["seq"] = (int(last["seq"]) + 1) if last else 1
        entry["prev_hash"] = str(last["hash"]) if last else GENESIS_HASH
        entry["hash"] = entry_hash(entry)
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        head = _head_path(path)
        tmp = head.with_name(head.name + ".tmp")
        tmp.write_text(json.dumps({"seq": entry["seq"], "hash": entry["hash"]}) + "\n", encoding="utf-8")
        os.replace(tmp, head)
    return entry


@dataclass(frozen=True)
class LogVerification:
    """Outcome of checking a log: how many entries, and the first broken entry (1-based line) if any."""

    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str | None = None


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


def verify_log(log_path: Path | str | None = None) -> LogVerification:
    """Walk the chain: each hash must match its entry, link to the previous one and follow its seq."""
    path = Path(log_path) if log_path is not None else default_log_path()
    if not path.exists():
        return LogVerification(True, 0)
    prev_hash, count = GENESIS_HASH, 0
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                return LogVerification(False, count, number, "blank line inside the log")
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                return LogVerification(False, count, number, "not valid JSON")
            if not isinstance(entry, dict) or any(k not in entry for k in _CHAIN_KEYS):
                return LogVerification(False, count, number, "missing seq, prev_hash or hash")
            if entry["hash"] != entry_hash(entry):
                return LogVerification(False, count, number, "entry was edited (hash does not match)")
            if entry["prev_hash"] != prev_hash:
                return LogVerification(
                    False, count, number, "chain broken: an entry before it was removed or moved"
                )
            if entry["seq"] != number:
                return LogVerification(
                    False, count, number, f"sequence {entry['seq']} found where {number} belongs"
                )
            prev_hash, count = entry["hash"], count + 1
    head = _head_path(path)
    if head.exists():
        try:
            mark = json.loads(head.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return LogVerification(False, count, count + 1, "head file is not valid JSON")
        if mark.get("seq") != count or mark.get("hash") != prev_hash:
            return LogVerification(
                False,
                count,
                min(count + 1, int(mark.get("seq") or count + 1)),
                f"log ends at entry {count} but its head records entry {mark.get('seq')}: "
                "entries were cut off the end",
            )
    return LogVerification(True, count)
