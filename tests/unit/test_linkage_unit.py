"""Small linkage functions that need no data: merge chains, key minting, the placement decision."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from linkage.probabilistic import LEFT, ModelSettings, decide
from linkage.resolve import new_keys, survivors


def test_merged_keys_lead_to_their_final_survivor() -> None:
    assert survivors([("a", "b"), ("b", "c"), ("x", "y")]) == {"a": "c", "b": "c", "x": "y"}
    assert survivors([("a", "b"), ("b", "a")]) == {"a": "b", "b": "a"}  # a cycle stops where it closes


def test_minted_keys_are_random_hex_and_unique() -> None:
    first, second = new_keys(1000), new_keys(1000)
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in first)
    assert len(set(first) | set(second)) == 2000


def test_a_record_is_placed_only_when_one_person_clearly_leads() -> None:
    pairs = pd.DataFrame(
        {
            "source_dataset_l": [LEFT] * 5,
            "uid_l": ["r1", "r1", "r2", "r2", "r3"],
            "uid_r": ["p1", "p2", "p3", "p4", "p5"],
            "person_key_l": [None] * 5,
            "person_key_r": ["A", "B", "C", "D", "E"],
            "match_weight": [10.0, 2.0, 5.0, 5.0, -6.0],
            "match_probability": [0.99, 0.5, 0.9, 0.9, 0.01],
        }
    )
    decided = decide(pairs, ModelSettings(threshold=0.95, min_weight=-2.0)).set_index("uid")
    assert decided.loc["r1", "person_key"] == "A" and bool(decided.loc["r1", "placed"])  # leads by 8 bits
    assert not bool(decided.loc["r2", "placed"])  # a tie: the share is 0.5
    assert not bool(decided.loc["r3", "placed"])  # alone, but on too little evidence
    assert abs(decided.loc["r1", "match_probability"] - 1 / (1 + 2.0**-8)) < 1e-12


def test_a_second_link_run_on_the_same_hub_is_refused(tmp_path: Path) -> None:
    from hub.link_cli import one_link_at_a_time
    from schemas.base import HubError

    with one_link_at_a_time(tmp_path / "runs"):
        with pytest.raises(HubError, match="another `hub link` is running"):
            with one_link_at_a_time(tmp_path / "runs"):
                pass
    with one_link_at_a_time(tmp_path / "runs"):  # released when the first run ends
        pass
