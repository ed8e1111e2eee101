"""Conform a raw source batch to its contract: hub names, hub types, normalised values, issues by reason code.

Every rule is chosen by the contract field's type, pattern, allowed values and value map, so one contract
drives all datasets. Issues name the row (index label), the field and a reason code, never the value.
Low-cardinality columns (dates, codes, names, amounts) are parsed once per distinct value; the rest use
column operations.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from schemas import id_number
from schemas.contract import Contract, ContractField

STRING = pd.StringDtype()

# Reason codes (the `reason` column of Conformed.issues); none of them carries a value.
REQUIRED_MISSING = "required_missing"
COLUMN_MISSING = "column_missing"
ID_NUMBER_INVALID = "id_number_invalid"
DATE_UNPARSEABLE = "date_unparseable"
DATETIME_UNPARSEABLE = "datetime_unparseable"
PHONE_INVALID = "phone_invalid"
CODE_NOT_ALLOWED = "code_not_allowed"
INTEGER_INVALID = "integer_invalid"
DECIMAL_INVALID = "decimal_invalid"
COMMUNITY_CODE_INVALID = "community_code_invalid"
AREA_CODE_INVALID = "area_code_invalid"
PATTERN_MISMATCH = "pattern_mismatch"
REASONS = (
    REQUIRED_MISSING,
    COLUMN_MISSING,
    ID_NUMBER_INVALID,
    DATE_UNPARSEABLE,
    DATETIME_UNPARSEABLE,
    PHONE_INVALID,
    CODE_NOT_ALLOWED,
    INTEGER_INVALID,
    DECIMAL_INVALID,
    COMMUNITY_CODE_INVALID,
    AREA_CODE_INVALID,
    PATTERN_MISMATCH,
)

# Excel's 1900 date system: serial 1 is 1900-01-01 and 60 is the phantom 1900-02-29, so day 0 is 1899-12-30.
EXCEL_EPOCH = pd.Timestamp("1899-12-30")
# Serials accepted as dates: 1900-03-01 (after the phantom leap day) to 2099-12-31.
EXCEL_SERIAL_MIN = 61
EXCEL_SERIAL_MAX = 73050
DATE_DTYPE = "datetime64[us]"

# Separated dates: 2017年5月5日, 2017/5/5, 2017-05-05, 2017.5.5.
_SEPARATED_DATE = r"(?P<y>[0-9]{4})[年/.\-](?P<m>[0-9]{1,2})[月/.\-](?P<d>[0-9]{1,2})日?"
# A time of day after a date (openpyxl datetimes, SQL timestamps): ignored for date fields.
_TIME_TAIL = r"(?:[T ]+[0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)$"
_ZONE_TAIL = r"(?:Z|[+-][0-9]{2}:?[0-9]{2})$"
CHINA = "Asia/Shanghai"
_COMPACT_DATE = r"(?P<cy>[0-9]{4})(?P<cm>[0-9]{2})(?P<cd>[0-9]{2})"
_SERIAL = r"(?P<serial>[0-9]{2,5}(?:\.[0-9]+)?)"
_DATE_FORMS = re.compile(rf"^(?:{_SEPARATED_DATE}|{_COMPACT_DATE}|{_SERIAL})$")
# Literal characters, not \u escapes, so pandas keeps these regexes on the fast pyarrow (RE2) path.
_HAN = f"[{chr(0x3400)}-{chr(0x4DBF)}{chr(0x4E00)}-{chr(0x9FFF)}{chr(0xF900)}-{chr(0xFAFF)}]"
# NFKC leaves printable ASCII and the CJK unified ideographs (base block and extension A) unchanged.
_NFKC_CHANGEABLE = f"[^ -~{chr(0x3400)}-{chr(0x4DBF)}{chr(0x4E00)}-{chr(0x9FFF)}]"
_SPACES = r"[ \t\r\n\f\v]+"  # spelt out: for \s pandas falls back to Python's re
_PHONE_PREFIX = r"^(?:00)?86(1[0-9]{10})$"
_MOBILE = r"1[0-9]{10}"
ID_SHAPE = r"^[0-9]{17}[0-9X]$"
COMMUNITY_CODE_SHAPE = r"^[0-9]{12}$"
AREA_CODE_SHAPE = r"^[0-9]{6}$"
PHONE_SHAPE = rf"^{_MOBILE}$"


@dataclass(frozen=True)
class Conformed:
    """A conformed batch: typed data under hub names, per-row issues (no values) and schema drift found."""

    data: pd.DataFrame
    issues: pd.DataFrame
    unknown_columns: tuple[str, ...]
    missing_columns: tuple[str, ...]
    dataset: str

    def issue_counts(self) -> dict[str, int]:
        """Issues per ``reason:field``, for logs and summaries."""
        if self.issues.empty:
            return {}
        keys = self.issues["reason"].astype(str) + ":" + self.issues["field"].astype(str)
        return {str(k): int(v) for k, v in keys.value_counts().sort_index().items()}


# --- text helpers -------------------------------------------------------------------------------


def _cell_text(value: Any) -> str | None:
    """One source cell as text: numbers without a spurious '.0', dates in ISO form, blanks as missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else str(pd.Timestamp(value).isoformat(sep=" "))
    return str(value)


