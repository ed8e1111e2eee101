"""Audited reveal: plaintext for a named operator who gives a reason, and only through the audit log.

Every attempt, granted or not, is appended to the HMAC-chained audit log before anything is returned;
the log holds a keyed token of the value (never the plaintext), so an auditor can ask who saw whose data.
``reveal`` opens one encrypt-treated value, ``read_quarantine`` one quarantined batch for a data steward.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from privacy.audit_log import append_audit
from privacy.keyring import Keyring, KeyringError
from privacy.operators import CiphertextError, _decrypt_value, key_version_of, token_value
from privacy.policy import Policy
from schemas.base import HubError
from schemas.quarantine import QuarantineEntry, QuarantineError, QuarantineStore

log = logging.getLogger(__name__)

AUDIT_DOMAIN = "audit"
MIN_REASON_CHARS = 4
QUARANTINE_PURPOSE = "quarantine"
QUARANTINE_DOMAIN = "quarantine"


class RevealRefused(HubError, PermissionError):
    """A reveal was refused or failed; the attempt is already in the audit log."""


def _clean(text: str | None) -> str | None:
    return (text or "").strip() or None


def refusal_for(operator: str | None, reason: str | None) -> str | None:
    """Why a request may not see plaintext (no operator, no reason of MIN_REASON_CHARS), or None if it may."""
    missing = []
    if _clean(operator) is None:
        missing.append("an operator")
    if len(_clean(reason) or "") < MIN_REASON_CHARS:
        missing.append(f"a reason of at least {MIN_REASON_CHARS} characters")
    return "refused: " + " and ".join(missing) + " required" if missing else None


def reveal(
    ciphertext: str,
    domain: str,
    reason: str | None,
    operator: str | None,
    keyring: Keyring,
    policy: Policy,
    log_path: Path | str,
    engine: sa.Engine,
) -> str:
    """Return the plaintext of ``ciphertext`` and log the reveal; log and raise RevealRefused otherwise.

    The log lives at ``log_path`` with its head in ``engine``'s database; AuditLogError when it cannot take
    the entry, and then nothing is returned.
    """
    ciphertext = (ciphertext or "").strip()
    event: dict[str, object] = {
        "action": "reveal",
        "operator": _clean(operator),
        "reason": _clean(reason),
        "domain": domain,
        "key_version": None,
        "value_token": None,
        # identifies what was asked for even when it does not decrypt; ciphertexts are already published
        "ciphertext_sha256": hashlib.sha256(ciphertext.encode()).hexdigest(),
    }
    try:
        event["key_version"] = key_version_of(ciphertext)
    except CiphertextError:
        pass
    refusal = refusal_for(operator, reason)
    if refusal is None and domain not in policy.encrypt_domains:
        refusal = f"refused: domain '{domain}' holds no encrypt-treated values"
    if refusal is not None:
        append_audit(event | {"outcome": refusal}, log_path, engine, keyring)
        log.warning("reveal %s (domain %s, operator %s)", refusal, domain, event["operator"])
        raise RevealRefused(refusal)
    try:
        plaintext = _decrypt_value(ciphertext, keyring, domain)
    except (CiphertextError, KeyringError) as exc:
        outcome = f"failed: {exc}"
        append_audit(event | {"outcome": outcome}, log_path, engine, keyring)
        log.warning("reveal %s (operator %s)", outcome, event["operator"])
        raise RevealRefused(outcome) from None
    event["value_token"] = token_value(plaintext, keyring, AUDIT_DOMAIN)
    append_audit(event | {"outcome": "revealed"}, log_path, engine, keyring)
    log.info("reveal granted: domain %s, key v%s, operator %s", domain, event["key_version"], event["operator"])
    return plaintext


def quarantine_key(keyring: Keyring, version: int) -> bytes:
    """The AES-256 key of one quarantine key version (HKDF quarantine/quarantine/vN)."""
    return keyring.derive(QUARANTINE_PURPOSE, QUARANTINE_DOMAIN, version)


def read_quarantine(
    store: QuarantineStore,
    entry: QuarantineEntry,
    operator: str | None,
    reason: str | None,
    keyring: Keyring,
    log_path: Path | str,
    engine: sa.Engine,
) -> pd.DataFrame:
    """Decrypt one quarantined batch for a data steward and log who looked and why; RevealRefused otherwise.

    A batch under another key version than ``store`` holds is opened with that version's key from
    ``keyring``; a destroyed version is logged and refused as crypto-shredded.
    """
    event: dict[str, object] = {
        "action": "quarantine_show",
        "operator": _clean(operator),
        "reason": _clean(reason),
        "dataset": entry.dataset,
        "batch_id": entry.batch_id,
        "rows": entry.rows,
        "key_version": entry.key_version,
    }
    refusal = refusal_for(operator, reason)
    if refusal is not None:
        append_audit(event | {"outcome": refusal}, log_path, engine, keyring)
        log.warning("quarantine show %s (batch %s, operator %s)", refusal, entry.batch_id, event["operator"])
        raise RevealRefused(refusal)
    try:
        if entry.key_version != store.key_version:
            store = QuarantineStore(store.root, quarantine_key(keyring, entry.key_version), entry.key_version)
        frame = store._read(entry)
    except (KeyringError, QuarantineError) as exc:
        outcome = f"failed: {exc}"
        append_audit(event | {"outcome": outcome}, log_path, engine, keyring)
        log.warning("quarantine show %s (operator %s)", outcome, event["operator"])
        raise RevealRefused(outcome) from None
    append_audit(event | {"outcome": "shown"}, log_path, engine, keyring)
    log.info("quarantine batch %s shown to %s (%d rows)", entry.batch_id, event["operator"], entry.rows)
    return frame
