"""NIST SP 800-38G FF1 format-preserving encryption on top of AES (the only FPE mode the hub allows).

``FF1`` follows the specification step by step for any radix (it carries the published sample
vectors); ``encrypt_digits``/``decrypt_digits`` run the same rounds over many equal-length decimal
strings at once, batching the AES calls, because per-value Python rounds are too slow for a column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from schemas.base import HubError

MIN_DOMAIN = 10**6  # SP 800-38G Rev. 1: radix**minlen must be at least one million
ROUNDS = 10
BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
# The batch path keeps every number inside int64: half-lengths of at most 16 digits.
MAX_BATCH_DIGITS = 32


class FF1DomainError(HubError, ValueError):
    """The message space is below the SP 800-38G minimum of 10**6 (or the input is out of range)."""


def _num(digits: Sequence[int], radix: int) -> int:
    value = 0
    for d in digits:
        value = value * radix + d
    return value


def _str(value: int, radix: int, length: int) -> list[int]:
    out = [0] * length
    for i in range(length - 1, -1, -1):
        value, out[i] = divmod(value, radix)
    return out


def _b(radix: int, v: int) -> int:
    """Step 3: ceil(ceil(v * log2(radix)) / 8), computed exactly with integers."""
    return ((radix**v - 1).bit_length() + 7) // 8


class FF1:
    """FF1 with one AES key (16, 24 or 32 bytes) and one radix."""

    def __init__(self, key: bytes, radix: int = 10) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("FF1 key must be 16, 24 or 32 bytes")
        if not 2 <= radix <= 2**16:
            raise ValueError("FF1 radix must be in [2, 65536]")
        self._ecb = Cipher(algorithms.AES(key), modes.ECB())
        self.radix = radix

    def __repr__(self) -> str:
        return f"FF1(radix={self.radix}, key=<redacted>)"

    def _ciph(self, block: bytes) -> bytes:
        enc = self._ecb.encryptor()
        return enc.update(block) + enc.finalize()

    def _prf(self, data: bytes) -> bytes:
        """CBC-MAC with a zero IV over whole blocks: the last cipher block."""
        y = bytes(16)
        for i in range(0, len(data), 16):
            y = self._ciph(bytes(a ^ b for a, b in zip(y, data[i : i + 16], strict=True)))
        return y

    def _check(self, n: int) -> None:
        if n < 2 or self.radix**n < MIN_DOMAIN:
            raise FF1DomainError(f"FF1 domain radix**{n} is below the minimum of 10**6")

    def _round_s(self, p: bytes, tweak: bytes, i: int, num_b: int, b: int, d: int) -> int:
        t = len(tweak)
        q = tweak + bytes((-t - b - 1) % 16) + bytes([i]) + num_b.to_bytes(b, "big")
        r = self._prf(p + q)
        s = r
        for j in range(1, (d + 15) // 16):
            s += self._ciph(bytes(x ^ y for x, y in zip(r, j.to_bytes(16, "big"), strict=True)))
        return int.from_bytes(s[:d], "big")

    def _p(self, u: int, n: int, t: int) -> bytes:
        return (
            bytes([1, 2, 1])
            + self.radix.to_bytes(3, "big")
            + bytes([10, u % 256])
            + n.to_bytes(4, "big")
            + (t.to_bytes(4, "big"))
        )

    def encrypt(self, x: Sequence[int], tweak: bytes = b"") -> list[int]:
        """FF1.Encrypt(K, T, X) on a numeral string given as a list of digits in [0, radix)."""
        n = len(x)
        self._check(n)
        u, v = n // 2, n - n // 2
        a, b_part = list(x[:u]), list(x[u:])
        b, d = _b(self.radix, v), 4 * ((_b(self.radix, v) + 3) // 4) + 4
        p = self._p(u, n, len(tweak))
        for i in range(ROUNDS):
            y = self._round_s(p, tweak, i, _num(b_part, self.radix), b, d)
            m = u if i % 2 == 0 else v
            c = (_num(a, self.radix) + y) % self.radix**m
            a, b_part = b_part, _str(c, self.radix, m)
        return a + b_part

    def decrypt(self, x: Sequence[int], tweak: bytes = b"") -> list[int]:
        """FF1.Decrypt(K, T, Y): the inverse of ``encrypt``."""
        n = len(x)
        self._check(n)
        u, v = n // 2, n - n // 2
        a, b_part = list(x[:u]), list(x[u:])
        b, d = _b(self.radix, v), 4 * ((_b(self.radix, v) + 3) // 4) + 4
        p = self._p(u, n, len(tweak))
        for i in range(ROUNDS - 1, -1, -1):
            y = self._round_s(p, tweak, i, _num(a, self.radix), b, d)
            m = u if i % 2 == 0 else v
            c = (_num(b_part, self.radix) - y) % self.radix**m
            a, b_part = _str(c, self.radix, m), a
        return a + b_part

    def encrypt_text(self, text: str, tweak: bytes = b"", alphabet: str = BASE36) -> str:
        """Encrypt a string over the first ``radix`` characters of ``alphabet``."""
        digits = [alphabet.index(ch) for ch in text]
        return "".join(alphabet[d] for d in self.encrypt(digits, tweak))

    def decrypt_text(self, text: str, tweak: bytes = b"", alphabet: str = BASE36) -> str:
        """Decrypt a string over the first ``radix`` characters of ``alphabet``."""
        digits = [alphabet.index(ch) for ch in text]
        return "".join(alphabet[d] for d in self.decrypt(digits, tweak))


# -- batch path: radix 10, many numbers of one length -------------------------------------------------------


def _num_rows(digits: np.ndarray) -> np.ndarray:
    """NUM_10 of each row of a (N, m) digit matrix, as int64."""
    powers = 10 ** np.arange(digits.shape[1] - 1, -1, -1, dtype=np.int64)
    return digits.astype(np.int64) @ powers


def _str_rows(values: np.ndarray, m: int) -> np.ndarray:
    """STR^m_10 of each value, as a (N, m) uint8 digit matrix."""
    powers = 10 ** np.arange(m - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers[None, :]) % 10).astype(np.uint8)


def _mod_of_bytes(y: np.ndarray, d: int, modulus: int) -> np.ndarray:
    """NUM(S) mod ``modulus`` for the first ``d`` bytes S of each row, staying inside int64.

    Horner's rule over big-endian chunks as wide as the modulus allows (r * 2**bits must fit 63 bits).
    """
    bits = 32 if modulus < 2**31 else 16 if modulus < 2**47 else 8
    width = bits // 8
    chunks = np.ascontiguousarray(y[:, :d]).view(f">u{width}").astype(np.int64)
    r = np.zeros(len(y), dtype=np.int64)
    for j in range(chunks.shape[1]):
        r = (r * (1 << bits) + chunks[:, j]) % modulus
    return r


def transform_matrix(key: bytes, digits: np.ndarray, tweak: bytes = b"", decrypt: bool = False) -> np.ndarray:
    """FF1 (radix 10) over every row of an (N, n) matrix of digit values 0-9; returns the same shape.

    The halves A and B are carried as integers (NUM_10) between rounds: STR and NUM cancel out, so
    digits are only unpacked at the end, and each round is one batched AES-ECB call plus integer maths.
    """
    rows, n = digits.shape
    if n > MAX_BATCH_DIGITS:
        raise FF1DomainError(f"batch FF1 handles at most {MAX_BATCH_DIGITS} digits, got {n}")
    if 10**n < MIN_DOMAIN:
        raise FF1DomainError(f"FF1 domain 10**{n} is below the minimum of 10**6")
    u, v = n // 2, n - n // 2
    b = _b(10, v)
    d = 4 * ((b + 3) // 4) + 4  # b <= 7 here, so d <= 12 and S is the first d bytes of R
    t = len(tweak)
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    p = bytes([1, 2, 1]) + (10).to_bytes(3, "big") + bytes([10, u % 256]) + n.to_bytes(4, "big")
    y0 = np.frombuffer(enc.update(p + t.to_bytes(4, "big")), dtype=np.uint8)  # CBC-MAC over P: same for all
    head = tweak + bytes((-t - b - 1) % 16)
    q_len = len(head) + 1 + b
    q = np.empty((rows, q_len), dtype=np.uint8)
    q[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    a = _num_rows(digits[:, :u])
    bb = _num_rows(digits[:, u:])
    order = range(ROUNDS - 1, -1, -1) if decrypt else range(ROUNDS)
    for i in order:
        q[:, len(head)] = i
        # [NUM(B)]^b: the low b bytes of the big-endian 64-bit integer
        q[:, len(head) + 1 :] = (
            (a if decrypt else bb).astype(">u8").view(np.uint8).reshape(rows, 8)[:, 8 - b :]
        )
        y = np.broadcast_to(y0, (rows, 16))
        for blk in range(q_len // 16):
            x = np.bitwise_xor(y, q[:, 16 * blk : 16 * blk + 16])
            y = np.frombuffer(enc.update(x.tobytes()), dtype=np.uint8).reshape(rows, 16)
        m = u if i % 2 == 0 else v
        modulus = 10**m
        s = _mod_of_bytes(y, d, modulus)
        if decrypt:
            a, bb = (bb - s) % modulus, a
        else:
            a, bb = bb, (a + s) % modulus
    return np.concatenate([_str_rows(a, u), _str_rows(bb, v)], axis=1)


def _digit_strings(key: bytes, numbers: Sequence[str], tweak: bytes, decrypt: bool) -> list[str]:
    if not numbers:
        return []
    raw = np.frombuffer("".join(numbers).encode("ascii"), dtype=np.uint8).reshape(len(numbers), -1)
    out = transform_matrix(key, raw - ord("0"), tweak, decrypt) + ord("0")
    return [row.decode("ascii") for row in np.ascontiguousarray(out).view(f"S{out.shape[1]}").ravel()]


def encrypt_digits(key: bytes, numbers: Sequence[str], tweak: bytes = b"") -> list[str]:
    """FF1-encrypt many decimal strings of the same length at once (radix 10)."""
    return _digit_strings(key, numbers, tweak, decrypt=False)


def decrypt_digits(key: bytes, numbers: Sequence[str], tweak: bytes = b"") -> list[str]:
    """FF1-decrypt many decimal strings of the same length at once (radix 10)."""
    return _digit_strings(key, numbers, tweak, decrypt=True)