def as_text(values: pd.Series) -> pd.Series:
    """Any source column as a nullable string column (same index), without changing the text itself."""
    if isinstance(values.dtype, pd.StringDtype):
        return values.astype(STRING)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.strftime("%Y-%m-%d %H:%M:%S").astype(STRING)
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_integer_dtype(values.dtype):
        return values.astype(STRING)
    if pd.api.types.is_float_dtype(values.dtype):
        numbers = values.astype("Float64")
        whole = (numbers.round() == numbers).fillna(False).astype(bool)
        out = pd.Series(pd.NA, index=values.index, dtype=STRING)
        out[whole] = numbers[whole].astype("Int64").astype(STRING)
        fraction = ~whole & numbers.notna().to_numpy()
        out[fraction] = numbers[fraction].astype(float).map(repr).astype(STRING)
        return out
    # object columns (XLSX cells, JSON mixtures): convert each distinct value once
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts = pd.array([_cell_text(v) for v in uniques], dtype=STRING)
    return pd.Series(texts.take(codes, allow_fill=True), index=values.index, name=values.name)


def nfkc(text: pd.Series) -> pd.Series:
    """NFKC only where it can change something: values with characters beyond ASCII and CJK ideographs."""
    changeable = _matches(text, _NFKC_CHANGEABLE)
    if not changeable.any():
        return text
    out = text.copy()
    out[changeable] = [unicodedata.normalize("NFKC", v) for v in text[changeable]]
    return out


def clean_text(text: pd.Series) -> pd.Series:
    """NFKC (full-width to half-width), trimmed; blank becomes missing."""
    out = nfkc(text).str.strip()
    return out.mask(out == "")


# A rule maps a source column to (conformed column, reason code per row or NA). A missing source
# value always yields a missing conformed value and no reason, so "required_missing" can be derived.
Rule = Callable[[pd.Series, ContractField], tuple[pd.Series, pd.Series]]
DistinctRule = Callable[[pd.Series], tuple[pd.Series, pd.Series]]


