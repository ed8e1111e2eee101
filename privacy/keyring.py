"""Versioned master keys and the per-purpose keys derived from them with HKDF-SHA256.

The keyring comes as JSON from a secrets backend (``HUB_KEYRING_JSON``, read by ``hub.settings``) or, for
the demo only, from a local keyfile with mode 0600; a keyfile that group or others can read is refused.
Key material never appears in reprs, logs or errors.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas.base import HubError, write_atomic

log = logging.getLogger(__name__)

KEYRING_ENV = "HUB_KEYRING_JSON"
KEYRING_FORMAT = 1
MASTER_KEY_BYTES = 32
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DEMO_WARNING = (
    "WARNING: a local keyfile is for the demo only. In production keep master keys in a secrets "
    f"backend and pass them in {KEYRING_ENV}; keys must live apart from the data they protect."
)


class KeyringError(HubError):
    """The keyring is missing, malformed or cannot do what was asked; never carries key material."""


class KeyVersionError(KeyringError):
    """A key version is unknown or was destroyed (crypto-shredded)."""


class _MasterKey:
    """Holds one master key so that accidental printing (tracebacks, debuggers) shows no bytes."""

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        self._material = material

    def __repr__(self) -> str:
        return "<master key redacted>"

    __str__ = __repr__


@dataclass(frozen=True)
class KeyVersionInfo:
    """What may be shown about a key version: its number, dates and state, never the key."""

    version: int
    created: str | None
    active: bool
    destroyed: str | None = None


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class Keyring:
    """Versioned master keys; one is active for new tokens, older ones still verify and reveal."""

    __slots__ = ("_active", "_created", "_derived", "_destroyed", "_keys", "source")

    def __init__(
        self,
        keys: Mapping[int, bytes],
        active: int,
        created: Mapping[int, str] | None = None,
        destroyed: Mapping[int, str] | None = None,
        source: str = "memory",
    ) -> None:
        if active not in keys:
            raise KeyringError(f"keyring ({source}): active version {active} has no key")
        for version, material in keys.items():
            if len(material) != MASTER_KEY_BYTES:
                raise KeyringError(
                    f"keyring ({source}): version {version} key is not {MASTER_KEY_BYTES} bytes"
                )
        self._keys = {int(v): _MasterKey(bytes(k)) for v, k in keys.items()}
        self._active = int(active)
        self._created = {int(v): str(c) for v, c in (created or {}).items()}
        self._destroyed = {int(v): str(d) for v, d in (destroyed or {}).items()}
        self._derived: dict[tuple[str, str, int, int], bytes] = {}
        self.source = source

    def __repr__(self) -> str:
        return f"Keyring(source={self.source!r}, active={self._active}, versions={list(self.versions)})"

    __str__ = __repr__

    @property
    def active_version(self) -> int:
        """The version used for new tokens and ciphertexts."""
        return self._active

    @property
    def versions(self) -> tuple[int, ...]:
        """Versions whose keys are still held, ascending."""
        return tuple(sorted(self._keys))

    def describe(self) -> list[KeyVersionInfo]:
        """Every version ever seen (held or destroyed), for `hub keys list` and the officer's report."""
        numbers = sorted(set(self._keys) | set(self._destroyed))
        return [
            KeyVersionInfo(v, self._created.get(v), v == self._active, self._destroyed.get(v))
            for v in numbers
        ]

    def derive(self, purpose: str, domain: str, version: int | None = None, length: int = 32) -> bytes:
        """HKDF-SHA256 key for one purpose and domain, with info = 'purpose/domain/vN'."""
        if not _NAME.match(purpose) or not _NAME.match(domain):
            raise KeyringError(f"purpose '{purpose}' and domain '{domain}' must be lower_snake_case")
        number = self._active if version is None else int(version)
        cache_key = (purpose, domain, number, length)
        derived = self._derived.get(cache_key)
        if derived is None:
            master = self._master(number)
            derived = HKDF(
                algorithm=hashes.SHA256(),
                length=length,
                salt=None,
                info=f"{purpose}/{domain}/v{number}".encode(),
            ).derive(master._material)
            self._derived[cache_key] = derived
        return derived

    def _master(self, version: int) -> _MasterKey:
        master = self._keys.get(version)
        if master is not None:
            return master
        if version in self._destroyed:
            raise KeyVersionError(
                f"key version {version} was destroyed on {self._destroyed[version]}: "
                "what it protected is crypto-shredded"
            )
        raise KeyVersionError(f"key version {version} is not in the keyring ({self.source})")

    # -- construction and serialisation ------------------------------------------------------------------

    @classmethod
    def generate(cls, source: str = "memory") -> Keyring:
        """A fresh keyring with one random version-1 key."""
        return cls({1: secrets.token_bytes(MASTER_KEY_BYTES)}, 1, {1: _now()}, source=source)

    @classmethod
    def from_json(cls, text: str, source: str = "json") -> Keyring:
        """Parse the keyring JSON; errors name the source and the version, never the key."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"keyring ({source}): not valid JSON (line {exc.lineno})") from None
        if not isinstance(raw, dict) or raw.get("format") != KEYRING_FORMAT:
            raise KeyringError(f'keyring ({source}): expected a JSON object with "format": {KEYRING_FORMAT}')
        versions = raw.get("versions")
        if not isinstance(versions, dict) or not versions:
            raise KeyringError(f'keyring ({source}): "versions" must be a non-empty object')
        keys: dict[int, bytes] = {}
        created: dict[int, str] = {}
        for name, entry in versions.items():
            try:
                number = int(name)
            except ValueError:
                raise KeyringError(f"keyring ({source}): version '{name}' is not an integer") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                raise KeyringError(f'keyring ({source}): version {number} needs a base64 "key"')
            try:
                keys[number] = base64.b64decode(entry["key"], validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"keyring ({source}): version {number} key is not valid base64") from None
            if entry.get("created") is not None:
                created[number] = str(entry["created"])
        destroyed_raw = raw.get("destroyed") or {}
        if not isinstance(destroyed_raw, dict):
            raise KeyringError(f'keyring ({source}): "destroyed" must be an object')
        active = raw.get("active")
        if not isinstance(active, int):
            raise KeyringError(f'keyring ({source}): "active" must be an integer version')
        destroyed = {int(v): str(d) for v, d in destroyed_raw.items()}
        return cls(keys, active, created, destroyed, source=source)

    @classmethod
    def from_file(cls, path: Path | str) -> Keyring:
        """Read a keyfile; refuse one whose mode lets group or others read or write it."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise KeyringError(
                f"keyring file {path} does not exist; run `hub keys init` for the demo"
            ) from None
        except OSError as exc:
            raise KeyringError(f"keyring file {path}: cannot read ({exc.strerror})") from None
        if mode & 0o077:
            raise KeyringError(
                f"keyring file {path} has mode {mode & 0o777:04o}: group or others may read it; "
                f"refusing to use it (chmod 600 {path}, and consider whether the keys must be rotated)"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyringError(f"keyring file {path}: cannot read ({exc.strerror})") from None
        return cls.from_json(text, source=str(path))

    @classmethod
    def load(cls, keyring_json: str | None, keyfile: Path | str) -> Keyring:
        """The hub's keyring: the secrets backend's JSON when given, else the (demo) keyfile."""
        if keyring_json:
            return cls.from_json(keyring_json, source=KEYRING_ENV)
        return cls.from_file(keyfile)

    def to_json(self) -> str:
        """The keyring JSON, key material included: only for writing the keyfile or the secrets backend."""
        raw: dict[str, object] = {
            "format": KEYRING_FORMAT,
            "active": self._active,
            "versions": {
                str(v): {
                    "key": base64.b64encode(k._material).decode("ascii"),
                    "created": self._created.get(v),
                }
                for v, k in sorted(self._keys.items())
            },
        }
        if self._destroyed:
            raw["destroyed"] = {str(v): d for v, d in sorted(self._destroyed.items())}
        return json.dumps(raw, indent=2) + "\n"

    def rotated(self) -> Keyring:
        """A copy with a new random version made active; older versions stay for verify and reveal."""
        number = max([*self._keys, *self._destroyed]) + 1
        keys = {v: k._material for v, k in self._keys.items()} | {
            number: secrets.token_bytes(MASTER_KEY_BYTES)
        }
        return Keyring(keys, number, self._created | {number: _now()}, self._destroyed, self.source)

    def without(self, version: int) -> Keyring:
        """A copy with one version destroyed (crypto-shredding); the active version cannot be destroyed."""
        if version == self._active:
            raise KeyringError(f"version {version} is active: rotate first, then destroy it")
        if version not in self._keys:
            raise KeyVersionError(f"key version {version} is not in the keyring ({self.source})")
        keys = {v: k._material for v, k in self._keys.items() if v != version}
        return Keyring(keys, self._active, self._created, self._destroyed | {version: _now()}, self.source)


def init_keyfile(path: Path | str) -> Keyring:
    """Write a new demo keyfile with mode 0600; refuse to overwrite an existing one. Show DEMO_WARNING."""
    path = Path(path)
    if path.exists():
        raise KeyringError(f"keyring file {path} already exists; refusing to overwrite it")
    keyring = Keyring.generate(source=str(path))
    try:
        write_atomic(path, keyring.to_json(), exclusive=True)
    except FileExistsError:
        raise KeyringError(f"keyring file {path} already exists; refusing to overwrite it") from None
    log.info("demo keyring written to %s (mode 0600)", path)
    return keyring


def rotate_keyfile(path: Path | str) -> Keyring:
    """Add a new active version to a keyfile and return the new keyring."""
    path = Path(path)
    keyring = Keyring.from_file(path).rotated()
    write_atomic(path, keyring.to_json())
    log.info("keyring %s rotated: version %d is active", path, keyring.active_version)
    return keyring


def destroy_key_version(path: Path | str, version: int) -> Keyring:
    """Delete one version from a keyfile: what it protected can no longer be verified or revealed."""
    path = Path(path)
    keyring = Keyring.from_file(path).without(version)
    write_atomic(path, keyring.to_json())
    log.warning(
        "keyring %s: version %d destroyed; values protected under it are crypto-shredded", path, version
    )
    return keyring
