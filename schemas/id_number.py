"""Resident identity numbers (GB 11643-1999): check character, validity, 15-to-18 upgrade, clean-up.

Scalar functions serve tests and single lookups; the ``*_series`` functions are vectorised over
pandas columns for the pipeline. Validity matches python-stdnum's ``cn.ric``: length, digits,
ISO 7064 MOD 11-2 check, a real birth date, and an address code in force in the birth year.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd

from schemas.areas import code_valid_in

WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK_CHARS = "10X98765432"
_CHECK_LOOKUP = np.array(list(CHECK_CHARS))
_SHAPE18 = re.compile(r"^[0-9]{17}[0-9X]$")
_SHAPE15 = re.compile(r"^[0-9]{15}$")


def check_character(body17: str) -> str:
    """The check character for the first 17 digits."""
    total = sum(int(d) * int(w) for d, w in zip(body17, WEIGHTS, strict=True))
    return CHECK_CHARS[total % 11]


def upgrade_15(number15: str) -> str:
    """Convert a legacy 15-digit number: insert '19' after the address code, append the check."""
    body = number15[:6] + "19" + number15[6:]
    return body + check_character(body)


def is_valid(number: str) -> bool:
    """Full validity of one normalised 18-character number."""
    if not isinstance(number, str) or not _SHAPE18.match(number):
        return False
    if number[17] != check_character(number[:17]):
        return False
    try:
        year, month, day = int(number[6:10]), int(number[10:12]), int(number[12:14])
        pd.Timestamp(year=year, month=month, day=day)
    except ValueError:
        return False
    return code_valid_in(number[:6], year)


# White space and hyphens or dashes that exports put between the parts (152101-19900105-1238).
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")


def normalise_text(value: object) -> str | None:
    """Fold full-width forms (NFKC), drop white space and hyphens, and upper-case a trailing x."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", str(value))).upper()
    return text or None


def normalise_series(values: pd.Series) -> pd.Series:
    """Vectorised clean-up: NFKC, no spaces or hyphens, upper-case X, and 15-digit numbers upgraded to 18."""
    text = values.astype("string")
    text = text.str.normalize("NFKC").str.replace(_SEPARATORS.pattern, "", regex=True).str.upper()
    text = text.mask(text == "")
    legacy = text.str.fullmatch(r"[0-9]{15}").fillna(False).astype(bool)
    if legacy.any():
        text = text.copy()
        text[legacy] = [upgrade_15(v) for v in text[legacy]]
    return text


def check_characters_series(bodies: pd.Series) -> pd.Series:
    """Vectorised check characters for a column of 17-digit strings (all must be digits)."""
    if bodies.empty:
        return pd.Series([], dtype="string", index=bodies.index)
    raw = np.frombuffer("".join(bodies.tolist()).encode("ascii"), dtype=np.uint8)
    digits = (raw.reshape(-1, 17) - ord("0")).astype(np.int64)
    return pd.Series(_CHECK_LOOKUP[(digits @ WEIGHTS) % 11], index=bodies.index, dtype="string")


def valid_series(values: pd.Series) -> pd.Series:
    """Vectorised validity of normalised numbers; missing values are invalid. Works on any index."""
    text = pd.Series(values.astype("string").to_numpy(), dtype="string")
    ok = text.str.fullmatch(r"[0-9]{17}[0-9X]").fillna(False).to_numpy(dtype=bool)
    pos = np.flatnonzero(ok)
    if len(pos):
        cand = text.iloc[pos]
        ok[pos] = (check_characters_series(cand.str.slice(0, 17)) == cand.str.slice(17, 18)).to_numpy(dtype=bool)
    pos = np.flatnonzero(ok)
    if len(pos):
        dates = pd.to_datetime(text.iloc[pos].str.slice(6, 14), format="%Y%m%d", errors="coerce")
        ok[pos] = dates.notna().to_numpy(dtype=bool)
    pos = np.flatnonzero(ok)
    if len(pos):
        # the era rule is evaluated once per distinct (area code, birth year) pair, then mapped back
        pair = text.iloc[pos].str.slice(0, 10)
        codes, uniques = pd.factorize(pair)
        uniq_ok = np.array([code_valid_in(u[:6], int(u[6:10])) for u in uniques], dtype=bool)
        ok[pos] = uniq_ok[codes]
    return pd.Series(ok, index=values.index)


def birth_date_series(numbers: pd.Series) -> pd.Series:
    """Birth dates encoded in valid numbers (NaT elsewhere)."""
    return pd.to_datetime(numbers.astype("string").str.slice(6, 14), format="%Y%m%d", errors="coerce")


def sex_series(numbers: pd.Series) -> pd.Series:
    """'1' (male, odd sequence) or '2' (female, even) from position 17."""
    digit = pd.to_numeric(numbers.astype("string").str.slice(16, 17), errors="coerce")
    return digit.mod(2).map({1: "1", 0: "2"}).astype("string")