def _per_distinct(values: pd.Series, rule: DistinctRule) -> tuple[pd.Series, pd.Series]:
    """Run a rule once per distinct source value (its cleaned text); spread value and reason to each row."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = clean_text(as_text(pd.Series(uniques, dtype=values.dtype).reset_index(drop=True)))
    conformed, reasons = rule(text)
    spread = [
        pd.Series(column.array.take(codes, allow_fill=True), index=values.index, name=values.name)
        for column in (conformed, reasons)
    ]
    return spread[0], spread[1]


# --- one rule per field type ----------------------------------------------------------------------



def _no_issue(index: pd.Index) -> pd.Series:
    return pd.Series(pd.NA, index=index, dtype=STRING)


def _reason_where(mask: pd.Series, reason: str) -> pd.Series:
    """A reason column: ``reason`` where mask is true, NA elsewhere."""
    out = pd.Series(pd.NA, index=mask.index, dtype=STRING)
    out[mask.fillna(False).astype(bool)] = reason
    return out


def _matches(text: pd.Series, pattern: str) -> pd.Series:
    """Plain bool: the text matches the regex (missing counts as not matching)."""
    return text.str.contains(pattern, regex=True).fillna(False).astype(bool)


def _text_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """string and address: NFKC and trimmed; a contract pattern flags (and keeps) non-matching text."""
    text = clean_text(as_text(values))
    if cf.pattern:
        return text, _reason_where(text.notna() & ~_matches(text, cf.pattern), PATTERN_MISMATCH)
    return text, _no_issue(values.index)


def _id_number_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """ID numbers: full-width, spaces, lower-case x and 15 digits fixed; invalid ones kept and flagged."""
    text = as_text(values)
    # normalise_series leaves canonical numbers as they are: give it only the others (a few per cent)
    dirty = text.notna() & ~_matches(text, ID_SHAPE)
    numbers = text.copy()
    if dirty.any():
        numbers[dirty] = id_number.normalise_series(text[dirty])
    invalid = numbers.notna() & ~id_number.valid_series(numbers)
    return numbers, _reason_where(invalid, ID_NUMBER_INVALID)


@cache
def _t2s() -> Any:
    from opencc import OpenCC  # loaded only when names are conformed

    return OpenCC("t2s")


def simplified(names: pd.Series) -> pd.Series:
    """Traditional to simplified characters, calling OpenCC only for names holding a character it changes."""
    present = names.dropna()
    if present.empty:
        return names
    converter = _t2s()
    changing = [c for c in set("".join(present.tolist())) if c >= "\u3400" and converter.convert(c) != c]
    if not changing:
        return names
    has_traditional = _matches(names, "[" + re.escape("".join(sorted(changing))) + "]")
    out = names.copy()
    out[has_traditional] = [converter.convert(n) for n in names[has_traditional]]
    return out


def _name_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """Names: Chinese names lose inner spaces, others keep single spaces; traditional become simplified."""

    def rule(text: pd.Series) -> tuple[pd.Series, pd.Series]:
        squeezed = text.str.replace(_SPACES, " ", regex=True)
        names = squeezed.where(~_matches(text, _HAN), squeezed.str.replace(" ", "", regex=False))
        return simplified(names), _no_issue(text.index)

    return _per_distinct(values, rule)


def _phone_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """Digits only, a +86/0086 country prefix dropped; anything but a mainland mobile number is flagged."""
    text = clean_text(as_text(values))
    digits = text.str.replace(r"[^0-9]", "", regex=True).str.replace(_PHONE_PREFIX, r"\1", regex=True)
    digits = digits.mask(digits == "")
    return digits, _reason_where(text.notna() & ~_matches(digits, PHONE_SHAPE), PHONE_INVALID)


def _code_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    """Coded values: mapped through the contract's value_map, then checked against its allowed values."""
    value_map = {unicodedata.normalize("NFKC", k).strip(): v for k, v in cf.value_map.items()}
    allowed = list(cf.allowed or ())  # the contract loader insists a code field lists its values

    def rule(text: pd.Series) -> tuple[pd.Series, pd.Series]:
        codes = (text.replace(value_map) if value_map else text).astype(STRING)
        return codes, _reason_where(codes.notna() & ~codes.isin(allowed), CODE_NOT_ALLOWED)

    return _per_distinct(values, rule)


def _shape_rule(shape: str, reason: str) -> Rule:
    """Fixed-width digit codes (community, area): spaces dropped, shape and any pattern checked, text kept."""

    def rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
        def check(text: pd.Series) -> tuple[pd.Series, pd.Series]:
            codes = text.str.replace(_SPACES, "", regex=True)
            ok = _matches(codes, shape) & (_matches(codes, cf.pattern) if cf.pattern else True)
            return codes, _reason_where(codes.notna() & ~ok, reason)

        return _per_distinct(values, check)

    return rule


