"""Pseudonymisation operators over pandas columns: token, encrypt, fpe, mask and generalise.

Keyed operators work once per distinct value (Arrow dictionary encoding) and map the results back, so a
column costs one HMAC or AES-SIV call per distinct value, not per row. Tokens read
``t<version>.<base64url>``, ciphertexts ``e<version>.<base64url>``; FF1 output keeps the digit shape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

from privacy.ff1 import FF1, MAX_BATCH_DIGITS, MIN_DOMAIN, transform_matrix
from privacy.keyring import Keyring
from schemas.base import HubError

TOKEN_PURPOSE = "token"
ENCRYPT_PURPOSE = "encrypt"
FPE_PURPOSE = "fpe"
SIV_KEY_BYTES = 64  # AES-SIV with a 512-bit key (two AES-256 keys)
FPE_MIN_DIGITS = len(str(MIN_DOMAIN)) - 1  # 10**6 needs six decimal digits
_VERSIONED = re.compile(r"^(?P<kind>[te])(?P<version>[0-9]+)\.(?P<body>[A-Za-z0-9_-]+)$")
_URLSAFE = bytes.maketrans(b"+/", b"-_")
STRING = pd.StringDtype()


class CiphertextError(HubError, ValueError):
    """A value is not a well-formed hub ciphertext, or does not decrypt under its domain and version."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _to_arrow(values: pd.Series) -> pa.Array:
    """The column as one Arrow (large) string array, without copying when it is already Arrow-backed."""
    arr = pa.array(values.astype(STRING).array)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _to_series(arr: pa.Array | pa.ChunkedArray, like: pd.Series) -> pd.Series:
    return pd.Series(pd.array(arr, dtype=STRING), index=like.index, name=like.name)


