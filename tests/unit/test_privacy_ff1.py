"""FF1 (NIST SP 800-38G): the nine published sample vectors, the batch path, and the minimum domain."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from privacy.ff1 import FF1, FF1DomainError, decrypt_digits, encrypt_digits
from privacy.keyring import Keyring
from privacy.operators import fpe_decrypt_series, fpe_series

KEY_128 = "2B7E151628AED2A6ABF7158809CF4F3C"
KEY_192 = KEY_128 + "EF4359D8D580AA4F"
KEY_256 = KEY_192 + "7F036D6F04FC6A94"
TWEAK_10 = "39383736353433323130"
TWEAK_36 = "3737373770717273373737"

# NIST SP 800-38G sample vectors FF1 samples 1-9 (AES-128, AES-192, AES-256; radix 10 and 36).
SAMPLES = [
    (1, KEY_128, 10, "", "0123456789", "2433477484"),
    (2, KEY_128, 10, TWEAK_10, "0123456789", "6124200773"),
    (3, KEY_128, 36, TWEAK_36, "0123456789abcdefghi", "a9tv40mll9kdu509eum"),
    (4, KEY_192, 10, "", "0123456789", "2830668132"),
    (5, KEY_192, 10, TWEAK_10, "0123456789", "2496655549"),
    (6, KEY_192, 36, TWEAK_36, "0123456789abcdefghi", "xbj3kv35jrawxv32ysr"),
    (7, KEY_256, 10, "", "0123456789", "6657667009"),
    (8, KEY_256, 10, TWEAK_10, "0123456789", "1001623463"),
    (9, KEY_256, 36, TWEAK_36, "0123456789abcdefghi", "xs8a0azh2avyalyzuwd"),
]


@pytest.mark.parametrize(("sample", "key", "radix", "tweak", "plaintext", "ciphertext"), SAMPLES)
def test_nist_sample_vectors(
    sample: int, key: str, radix: int, tweak: str, plaintext: str, ciphertext: str
) -> None:
    ff1 = FF1(bytes.fromhex(key), radix)
    assert ff1.encrypt_text(plaintext, bytes.fromhex(tweak)) == ciphertext, f"sample {sample}"
    assert ff1.decrypt_text(ciphertext, bytes.fromhex(tweak)) == plaintext, f"sample {sample}"


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s[2] == 10], ids=lambda s: f"sample{s[0]}")
def test_batch_path_reproduces_radix10_vectors(sample: tuple[int, str, int, str, str, str]) -> None:
    _, key, _, tweak, plaintext, ciphertext = sample
    assert encrypt_digits(bytes.fromhex(key), [plaintext], bytes.fromhex(tweak)) == [ciphertext]
    assert decrypt_digits(bytes.fromhex(key), [ciphertext], bytes.fromhex(tweak)) == [plaintext]


@pytest.mark.parametrize("length", [6, 7, 9, 12, 18, 20, 31, 32])
@pytest.mark.parametrize("tweak", [b"", b"household", b"t" * 20])
def test_batch_path_equals_reference(length: int, tweak: bytes) -> None:
    rnd = random.Random(length)
    key = bytes.fromhex(KEY_256)
    numbers = ["".join(rnd.choice("0123456789") for _ in range(length)) for _ in range(40)]
    reference = FF1(key, 10)
    expected = [reference.encrypt_text(n, tweak) for n in numbers]
    assert encrypt_digits(key, numbers, tweak) == expected
    assert decrypt_digits(key, expected, tweak) == numbers


def test_domain_under_one_million_is_refused() -> None:
    ff1 = FF1(bytes.fromhex(KEY_128), 10)
    with pytest.raises(FF1DomainError):
        ff1.encrypt_text("12345")
    with pytest.raises(FF1DomainError):
        encrypt_digits(bytes.fromhex(KEY_128), ["12345"])
    assert ff1.encrypt_text("123456") != "123456"  # 10**6 exactly is allowed
    with pytest.raises(FF1DomainError):
        FF1(bytes.fromhex(KEY_128), 36).encrypt_text("abc")  # 36**3 < 10**6


def test_fpe_column_keeps_shape_and_refuses_short_values() -> None:
    keyring = Keyring.generate()
    values = pd.Series(["JZ123456789012", "12345", "150702001", None, "DB0000000001"], dtype="string")
    out = fpe_series(values, keyring, "residence_permit")
    assert out[0].startswith("JZ") and len(out[0]) == 14 and out[0][2:].isdigit() and out[0] != values[0]
    assert pd.isna(out[1]), "five digits is a domain under 10**6: refused"
    assert len(out[2]) == 9 and out[2].isdigit()
    assert pd.isna(out[3])
    assert out[4].startswith("DB") and len(out[4]) == 12
    back = fpe_decrypt_series(out, keyring, "residence_permit", keyring.active_version)
    assert back[[0, 2, 4]].tolist() == values[[0, 2, 4]].tolist()
    # deterministic per value, domain and version
    assert fpe_series(values, keyring, "residence_permit")[0] == out[0]
    assert fpe_series(values, keyring, "household")[0] != out[0]