def _numbers(text: pd.Series) -> pd.Series:
    """Amount text as numbers: thousands separators, currency signs and a trailing 元 ignored."""
    cleaned = text.str.replace(r"[, \t¥]|元$", "", regex=True)
    return pd.to_numeric(cleaned, errors="coerce").astype("Float64")


def _integer_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("Int64"), _no_issue(values.index)

    def rule(text: pd.Series) -> tuple[pd.Series, pd.Series]:
        numbers = _numbers(text)
        whole = numbers.where(numbers.round() == numbers)
        return whole.astype("Int64"), _reason_where(text.notna() & whole.isna(), INTEGER_INVALID)

    return _per_distinct(values, rule)


def _decimal_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("Float64"), _no_issue(values.index)

    def rule(text: pd.Series) -> tuple[pd.Series, pd.Series]:
        numbers = _numbers(text)
        return numbers, _reason_where(text.notna() & numbers.isna(), DECIMAL_INVALID)

    return _per_distinct(values, rule)


def parse_dates(text: pd.Series) -> pd.Series:
    """Dates in every source form (2017年5月5日, 20170505, 2017/5/5, 2017-05-05, Excel serials), else NaT."""
    dateonly = text.str.replace(_TIME_TAIL, "", regex=True).str.replace(_SPACES, "", regex=True)
    parts = dateonly.str.extract(_DATE_FORMS)
    ymd = pd.DataFrame(
        {
            "year": pd.to_numeric(parts["y"].fillna(parts["cy"]), errors="coerce"),
            "month": pd.to_numeric(parts["m"].fillna(parts["cm"]), errors="coerce"),
            "day": pd.to_numeric(parts["d"].fillna(parts["cd"]), errors="coerce"),
        }
    ).astype("float64")
    out = pd.Series(pd.NaT, index=text.index, dtype=DATE_DTYPE)
    dated = ymd.notna().all(axis=1)
    if dated.any():
        out[dated] = pd.to_datetime(ymd[dated], errors="coerce").astype(DATE_DTYPE)
    serial = pd.to_numeric(parts["serial"], errors="coerce")
    counted = (serial >= EXCEL_SERIAL_MIN) & (serial <= EXCEL_SERIAL_MAX)
    if counted.any():
        days = np.floor(serial[counted].to_numpy(dtype=float)).astype("int64")
        out[counted] = (EXCEL_EPOCH + pd.to_timedelta(days, unit="D")).astype(DATE_DTYPE)
    return out


def _naive(values: pd.Series) -> pd.Series:
    """Zone-aware stamps as China wall time (the zone the sources keep), naive like the rest."""
    if getattr(values.dt, "tz", None) is not None:
        return values.dt.tz_convert(CHINA).dt.tz_localize(None)
    return values


def _date_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return _naive(values).dt.floor("D").astype(DATE_DTYPE), _no_issue(values.index)

    def rule(text: pd.Series) -> tuple[pd.Series, pd.Series]:
        dates = parse_dates(text)
        return dates, _reason_where(text.notna() & dates.isna(), DATE_UNPARSEABLE)

    return _per_distinct(values, rule)


def parse_datetimes(text: pd.Series) -> pd.Series:
    """ISO date-times with 'T' or a space (a bare date is midnight); an offset becomes China wall time."""
    out = pd.Series(pd.NaT, index=text.index, dtype=DATE_DTYPE)
    zoned = _matches(text, _ZONE_TAIL)
    plain = ~zoned & text.notna()
    if plain.any():
        out[plain] = pd.to_datetime(text[plain], format="ISO8601", errors="coerce").astype(DATE_DTYPE)
    if zoned.any():
        stamps = pd.to_datetime(text[zoned], format="ISO8601", errors="coerce", utc=True)
        out[zoned] = stamps.dt.tz_convert(CHINA).dt.tz_localize(None).astype(DATE_DTYPE)
    return out


def _datetime_rule(values: pd.Series, cf: ContractField) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return _naive(values).astype(DATE_DTYPE), _no_issue(values.index)
    text = clean_text(as_text(values))
    stamps = parse_datetimes(text)
    return stamps, _reason_where(text.notna() & stamps.isna(), DATETIME_UNPARSEABLE)


