"""Audited reveal and the hash-chained log: every attempt logged, tampering of any kind detected."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from privacy.audit_log import append_audit, read_entries, verify_log
from hub.privacy_cli import privacy
from privacy.keyring import KEYRING_ENV, Keyring
from privacy.operators import encrypt_value, token_value
from privacy.policy import load_policy
from privacy.reveal import AUDIT_DOMAIN, RevealRefused, reveal

NAME = "巴特尔"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


def _filled_log(path: Path, entries: int = 5) -> Path:
    for i in range(entries):
        append_audit({"action": "quarantine show", "operator": f"steward{i}", "rows": i}, path)
    return path


def test_chain_verifies_and_entries_link(tmp_path: Path) -> None:
    log = _filled_log(tmp_path / "audit" / "reveal.log")
    entries = read_entries(log)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert verify_log(log).ok and verify_log(log).entries == 5
    assert verify_log(tmp_path / "none.log").ok


def _rewrite(log: Path, lines: list[str]) -> None:
    log.write_text("".join(lines), encoding="utf-8")


def test_edit_is_detected(tmp_path: Path) -> None:
    log = _filled_log(tmp_path / "reveal.log")
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["operator"] = "someone else"
    lines[2] = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
    _rewrite(log, lines)
    result = verify_log(log)
    assert not result.ok and result.first_broken == 3 and "edited" in str(result.reason)


def test_removal_is_detected(tmp_path: Path) -> None:
    log = _filled_log(tmp_path / "reveal.log")
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    _rewrite(log, lines[:1] + lines[2:])
    result = verify_log(log)
    assert not result.ok and result.first_broken == 2


def test_reorder_is_detected(tmp_path: Path) -> None:
    log = _filled_log(tmp_path / "reveal.log")
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1], lines[3] = lines[3], lines[1]
    _rewrite(log, lines)
    result = verify_log(log)
    assert not result.ok and result.first_broken == 2


def test_cutting_entries_off_the_end_is_detected(tmp_path: Path) -> None:
    log = _filled_log(tmp_path / "reveal.log")
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    _rewrite(log, lines[:-1])
    result = verify_log(log)
    assert not result.ok and result.first_broken == 5 and "cut off" in str(result.reason)


def test_edit_with_recomputed_hash_still_breaks_the_chain(tmp_path: Path) -> None:
    from privacy.audit_log import entry_hash

    log = _filled_log(tmp_path / "reveal.log")
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    entry = json.loads(lines[1])
    entry["reason"] = "covering my tracks"
    entry["hash"] = entry_hash(entry)
    lines[1] = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
    _rewrite(log, lines)
    result = verify_log(log)
    assert not result.ok and result.first_broken == 3


def test_append_refuses_to_forge_chain_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="may not set"):
        append_audit({"action": "x", "hash": "0" * 64}, tmp_path / "reveal.log")


def test_reveal_logs_every_attempt_without_plaintext(tmp_path: Path, keyring: Keyring) -> None:
    log = tmp_path / "reveal.log"
    policy = load_policy()
    ciphertext = encrypt_value(NAME, keyring, "person_name")
    with pytest.raises(RevealRefused, match="a reason"):
        reveal(ciphertext, "person_name", "", "clerk-01", keyring, policy, log)
    with pytest.raises(RevealRefused, match="an operator"):
        reveal(ciphertext, "person_name", "低保复核 2026-117", None, keyring, policy, log)
    with pytest.raises(RevealRefused, match="no encrypt-treated values"):
        reveal(ciphertext, "linkage_qi", "低保复核 2026-117", "clerk-01", keyring, policy, log)
    with pytest.raises(RevealRefused, match="does not decrypt"):
        reveal(ciphertext, "contact", "低保复核 2026-117", "clerk-01", keyring, policy, log)
    assert reveal(ciphertext, "person_name", "低保复核 2026-117", "clerk-01", keyring, policy, log) == NAME
    entries = read_entries(log)
    assert len(entries) == 5 and verify_log(log).ok
    assert [e["outcome"].split(":")[0] for e in entries] == [
        "refused",
        "refused",
        "refused",
        "failed",
        "revealed",
    ]
    granted = entries[-1]
    assert granted["operator"] == "clerk-01" and granted["reason"] == "低保复核 2026-117"
    assert granted["domain"] == "person_name" and granted["key_version"] == 1
    assert granted["value_token"] == token_value(NAME, keyring, AUDIT_DOMAIN)
    assert NAME not in log.read_text(encoding="utf-8")


def test_reveal_after_rotation_and_after_shredding(tmp_path: Path, keyring: Keyring) -> None:
    log = tmp_path / "reveal.log"
    policy = load_policy()
    old = encrypt_value("13800138000", keyring, "contact")
    rotated = keyring.rotated()
    assert reveal(old, "contact", "上门服务核对", "clerk-02", rotated, policy, log) == "13800138000"
    with pytest.raises(RevealRefused, match="crypto-shredded"):
        reveal(old, "contact", "上门服务核对", "clerk-02", rotated.without(1), policy, log)
    assert read_entries(log)[-1]["outcome"].startswith("failed")


def test_reveal_and_verify_log_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyring: Keyring
) -> None:
    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    monkeypatch.setenv(KEYRING_ENV, keyring.to_json())
    ciphertext = encrypt_value(NAME, keyring, "person_name")
    runner = CliRunner()
    args = ["reveal", "--domain", "person_name", "--value", ciphertext]
    refused = runner.invoke(privacy, args)
    assert refused.exit_code != 0 and "reason" in refused.output and NAME not in refused.output
    granted = runner.invoke(privacy, [*args, "--reason", "特困供养复核", "--operator", "clerk-03"])
    assert granted.exit_code == 0, granted.output
    assert granted.output.strip() == NAME
    log = tmp_path / "audit" / "reveal.log"
    assert len(read_entries(log)) == 2
    ok = runner.invoke(privacy, ["verify-log"])
    assert ok.exit_code == 0 and "2 entries" in ok.output
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    log.write_text(lines[1], encoding="utf-8")
    broken = runner.invoke(privacy, ["verify-log", "--log", str(log)])
    assert broken.exit_code != 0 and "entry 1" in broken.output
