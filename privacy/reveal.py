"""Audited reveal: decrypt one encrypt-treated value for a named operator who gives a reason.

Every attempt, granted or not, is appended to the hash-chained audit log before anything is shown;
the log holds a keyed token of the value (never the plaintext), so an auditor can ask who saw whose data.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from privacy.audit_log import append_audit
from privacy.keyring import Keyring, KeyringError
from privacy.operators import CiphertextError, decrypt_value, key_version_of, token_value
from privacy.policy import Policy

log = logging.getLogger(__name__)

AUDIT_DOMAIN = "audit"
MIN_REASON_CHARS = 4


class RevealRefused(PermissionError):
    """A reveal was refused or failed; the attempt is already in the audit log."""


def reveal(
    ciphertext: str,
    domain: str,
    reason: str | None,
    operator: str | None,
    keyring: Keyring,
    policy: Policy,
    log_path: Path | str | None = None,
) -> str:
    """Return the plaintext of ``ciphertext`` and log the reveal; log and raise RevealRefused otherwise."""
    ciphertext = (ciphertext or "").strip()
    event: dict[str, object] = {
        "action": "reveal",
        "operator": (operator or "").strip() or None,
        "reason": (reason or "").strip() or None,
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
    refusal = None
    missing = [
        *(["an operator"] if not event["operator"] else []),
        *(
            [f"a reason of at least {MIN_REASON_CHARS} characters"]
            if len(str(event["reason"] or "")) < MIN_REASON_CHARS
            else []
        ),
    ]
    if missing:
        refusal = "refused: " + " and ".join(missing) + " required"
    elif domain not in policy.encrypt_domains:
        refusal = f"refused: domain '{domain}' holds no encrypt-treated values"
    if refusal is not None:
        append_audit(event | {"outcome": refusal}, log_path)
        log.warning("reveal %s (domain %s, operator %s)", refusal, domain, event["operator"])
        raise RevealRefused(refusal)
    try:
        plaintext = decrypt_value(ciphertext, keyring, domain)
    except (CiphertextError, KeyringError) as exc:
        outcome = f"failed: {exc}"
        append_audit(event | {"outcome": outcome}, log_path)
        log.warning("reveal %s (operator %s)", outcome, event["operator"])
        raise RevealRefused(outcome) from None
    event["value_token"] = token_value(plaintext, keyring, AUDIT_DOMAIN)
    append_audit(event | {"outcome": "revealed"}, log_path)
    log.info(
        "reveal granted: domain %s, key v%s, operator %s", domain, event["key_version"], event["operator"]
    )
    return plaintext