RULES: dict[str, Rule] = {
    "string": _text_rule,
    "address": _text_rule,
    "id_number": _id_number_rule,
    "name": _name_rule,
    "phone": _phone_rule,
    "code": _code_rule,
    "community_code": _shape_rule(COMMUNITY_CODE_SHAPE, COMMUNITY_CODE_INVALID),
    "area_code": _shape_rule(AREA_CODE_SHAPE, AREA_CODE_INVALID),
    "integer": _integer_rule,
    "decimal": _decimal_rule,
    "date": _date_rule,
    "datetime": _datetime_rule,
}
EMPTY_DTYPES = {"integer": "Int64", "decimal": "Float64", "date": DATE_DTYPE, "datetime": DATE_DTYPE}


# --- the stage ------------------------------------------------------------------------------------


def _header_key(name: object) -> str:
    """Header text compared loosely: NFKC, no BOM, trimmed (CSV headers arrive dirty too)."""
    return unicodedata.normalize("NFKC", str(name)).replace("\ufeff", "").strip()


def _issue_frame(index: pd.Index, parts: list[tuple[str, pd.Series]]) -> pd.DataFrame:
    """One issues table (row label, field, reason) from each field's reason column."""
    rows: list[np.ndarray] = []
    fields: list[np.ndarray] = []
    reasons: list[np.ndarray] = []
    for field_name, reason in parts:
        flagged = reason.notna().to_numpy()
        rows.append(index.to_numpy()[flagged])
        fields.append(np.full(int(flagged.sum()), field_name, dtype=object))
        reasons.append(reason.to_numpy(dtype=object, na_value=None)[flagged])
    return pd.DataFrame(
        {
            "row": pd.Index(np.concatenate(rows) if rows else [], dtype=index.dtype),
            "field": pd.array(np.concatenate(fields) if fields else [], dtype=STRING),
            "reason": pd.array(np.concatenate(reasons) if reasons else [], dtype=STRING),
        }
    )


def conform(raw: pd.DataFrame, contract: Contract) -> Conformed:
    """Rename a raw batch to hub names, type and normalise every contract field, and report issues by row.

    Columns starting with '_' pass through; source columns the contract does not name are dropped and
    listed in ``unknown_columns``; contract columns absent from the batch are added as missing values and
    listed in ``missing_columns`` (a required one also gives every row the issue ``column_missing``).
    """
    if not raw.index.is_unique:
        raise ValueError(f"{contract.dataset}: duplicate index labels: issues could not name rows")
    by_header = {_header_key(c): c for c in raw.columns}
    sources = {f.source for f in contract.fields}
    unknown = tuple(
        str(c) for c in raw.columns if not str(c).startswith("_") and _header_key(c) not in sources
    )
    columns: dict[str, pd.Series] = {}
    reasons: list[tuple[str, pd.Series]] = []
    missing: list[str] = []
    for cf in contract.fields:
        column = by_header.get(cf.source)
        if column is None:
            missing.append(cf.name)
            empty = pd.array([None] * len(raw), dtype=EMPTY_DTYPES.get(cf.type, STRING))
            columns[cf.name] = pd.Series(empty, index=raw.index, name=cf.name)
            if cf.required:
                reasons.append((cf.name, pd.Series(COLUMN_MISSING, index=raw.index, dtype=STRING)))
            continue
        conformed, reason = RULES[cf.type](raw[column], cf)
        if cf.required:
            # a rule leaves a value missing without a reason only where the source cell was blank
            reason = reason.mask(reason.isna() & conformed.isna(), REQUIRED_MISSING)
        columns[cf.name] = conformed.rename(cf.name)
        reasons.append((cf.name, reason))
    for name in raw.columns:
        if str(name).startswith("_"):
            columns[str(name)] = raw[name]
    return Conformed(
        data=pd.DataFrame(columns, index=raw.index),
        issues=_issue_frame(raw.index, reasons),
        unknown_columns=unknown,
        missing_columns=tuple(missing),
        dataset=contract.dataset,
    )