def canonical_text(values: pd.Series, field_type: str | None = None) -> pd.Series:
    """The text a keyed operator sees: dates as YYYY-MM-DD, datetimes ISO, numbers plain, NA kept."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        fmt = "%Y-%m-%d" if field_type == "date" else "%Y-%m-%dT%H:%M:%S"
        # format each distinct date once: a register has far fewer dates than rows
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        table = pa.array(pd.DatetimeIndex(uniques).strftime(fmt).to_numpy(dtype=object), type=pa.large_string())
        return _to_series(table.take(pa.array(codes, mask=codes < 0)), values)
    return values.astype(STRING)


def _per_distinct(values: pd.Series, compute: Callable[[pa.Array], pa.Array]) -> pd.Series:
    """Apply ``compute`` to the distinct non-missing values (a large_binary array) and map results back."""
    encoded = pc.dictionary_encode(_to_arrow(values))
    distinct = encoded.dictionary.cast(pa.large_binary())
    results = compute(distinct) if len(distinct) else pa.array([], type=pa.large_string())
    return _to_series(results.take(encoded.indices), values)


def _urlsafe_unpadded(b64: pa.Array) -> pa.Array:
    """Standard base64 text turned into unpadded base64url, column-wise."""
    b64 = pc.replace_substring(b64, "+", "-")
    b64 = pc.replace_substring(b64, "/", "_")
    return pc.replace_substring(b64, "=", "")


# -- token: HMAC-SHA256 ---------------------------------------------------------------------------------

_SHA256_BLOCK = 64


def hmac_sha256_many(key: bytes, values: Sequence[bytes]) -> list[bytes]:
    """HMAC-SHA256 (RFC 2104) of each value under one key, the same bytes as ``hmac.digest(key, v, "sha256")``.

    The key's inner and outer pad states are hashed once and copied per value, instead of once per value as
    ``hmac.digest`` does: about three times faster, and this is protect's hottest loop.
    """
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded)).copy
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded)).copy
    out = []
    for value in values:
        hashed = inner()
        hashed.update(value)
        wrapped = outer()
        wrapped.update(hashed.digest())
        out.append(wrapped.digest())
    return out



def token_series(values: pd.Series, keyring: Keyring, domain: str, version: int | None = None) -> pd.Series:
    """Keyed tokens 't<v>.<base64url(HMAC-SHA256)>' of each value; stable per value, domain and version."""
    number = keyring.active_version if version is None else version
    key = keyring.derive(TOKEN_PURPOSE, domain, number)
    prefix = np.frombuffer(f"t{number}.".encode(), dtype=np.uint8)

    def compute(distinct: pa.Array) -> pa.Array:
        n = len(distinct)
        # 32-byte digests each padded to 33 bytes encode to 44 characters whose first 43 are the
        # unpadded base64 of the digest, so one base64 call serves the whole column.
        joined = b"\0".join(hmac_sha256_many(key, distinct.to_pylist())) + b"\0"
        chars = np.frombuffer(binascii.b2a_base64(joined, newline=False).translate(_URLSAFE), dtype=np.uint8)
        width = len(prefix) + 43
        out = np.empty((n, width), dtype=np.uint8)
        out[:, : len(prefix)] = prefix
        out[:, len(prefix) :] = chars.reshape(n, 44)[:, :43]
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
        return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out)])

    return _per_distinct(values, compute)


def token_value(value: str, keyring: Keyring, domain: str, version: int | None = None) -> str:
    """The token of one value (front-desk lookup, audit entries)."""
    number = keyring.active_version if version is None else version
    key = keyring.derive(TOKEN_PURPOSE, domain, number)
    return f"t{number}." + _b64(hmac.digest(key, value.encode(), "sha256"))


def key_version_of(text: str) -> int:
    """The key version a token or ciphertext carries."""
    match = _VERSIONED.match(text)
    if match is None:
        raise CiphertextError("not a versioned hub token or ciphertext")
    return int(match["version"])


def verify_token(token: str, value: str, keyring: Keyring, domain: str) -> bool:
    """Whether ``token`` is the token of ``value`` under the key version it carries (any held version)."""
    match = _VERSIONED.match(token)
    if match is None or match["kind"] != "t":
        return False
    expected = token_value(value, keyring, domain, int(match["version"]))
    return hmac.compare_digest(expected, token)


# -- encrypt: deterministic AES-SIV, reversible only through reveal ------------------------------------------


def _siv(keyring: Keyring, domain: str, version: int) -> AESSIV:
    return AESSIV(keyring.derive(ENCRYPT_PURPOSE, domain, version, SIV_KEY_BYTES))


def encrypt_series(values: pd.Series, keyring: Keyring, domain: str, version: int | None = None) -> pd.Series:
    """Deterministic AES-SIV ciphertexts 'e<v>.<base64url>' with the domain as associated data."""
    number = keyring.active_version if version is None else version
    encrypt = _siv(keyring, domain, number).encrypt
    aad = [domain.encode()]
    prefix = pa.scalar(f"e{number}.", type=pa.large_string())
    b2a = binascii.b2a_base64

    def compute(distinct: pa.Array) -> pa.Array:
        b64 = pa.array([b2a(encrypt(v, aad), newline=False) for v in distinct.to_pylist()], type=pa.large_binary())
        return pc.binary_join_element_wise(prefix, _urlsafe_unpadded(b64.cast(pa.large_string())), _EMPTY)

    return _per_distinct(values, compute)


def encrypt_value(value: str, keyring: Keyring, domain: str, version: int | None = None) -> str:
    """The ciphertext of one value."""
    number = keyring.active_version if version is None else version
    return f"e{number}." + _b64(_siv(keyring, domain, number).encrypt(value.encode(), [domain.encode()]))


class _Decrypter:
    """Decrypts ciphertexts of one domain, with one AES-SIV instance per key version met."""

    def __init__(self, keyring: Keyring, domain: str) -> None:
        self.keyring, self.domain, self.aad = keyring, domain, [domain.encode()]
        self.sivs: dict[int, AESSIV] = {}

    def __call__(self, ciphertext: str) -> str:
        match = _VERSIONED.match(ciphertext.strip())
        if match is None or match["kind"] != "e":
            raise CiphertextError(f"not a hub ciphertext e<version>.<base64url> (domain '{self.domain}')")
        number = int(match["version"])
        siv = self.sivs.get(number)
        if siv is None:
            siv = self.sivs[number] = _siv(self.keyring, self.domain, number)
        try:
            return siv.decrypt(_unb64(match["body"]), self.aad).decode()
        except (InvalidTag, ValueError):
            raise CiphertextError(f"value does not decrypt under domain '{self.domain}' key v{number}") from None


def _decrypt_value(ciphertext: str, keyring: Keyring, domain: str) -> str:
    """Decrypt one ciphertext under the version it carries; private: people get plaintext via privacy.reveal."""
    return _Decrypter(keyring, domain)(ciphertext)


def decrypt_series(values: pd.Series, keyring: Keyring, domain: str) -> pd.Series:
    """Decrypt a column of ciphertexts inside the trusted zone (linkage); not for people: use reveal."""

    def compute(distinct: pa.Array) -> pa.Array:
        decrypt = _Decrypter(keyring, domain)
        texts = distinct.cast(pa.large_string()).to_pylist()
        return pa.array([decrypt(v) for v in texts], type=pa.large_string())

    return _per_distinct(values, compute)


# -- fpe: FF1 over the digits of a value, other characters kept in place ------------------------------------


def _layouts(is_digit: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group rows of a (N, L) digit mask by layout: [(layout, member row indices)]."""
    if (is_digit == is_digit[0]).all():
        return [(is_digit[0], np.arange(len(is_digit)))]
    if is_digit.shape[1] < 63:
        # a bit pattern per row keeps the grouping one-dimensional (sorting rows lexically is slow)
        keys = is_digit.astype(np.int64) @ (np.int64(1) << np.arange(is_digit.shape[1], dtype=np.int64))
        _, first, which = np.unique(keys, return_index=True, return_inverse=True)
    else:
        _, first, which = np.unique(is_digit, axis=0, return_index=True, return_inverse=True)
    which = which.ravel()
    return [(is_digit[f], np.flatnonzero(which == k)) for k, f in enumerate(first)]


