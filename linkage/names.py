"""Comparison forms of Chinese personal names: simplified characters, toneless pinyin, surname.

Only for comparing, in memory, inside the linkage task: the legal name is never rewritten. Variants are
computed once per distinct character (a few thousand), then names are mapped through them, so a million
names cost well under a second.
"""

from __future__ import annotations

from functools import cache

import pandas as pd

# compound surnames common in Inner Mongolia and nationally; the rest are one character
_COMPOUND = frozenset(
    {"欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒", "夏侯"}
)


@cache
def _t2s() -> object:
    import opencc

    return opencc.OpenCC("t2s")


@cache
def _simplified_char(ch: str) -> str:
    converted = str(_t2s().convert(ch))  # type: ignore[attr-defined]
    return converted if len(converted) == 1 else ch


@cache
def _pinyin_char(ch: str) -> str:
    from pypinyin import Style, lazy_pinyin

    return "".join(lazy_pinyin(ch, style=Style.NORMAL, errors="ignore")) or ch


def _map_chars(names: pd.Series, convert: object) -> pd.Series:
    """Apply a per-character function to each distinct name, then map back."""
    codes, uniques = pd.factorize(names, use_na_sentinel=True)
    done = [("".join(convert(ch) for ch in str(u))) for u in uniques]  # type: ignore[operator]
    out = pd.Series(pd.array([done[c] if c >= 0 else pd.NA for c in codes], dtype="string"), index=names.index)
    return out


def comparison_forms(names: pd.Series) -> pd.DataFrame:
    """name_s (simplified, no separators or spaces), pinyin (toneless), surname and its pinyin."""
    clean = names.astype("string").str.replace(r"[\s·]", "", regex=True)
    simplified = _map_chars(clean, _simplified_char)
    pinyin = _map_chars(simplified, _pinyin_char)
    two = simplified.str.slice(0, 2)
    surname = two.where(two.isin(_COMPOUND), simplified.str.slice(0, 1))
    given = simplified.where(surname.str.len() == 1, simplified.str.slice(2)).where(
        surname.str.len() != 1, simplified.str.slice(1)
    )
    return pd.DataFrame(
        {"name_s": simplified, "pinyin": pinyin, "surname": surname, "given_pinyin": _map_chars(given, _pinyin_char)},
        index=names.index,
    )
