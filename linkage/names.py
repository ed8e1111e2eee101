"""Comparison forms of Chinese personal names: simplified characters, toneless pinyin, surname.

Only for comparing, in memory, inside the linkage task: the legal name is never rewritten. Each distinct
character is converted once (a few thousand), then names are translated through those tables, so half a
million names take about a second.
"""

from __future__ import annotations

from functools import cache

import pandas as pd

# compound surnames common nationally; every other surname is one character
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


def _table(names: pd.Series, convert: object) -> dict[int, str]:
    """A str.translate table for every character the names use."""
    chars = set("".join(names.dropna().unique().tolist()))
    return {ord(ch): convert(ch) for ch in chars}  # type: ignore[operator]


def comparison_forms(names: pd.Series) -> pd.DataFrame:
    """name_s (simplified, no separators or spaces), pinyin (toneless), surname and given-name pinyin."""
    clean = names.astype("string").str.replace(r"[\s·]", "", regex=True)
    simplified = clean.str.translate(_table(clean, _simplified_char))
    pinyin_table = _table(simplified, _pinyin_char)
    two = simplified.str.slice(0, 2)
    surname = two.where(two.isin(_COMPOUND), simplified.str.slice(0, 1))
    given = simplified.str.slice(1).where(surname.str.len() == 1, simplified.str.slice(2))
    return pd.DataFrame(
        {
            "name_s": simplified,
            "pinyin": simplified.str.translate(pinyin_table),
            "surname": surname,
            "given_pinyin": given.str.translate(pinyin_table),
        },
        index=names.index,
    )