def _fpe(values: pd.Series, keyring: Keyring, domain: str, version: int | None, decrypt: bool) -> pd.Series:
    number = keyring.active_version if version is None else version
    key = keyring.derive(FPE_PURPOSE, domain, number)
    tweak = domain.encode()

    def compute(distinct: pa.Array) -> pa.Array:
        # work on the Arrow buffers: every value keeps its byte length, only digit bytes change
        n = len(distinct)
        _, offsets_buf, data_buf = distinct.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[distinct.offset : distinct.offset + n + 1]
        out = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]].copy()
        offsets = offsets - offsets[0]
        done = np.zeros(n, dtype=bool)
        lengths = np.diff(offsets)
        for length in np.unique(lengths):
            idx = np.flatnonzero(lengths == length)
            positions = offsets[idx][:, None] + np.arange(length)
            raw = out[positions]
            is_digit = (raw >= ord("0")) & (raw <= ord("9"))
            # values sharing a layout (e.g. 'JZ' + 12 digits) are encrypted together on their digits only
            for layout, members in _layouts(is_digit):
                n_digits = int(layout.sum())
                if n_digits < FPE_MIN_DIGITS:
                    continue  # under the SP 800-38G minimum domain: refused (missing), never weakly encrypted
                block = raw[members]
                digits = block[:, layout] - ord("0")
                if n_digits <= MAX_BATCH_DIGITS:
                    changed = transform_matrix(key, digits, tweak, decrypt)
                else:
                    ff1 = FF1(key)
                    run = ff1.decrypt if decrypt else ff1.encrypt
                    changed = np.array([run(r.tolist(), tweak) for r in digits], dtype=np.uint8)
                block[:, layout] = changed + ord("0")
                out[positions[members]] = block
                done[idx[members]] = True
        buffers = [None, pa.py_buffer(offsets), pa.py_buffer(out)]
        result = pa.Array.from_buffers(pa.large_binary(), n, buffers).cast(pa.large_string())
        return pc.if_else(pa.array(done), result, pa.scalar(None, type=pa.large_string()))

    return _per_distinct(values, compute)


def fpe_series(values: pd.Series, keyring: Keyring, domain: str, version: int | None = None) -> pd.Series:
    """FF1-encrypt the decimal digits of each value, keeping length and non-digit characters in place.

    Values with fewer than six digits (a domain under 10**6) are refused and come back missing.
    """
    return _fpe(values, keyring, domain, version, decrypt=False)


def fpe_decrypt_series(values: pd.Series, keyring: Keyring, domain: str, version: int) -> pd.Series:
    """Invert ``fpe_series`` for a known key version (FF1 output does not carry it)."""
    return _fpe(values, keyring, domain, version, decrypt=True)


# -- mask: display forms ----------------------------------------------------------------------------------

_MASK_SPANS = {"name": (1, 0), "phone": (3, 4), "id_number": (4, 2)}
ID_MASK_STARS = 10  # 1507**********12: the length of the number is not shown either
_STAR = pa.scalar("*", type=pa.large_string())
_EMPTY = pa.scalar("", type=pa.large_string())


