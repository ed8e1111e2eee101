"""The leak scan's patterns: what counts as a phone or an ID number in a published value."""

from __future__ import annotations

import pandas as pd

from privacy.report import scan_values


def _kinds(*values: str) -> dict[str, tuple[int, int]]:
    return scan_values(pd.DataFrame({"value": list(values), "n": [1] * len(values)}))


def test_a_phone_in_text_is_found_but_not_digits_inside_a_hex_key() -> None:
    assert _kinds("联系电话13812345678")["phone"] == (1, 1)
    assert _kinds("13812345678", "tel: 15912345678.")["phone"] == (2, 2)
    # a person key (random hex) that happens to hold eleven digits starting 13-19 is not a phone
    assert "phone" not in _kinds("a913812345678f0c2d4e6b8a0c2d4e6b", "e1.Xk13812345678Qz")


def test_an_id_number_needs_a_valid_check_character_and_its_own_run() -> None:
    assert _kinds("身份证150702199001011233")["id_number"] == (1, 1)
    assert "id_number" not in _kinds("150702199001011239")  # a wrong check character is not an ID
    assert "id_number" not in _kinds("ab150702199001011233cd")  # inside a longer alphanumeric run


def test_a_code_list_word_is_not_a_name_but_a_name_in_text_is() -> None:
    names = {"兄弟", "王芳"}
    assert "name" not in scan_values(pd.DataFrame({"value": ["兄弟姐妹", "孙子女"], "n": [3, 1]}), names)
    assert scan_values(pd.DataFrame({"value": ["走访兄弟王芳家"], "n": [2]}), names)["name"] == (1, 2)
