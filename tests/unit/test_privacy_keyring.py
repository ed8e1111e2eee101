"""Keyring: HKDF derivation, rotation, crypto-shredding, the 0600 demo keyfile, and no key in any text."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from hub.privacy_cli import keys
from hub.settings import Settings
from privacy.keyring import (
    KEYRING_ENV,
    Keyring,
    KeyringError,
    KeyVersionError,
    destroy_key_version,
    init_keyfile,
    rotate_keyfile,
)
from privacy.operators import _decrypt_value, encrypt_value, token_series, token_value, verify_token


def _key_texts(keyring: Keyring) -> list[str]:
    """Every textual form of the master keys, to look for in reprs, errors and output."""
    raw = json.loads(keyring.to_json())
    texts = []
    for entry in raw["versions"].values():
        material = base64.b64decode(entry["key"])
        texts += [entry["key"], material.hex(), repr(material)]
    return texts


def test_derive_is_deterministic_and_separated() -> None:
    keyring = Keyring.generate()
    a = keyring.derive("token", "person")
    assert a == keyring.derive("token", "person", version=1) and len(a) == 32
    assert a != keyring.derive("token", "linkage")
    assert a != keyring.derive("encrypt", "person")
    assert len(keyring.derive("encrypt", "person", length=64)) == 64
    rotated = keyring.rotated()
    assert rotated.active_version == 2
    assert rotated.derive("token", "person", version=1) == a
    assert rotated.derive("token", "person") != a
    with pytest.raises(KeyringError):
        keyring.derive("token", "Person/1")


def test_repr_and_errors_never_show_key_material() -> None:
    keyring = Keyring.generate().rotated()
    secrets = _key_texts(keyring)
    texts = [repr(keyring), str(keyring), repr(keyring.describe()), repr(keyring._keys)]
    for bad in (
        keyring.to_json().replace('"format": 1', '"format": 2'),
        keyring.to_json().replace('"active": 2', '"active": 7'),
        keyring.to_json()[:-5],
        keyring.to_json().replace('=",', '=!",'),
    ):
        with pytest.raises(KeyringError) as err:
            Keyring.from_json(bad, source="test")
        texts += [str(err.value), repr(err.value)]
        # no chained exception (a JSON or base64 error could quote the document)
        assert err.value.__cause__ is None and (
            err.value.__context__ is None or err.value.__suppress_context__
        )
    for text in texts:
        assert not any(s in text for s in secrets), text


def test_rotation_keeps_old_tokens_verifiable_and_destroying_shreds() -> None:
    keyring = Keyring.generate()
    ids = pd.Series(["11010519491231002X", "440524188001010014"], dtype="string")
    old_tokens = token_series(ids, keyring, "person")
    old_cipher = encrypt_value("张三", keyring, "person_name")
    rotated = keyring.rotated()
    new_tokens = token_series(ids, rotated, "person")
    assert all(t.startswith("t1.") for t in old_tokens) and all(t.startswith("t2.") for t in new_tokens)
    assert (old_tokens != new_tokens).all()
    assert verify_token(old_tokens[0], ids[0], rotated, "person")
    assert verify_token(new_tokens[0], ids[0], rotated, "person")
    assert not verify_token(old_tokens[0], ids[1], rotated, "person")
    assert _decrypt_value(old_cipher, rotated, "person_name") == "张三"
    shredded = rotated.without(1)
    with pytest.raises(KeyVersionError, match="crypto-shredded"):
        _decrypt_value(old_cipher, shredded, "person_name")
    with pytest.raises(KeyVersionError):
        verify_token(old_tokens[0], ids[0], shredded, "person")
    with pytest.raises(KeyringError, match="active"):
        shredded.without(2)


def test_tokens_stable_per_value_domain_and_version() -> None:
    keyring = Keyring.generate()
    value = "11010519491231002X"
    assert token_value(value, keyring, "person") == token_value(value, keyring, "person")
    assert token_value(value, keyring, "person") != token_value(value, keyring, "linkage")
    assert token_value(value, keyring, "person") != token_value(value, keyring.rotated(), "person")
    series = token_series(pd.Series([value, value, None], dtype="string"), keyring, "person")
    assert series[0] == series[1] == token_value(value, keyring, "person") and pd.isna(series[2])


def test_keyfile_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "demo-keyring.json"
    first = init_keyfile(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyringError, match="refusing to overwrite"):
        init_keyfile(path)
    rotated = rotate_keyfile(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert rotated.versions == (1, 2) and rotated.active_version == 2
    assert Keyring.from_file(path).derive("token", "person", 1) == first.derive("token", "person", 1)
    with pytest.raises(KeyringError, match="active"):
        destroy_key_version(path, 2)
    after = destroy_key_version(path, 1)
    assert after.versions == (2,)
    described = Keyring.from_file(path).describe()
    assert [(d.version, d.active, d.destroyed is not None) for d in described] == [
        (1, False, True),
        (2, True, False),
    ]


def test_environment_keyring_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    init_keyfile(path)
    other = Keyring.generate()
    settings = Settings.from_env({KEYRING_ENV: other.to_json(), "HUB_KEYRING": str(path)})
    loaded = settings.load_keyring()
    assert loaded.source == KEYRING_ENV
    assert loaded.derive("token", "person") == other.derive("token", "person")
    assert Settings.from_env({"HUB_KEYRING": str(path)}).load_keyring().source == str(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_keyfile_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.json"
    init_keyfile(path)
    path.chmod(mode)
    with pytest.raises(KeyringError, match=f"mode {mode:04o}.*refusing"):
        Keyring.from_file(path)
    path.chmod(0o600)
    assert Keyring.from_file(path).active_version == 1


def test_keys_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    monkeypatch.setenv("HUB_KEYRING", str(path))
    monkeypatch.delenv(KEYRING_ENV, raising=False)
    runner = CliRunner()
    init = runner.invoke(keys, ["init"])
    assert init.exit_code == 0, init.output
    assert "demo only" in init.output and stat.S_IMODE(path.stat().st_mode) == 0o600
    again = runner.invoke(keys, ["init"])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
    assert runner.invoke(keys, ["rotate"]).exit_code == 0
    refused = runner.invoke(keys, ["destroy", "--version", "2", "--yes"])
    assert refused.exit_code != 0 and "active" in refused.output
    assert runner.invoke(keys, ["destroy", "--version", "1", "--yes"]).exit_code == 0
    listing = runner.invoke(keys, ["list"])
    assert listing.exit_code == 0 and "v1" in listing.output and "destroyed" in listing.output
    assert "v2" in listing.output and "active" in listing.output
    secrets = _key_texts(Keyring.from_file(path))
    for result in (init, listing):
        assert not any(s in result.output for s in secrets)
    monkeypatch.setenv(KEYRING_ENV, Keyring.generate().to_json())
    from_env = runner.invoke(keys, ["rotate"])
    assert from_env.exit_code != 0 and KEYRING_ENV in from_env.output


def test_rotate_then_destroy_keeps_the_audit_log_verifiable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.cli import cli
    from privacy.audit_log import append_audit

    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    monkeypatch.delenv("HUB_KEYRING", raising=False)
    monkeypatch.delenv(KEYRING_ENV, raising=False)
    settings = Settings.from_env()
    keyring = init_keyfile(settings.keyring)
    engine = settings.engine()
    append_audit({"action": "reveal", "operator": "clerk1", "outcome": "revealed"}, settings.audit_log, engine, keyring)
    engine.dispose()
    runner = CliRunner()
    rotated = runner.invoke(cli, ["keys", "rotate"])
    assert rotated.exit_code == 0 and "resealed under key version 2" in rotated.output, rotated.output
    assert runner.invoke(cli, ["keys", "destroy", "--version", "1", "--yes"]).exit_code == 0
    verified = runner.invoke(cli, ["privacy", "verify-log"])
    assert verified.exit_code == 0, verified.output
    assert "2 entries" in verified.output