def mask_series(values: pd.Series, pattern: str) -> pd.Series:
    """Display forms: name 张*, phone 138****8000, id_number 1507**********12, or 'first,last' kept."""
    text = _to_arrow(values)
    if pattern in _MASK_SPANS:
        first, last = _MASK_SPANS[pattern]
    else:
        first_s, last_s = pattern.split(",")
        first, last = int(first_s), int(last_s)
    length = pc.utf8_length(text).cast(pa.int64())
    hidden = pc.max_element_wise(pc.subtract(length, first + last), 0)
    if pattern == "id_number":
        hidden = pc.if_else(pc.greater(hidden, 0), ID_MASK_STARS, 0)
    head = pc.utf8_slice_codeunits(text, 0, first)
    tail = pc.utf8_slice_codeunits(text, -last) if last else pc.utf8_slice_codeunits(text, 0, 0)
    masked = pc.binary_join_element_wise(head, pc.binary_repeat(_STAR, hidden), tail, _EMPTY)
    # a value too short to hide anything is starred out entirely
    short = pc.less_equal(length, first + last)
    return _to_series(pc.if_else(short, pc.binary_repeat(_STAR, length), masked), values)


# -- generalise -----------------------------------------------------------------------------------------


def _as_dates(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    return pd.to_datetime(values.astype(STRING), errors="coerce", format="ISO8601")


def generalise_series(values: pd.Series, rule: str, community: pd.Series | None = None) -> pd.Series:
    """Coarsen a value: birth date to year or 5-year band, address to community, area to county/province."""
    if rule == "year":
        return _as_dates(values).dt.year.astype("Int64").rename(values.name)
    if rule == "band5":
        year = _as_dates(values).dt.year.astype("Int64")
        low = year - year % 5
        band = low.astype(STRING) + "-" + (low + 4).astype(STRING)
        return band.rename(values.name)
    if rule == "community":
        # an address is replaced by the community the record names (12-digit statistical code)
        if community is None:
            return pd.Series(pd.NA, index=values.index, dtype=STRING, name=values.name)
        return community.astype(STRING).where(values.notna()).rename(values.name)
    text = values.astype(STRING)
    if rule == "county":
        return text.str.slice(0, 6).where(text.str.len() >= 6).rename(values.name)
    if rule == "province":
        return (text.str.slice(0, 2) + "0000").where(text.str.len() >= 2).rename(values.name)
    raise ValueError(f"unknown generalise rule '{rule}'")


# -- seal: randomised AEAD for published values nobody compares ---------------------------------------------

SEAL_PURPOSE = "seal"
_NONCE = 12


def seal_array(values: pa.Array | pa.ChunkedArray, keyring: Keyring, domain: str, context: Sequence[str]) -> pa.Array:
    """Randomised AES-GCM 'r<v>.<base64url(nonce|ciphertext)>' of each value, bound to its ``context``
    (e.g. the row key); nulls stay null.

    Unlike ``encrypt_series`` two equal values give different ciphertexts, so a published column shows no
    frequencies; the context as associated data stops a ciphertext being moved to another row.
    """
    number = keyring.active_version
    encrypt = AESGCM(keyring.derive(SEAL_PURPOSE, domain, number)).encrypt
    texts = values.to_pylist()
    nonces = os.urandom(_NONCE * len(texts))  # one call for the batch: the kernel's CSPRNG either way
    prefix = f"{domain}|".encode()
    b2a = binascii.b2a_base64
    out: list[bytes | None] = []
    for i, (value, ctx) in enumerate(zip(texts, context, strict=True)):
        if value is None:
            out.append(None)
            continue
        nonce = nonces[_NONCE * i : _NONCE * (i + 1)]
        out.append(b2a(nonce + encrypt(nonce, str(value).encode(), prefix + ctx.encode()), newline=False))
    b64 = pa.array(out, type=pa.large_binary()).cast(pa.large_string())
    head = pa.scalar(f"r{number}.", type=pa.large_string())
    return pc.binary_join_element_wise(head, _urlsafe_unpadded(b64), _EMPTY)


def unseal_value(sealed: str, keyring: Keyring, domain: str, context: str) -> str:
    """Open one sealed value (the service's reveal path); a wrong row, domain or key is refused."""
    match = re.match(r"^r(?P<version>[0-9]+)\.(?P<body>[A-Za-z0-9_-]+)$", sealed.strip())
    if match is None:
        raise CiphertextError(f"not a sealed value r<version>.<base64url> (domain '{domain}')")
    raw = _unb64(match["body"])
    gcm = AESGCM(keyring.derive(SEAL_PURPOSE, domain, int(match["version"])))
    try:
        return gcm.decrypt(raw[:_NONCE], raw[_NONCE:], f"{domain}|{context}".encode()).decode()
    except InvalidTag:
        raise CiphertextError(f"sealed value does not open under domain '{domain}' for this row") from None
