"""Audited reveal: an operator and a reason for every look, every attempt logged, no decrypt around the log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import privacy.operators as operators
from hub.privacy_cli import privacy
from privacy.audit_log import AuditLogError, audit_head, read_entries, verify_log
from privacy.keyring import KEYRING_ENV, Keyring
from privacy.operators import encrypt_value, token_value
from privacy.policy import load_policy
from privacy.reveal import AUDIT_DOMAIN, RevealRefused, reveal
from schemas.base import HubError

NAME = "巴特尔"
REASON = "低保复核 2026-117"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}")


def test_reveal_logs_every_attempt_without_plaintext(tmp_path: Path, keyring: Keyring, engine: sa.Engine) -> None:
    log = tmp_path / "reveal.log"
    policy = load_policy()
    ciphertext = encrypt_value(NAME, keyring, "person_name")
    with pytest.raises(RevealRefused, match="a reason"):
        reveal(ciphertext, "person_name", "", "clerk-01", keyring, policy, log, engine)
    with pytest.raises(RevealRefused, match="an operator"):
        reveal(ciphertext, "person_name", REASON, None, keyring, policy, log, engine)
    with pytest.raises(RevealRefused, match="no encrypt-treated values"):
        reveal(ciphertext, "linkage_qi", REASON, "clerk-01", keyring, policy, log, engine)
    with pytest.raises(RevealRefused, match="does not decrypt"):
        reveal(ciphertext, "contact", REASON, "clerk-01", keyring, policy, log, engine)
    assert reveal(ciphertext, "person_name", REASON, "clerk-01", keyring, policy, log, engine) == NAME
    entries = read_entries(log)
    assert len(entries) == 5 and verify_log(log, engine, keyring).ok
    assert [e["outcome"].split(":")[0] for e in entries] == ["refused", "refused", "refused", "failed", "revealed"]
    granted = entries[-1]
    assert granted["operator"] == "clerk-01" and granted["reason"] == REASON
    assert granted["domain"] == "person_name" and granted["key_version"] == 1
    assert granted["value_token"] == token_value(NAME, keyring, AUDIT_DOMAIN)
    assert NAME not in log.read_text(encoding="utf-8")
    assert issubclass(RevealRefused, HubError)


@pytest.mark.parametrize(
    ("reason", "operator", "missing"),
    [
        ("    ", "clerk-01", "a reason"),
        ("\t \n", "clerk-01", "a reason"),
        (" ab ", "clerk-01", "a reason"),
        (REASON, "   ", "an operator"),
        ("", "", "an operator and a reason"),
    ],
)
def test_blank_or_short_reason_and_blank_operator_are_refused_and_logged(
    tmp_path: Path, keyring: Keyring, engine: sa.Engine, reason: str, operator: str, missing: str
) -> None:
    log = tmp_path / "reveal.log"
    ciphertext = encrypt_value(NAME, keyring, "person_name")
    with pytest.raises(RevealRefused, match=missing):
        reveal(ciphertext, "person_name", reason, operator, keyring, load_policy(), log, engine)
    (entry,) = read_entries(log)
    assert entry["outcome"].startswith("refused") and entry["value_token"] is None


def test_raw_decrypt_is_not_public() -> None:
    """The only public way from a ciphertext to its plaintext is reveal, which logs."""
    assert not hasattr(operators, "decrypt_value")
    assert hasattr(operators, "_decrypt_value")


def test_reveal_shows_nothing_when_the_log_cannot_take_the_entry(
    tmp_path: Path, keyring: Keyring, engine: sa.Engine
) -> None:
    log = tmp_path / "reveal.log"
    policy = load_policy()
    ciphertext = encrypt_value(NAME, keyring, "person_name")
    for _ in range(2):
        reveal(ciphertext, "person_name", REASON, "clerk-01", keyring, policy, log, engine)
    log.write_text(log.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
    with pytest.raises(AuditLogError):
        reveal(ciphertext, "person_name", REASON, "clerk-01", keyring, policy, log, engine)


def test_reveal_after_rotation_and_after_shredding(tmp_path: Path, keyring: Keyring, engine: sa.Engine) -> None:
    log = tmp_path / "reveal.log"
    policy = load_policy()
    old = encrypt_value("13800138000", keyring, "contact")
    rotated = keyring.rotated()
    assert reveal(old, "contact", "上门服务核对", "clerk-02", rotated, policy, log, engine) == "13800138000"
    with pytest.raises(RevealRefused, match="crypto-shredded"):
        reveal(old, "contact", "上门服务核对", "clerk-02", rotated.without(1), policy, log, engine)
    assert read_entries(log)[-1]["outcome"].startswith("failed")
    assert verify_log(log, engine, rotated.without(1)).ok


def test_reveal_and_verify_log_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyring: Keyring) -> None:
    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    monkeypatch.delenv("HUB_DATABASE_URL", raising=False)
    monkeypatch.setenv(KEYRING_ENV, keyring.to_json())
    ciphertext = encrypt_value(NAME, keyring, "person_name")
    runner = CliRunner()
    args = ["reveal", "--domain", "person_name", "--value", ciphertext]
    refused = runner.invoke(privacy, [*args, "--reason", "   ", "--operator", "clerk-03"])
    assert refused.exit_code != 0 and "reason" in refused.output and NAME not in refused.output
    granted = runner.invoke(privacy, [*args, "--reason", "特困供养复核", "--operator", "clerk-03"])
    assert granted.exit_code == 0, granted.output
    assert granted.output.strip() == NAME
    log = tmp_path / "audit" / "reveal.log"
    assert len(read_entries(log)) == 2
    ok = runner.invoke(privacy, ["verify-log"])
    assert ok.exit_code == 0 and "2 entries" in ok.output
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(audit_head.c.seq)).scalar_one() == 2
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    log.write_text(lines[1], encoding="utf-8")
    broken = runner.invoke(privacy, ["verify-log", "--log", str(log)])
    assert broken.exit_code != 0 and "entry 1" in broken.output


def test_verify_log_command_fails_on_a_deleted_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keyring: Keyring
) -> None:
    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    monkeypatch.delenv("HUB_DATABASE_URL", raising=False)
    monkeypatch.setenv(KEYRING_ENV, keyring.to_json())
    runner = CliRunner()
    fresh = runner.invoke(privacy, ["verify-log"])
    assert fresh.exit_code == 0 and "0 entries" in fresh.output
    ciphertext = encrypt_value(NAME, keyring, "person_name")
    runner.invoke(privacy, ["reveal", "--domain", "person_name", "--value", ciphertext, "--operator", "x"])
    log = tmp_path / "audit" / "reveal.log"
    assert json.loads(log.read_text(encoding="utf-8"))["outcome"].startswith("refused")
    log.unlink()
    gone = runner.invoke(privacy, ["verify-log"])
    assert gone.exit_code != 0 and "missing" in gone.output
