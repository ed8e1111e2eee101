"""API consumers and their keys: created and revoked by the hub operator (`hub consumers`), checked per request.

A key reads ``hubk_<key id>_<secret>``: the key id (public) finds the consumer's row, the whole key is
checked against an Argon2id hash, and only the hash is stored. Argon2 is slow on purpose, so a key that
verified once is remembered in memory as its SHA-256 (the key is 256 random bits: a fast hash of it cannot
be searched); every request still reads the row, so a revoked key is refused at once, by any process.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from schemas.base import HubError
from service.tables import api_consumer

KEY_PREFIX = "hubk"
_KEY = re.compile(r"^hubk_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,62}$")
_HASHER = PasswordHasher()  # argon2-cffi's RFC 9106 low-memory profile (Argon2id, 64 MiB, t=3)


class ConsumerError(HubError):
    """A consumer cannot be added or revoked (the message names the consumer, never a key)."""


@dataclass(frozen=True)
class ApiConsumer:
    """An authenticated consumer: its name (the operator in the audit log) and the database role it acts as."""

    name: str
    role: str


def new_key() -> tuple[str, str]:
    """(key id, whole key) of a fresh random API key."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def add_consumer(conn: sa.Connection, name: str, role: str, label: str, roles: set[str]) -> str:
    """Create a consumer acting as ``role`` (one of ``roles``) and return its new key (shown to the caller once)."""
    if not _NAME.match(name):
        raise ConsumerError(f"consumer name '{name}' must be 2-63 lower-case letters, digits, '_', '.' or '-'")
    if role not in roles:
        raise ConsumerError(f"role '{role}' is not one a consumer may act as: {', '.join(sorted(roles))}")
    if conn.execute(sa.select(api_consumer.c.name).where(api_consumer.c.name == name)).first() is not None:
        raise ConsumerError(f"consumer '{name}' exists (revoke it and add it under a new name)")
    key_id, key = new_key()
    conn.execute(
        sa.insert(api_consumer).values(
            name=name, label=label or name, role=role, key_id=key_id, key_hash=_HASHER.hash(key),
            created_at=datetime.now(UTC),
        )
    )  # fmt: skip
    return key


def revoke_consumer(conn: sa.Connection, name: str) -> None:
    """Revoke a consumer's key from now on (the row stays, for the audit trail)."""
    done = conn.execute(
        sa.update(api_consumer)
        .where(api_consumer.c.name == name, api_consumer.c.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    if done.rowcount != 1:
        raise ConsumerError(f"no active consumer '{name}'")


def list_consumers(conn: sa.Connection) -> list[sa.Row]:
    """Every consumer: name, label, role, key id, created, revoked (never a key or its hash)."""
    c = api_consumer.c
    return list(conn.execute(sa.select(c.name, c.label, c.role, c.key_id, c.created_at, c.revoked_at).order_by(c.name)))


class KeyCheck:
    """Checks presented keys against the stored hashes; remembers the SHA-256 of keys that verified."""

    def __init__(self) -> None:
        self._known: dict[str, bytes] = {}  # key id -> SHA-256 of the whole key that verified
        self._lock = threading.Lock()

    @staticmethod
    def key_id(key: str) -> str | None:
        """The key id of a well-formed key, else None."""
        match = _KEY.match(key)
        return match["id"] if match else None

    def known(self, key: str, key_id: str) -> bool:
        """Whether ``key`` is a key that verified before (no Argon2 needed to accept it)."""
        with self._lock:
            known = self._known.get(key_id)
        return known is not None and hmac.compare_digest(known, hashlib.sha256(key.encode()).digest())

    def verify(self, key: str, key_id: str, stored_hash: str) -> bool:
        """Whether ``key`` is the key whose Argon2 hash is ``stored_hash``."""
        digest = hashlib.sha256(key.encode()).digest()
        with self._lock:
            known = self._known.get(key_id)
        if known is not None:
            return hmac.compare_digest(known, digest)
        try:
            _HASHER.verify(stored_hash, key)
        except (VerificationError, InvalidHashError):
            return False
        with self._lock:
            self._known[key_id] = digest
        return True
