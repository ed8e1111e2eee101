"""Benchmark protect(): 1,000,000 hukou rows under the demo policy, against a floor measured in the same run.

The floor is a plain Python loop making, for every row, the same HMAC-SHA256 and AES-SIV calls the
policy asks for (tokens, ciphertexts, linkage token and encrypted quasi-identifiers) on pre-encoded
bytes: pure crypto cost with no pandas at all. Target: protect at least half the floor's rate.
Run: python -m bench.protect [rows]
"""

from __future__ import annotations

import hmac
import sys

import pandas as pd
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from bench.measure import BenchReport, peak_rss_mib
from privacy.keyring import Keyring
from privacy.operators import ENCRYPT_PURPOSE, SIV_KEY_BYTES, TOKEN_PURPOSE, canonical_text
from privacy.policy import LINKAGE_DOMAIN, LINKAGE_QI_DOMAIN, Policy, load_policy
from privacy.protect import protect
from privacy.synthetic import conformed_batch
from schemas.contract import Contract, get_contract

DATASET = "gongan.hukou"
TARGET_RATIO = 0.5
MEMORY_LIMIT_MIB = 2048


def _floor_calls(
    batch: pd.DataFrame, contract: Contract, policy: Policy, keyring: Keyring
) -> tuple[list[tuple[bytes, list[bytes]]], list[tuple[AESSIV, bytes, list[bytes]]]]:
    """Per-column inputs (bytes) and keys for every HMAC and AES-SIV call protect() makes per row."""
    hmacs: list[tuple[bytes, list[bytes]]] = []
    sivs: list[tuple[AESSIV, bytes, list[bytes]]] = []

    def as_bytes(values: pd.Series, field_type: str | None) -> list[bytes]:
        return [v.encode() for v in canonical_text(values, field_type).fillna("").tolist()]

    for cf in contract.fields:
        rule = policy.rule_for(contract, cf)
        if rule is None or cf.name not in batch.columns or rule.treatment.domain is None:
            continue
        domain = rule.treatment.domain
        if rule.treatment.kind == "token":
            hmacs.append((keyring.derive(TOKEN_PURPOSE, domain), as_bytes(batch[cf.name], cf.type)))
        elif rule.treatment.kind == "encrypt":
            siv = AESSIV(keyring.derive(ENCRYPT_PURPOSE, domain, None, SIV_KEY_BYTES))
            sivs.append((siv, domain.encode(), as_bytes(batch[cf.name], cf.type)))
    ids = as_bytes(batch["id_number"], "id_number")
    hmacs.append((keyring.derive(TOKEN_PURPOSE, LINKAGE_DOMAIN), ids))
    qi_siv = AESSIV(keyring.derive(ENCRYPT_PURPOSE, LINKAGE_QI_DOMAIN, None, SIV_KEY_BYTES))
    for name, kind in (("name", "name"), ("birth_date", "date"), ("sex", "code"), ("community_code", "code")):
        values = batch[name].astype("string").str.slice(0, 6) if name == "community_code" else batch[name]
        sivs.append((qi_siv, LINKAGE_QI_DOMAIN.encode(), as_bytes(values, kind)))
    return hmacs, sivs


def run_floor(hmacs: list[tuple[bytes, list[bytes]]], sivs: list[tuple[AESSIV, bytes, list[bytes]]]) -> int:
    """The plain loop: one HMAC or AES-SIV call per row and column; returns the number of calls."""
    calls = 0
    digest = hmac.digest
    rows = len(hmacs[0][1])
    for r in range(rows):
        for key, values in hmacs:
            digest(key, values[r], "sha256")
        for siv, aad, values in sivs:
            siv.encrypt(values[r], [aad])
        calls += len(hmacs) + len(sivs)
    return calls


def main(rows: int = 1_000_000) -> int:
    """Generate, protect, measure the floor, print the report; exit 1 if a target is missed."""
    contract, policy, keyring = get_contract(DATASET), load_policy(), Keyring.generate()
    report = BenchReport(f"protect: {rows:,} {DATASET} rows under policy v{policy.version}")
    with report.stage("generate conformed batch", records=rows):
        batch = conformed_batch(contract, rows, seed=20261101)
    with report.stage("protect", records=rows):
        result = protect(batch, contract, policy, keyring)
    assert len(result.data) == rows and len(result.linkage) == rows
    hmacs, sivs = _floor_calls(batch, contract, policy, keyring)
    with report.stage("HMAC + AES-SIV loop", records=rows, floor=True):
        calls = run_floor(hmacs, sivs)
    ratio = report.stages["protect"].rate / report.floors["HMAC + AES-SIV loop"].rate
    peak = peak_rss_mib()
    report.notes.append(f"floor makes {calls / rows:.0f} crypto calls per row ({len(hmacs)} HMAC, {len(sivs)} AES-SIV)")
    report.notes.append(
        f"ratio protect/floor {ratio:.2f} (target >= {TARGET_RATIO}); peak {peak:,.0f} MiB "
        f"(target < {MEMORY_LIMIT_MIB:,} MiB)"
    )
    report.print(ratios={"protect": "HMAC + AES-SIV loop"})
    return 0 if ratio >= TARGET_RATIO and peak < MEMORY_LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
