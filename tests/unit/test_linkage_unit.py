"""Small linkage functions that need no data (merge chains, key minting, the placement decision), and the
workspace's view of staged batches over a few Parquet rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from linkage.probabilistic import LEFT, ModelSettings, decide
from linkage.resolve import new_keys, survivors
from linkage.workspace import BatchRef, Workspace


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


def test_the_decision_counts_each_candidate_person_once_at_its_best_weight_from_either_side() -> None:
    """Splink may score a record against several profile rows of one person, with the record on either side."""
    right = "b_profiles"
    pairs = pd.DataFrame(
        {
            "source_dataset_l": [LEFT, LEFT, right, LEFT, LEFT],
            "uid_l": ["r1", "r1", "p9", "r2", "r2"],
            "uid_r": ["p1", "p2", "r1", "p3", "p4"],
            "person_key_l": [None, None, "B", None, None],
            "person_key_r": ["A", "A", None, "D", "C"],
            "match_weight": [3.0, 9.0, 1.0, 5.0, 5.0],
            "match_probability": [0.4, 0.98, 0.2, 0.9, 0.9],
        }
    )
    decided = decide(pairs, ModelSettings(threshold=0.95, min_weight=-2.0)).set_index("uid")
    # A counts once, at 9 (its 3 would lower the share to 1 / (1 + 2^-6 + 2^-8)); B is on the left of its pair
    assert decided.loc["r1", "person_key"] == "A" and bool(decided.loc["r1", "placed"])
    assert abs(decided.loc["r1", "match_probability"] - 1 / (1 + 2.0**-8)) < 1e-12
    assert decided.loc["r1", "match_weight"] == 9.0 and decided.loc["r1", "splink_probability"] == 0.98
    assert (
        decided.loc["r2", "person_key"] == "C" and decided.loc["r2", "match_probability"] == 0.5
    )  # a tie: the smaller key
    assert sorted(decided.index) == ["r1", "r2"]


def test_a_second_link_run_on_the_same_hub_is_refused(tmp_path: Path) -> None:
    from hub.link_cli import one_link_at_a_time
    from schemas.base import HubError

    with one_link_at_a_time(tmp_path / "runs"):
        with pytest.raises(HubError, match="another `hub link` is running"):
            with one_link_at_a_time(tmp_path / "runs"):
                pass
    with one_link_at_a_time(tmp_path / "runs"):  # released when the first run ends
        pass


def _batch(folder: Path, batch_id: str, rows: list[tuple[str, str | None]]) -> BatchRef:
    """A staged batch of (record_id, link_token) rows: data.parquet and linkage.parquet, joined by position."""
    folder.mkdir(parents=True)
    pd.DataFrame({"record_id": [r for r, _ in rows]}).to_parquet(folder / "data.parquet")
    pd.DataFrame({"link_token": pd.Series([t for _, t in rows], dtype="string")}).to_parquet(folder / "linkage.parquet")
    return BatchRef("gongan.hukou", batch_id, batch_id, folder)


def test_the_workspace_sees_each_record_once_as_its_newest_version(tmp_path: Path) -> None:
    first = _batch(tmp_path / "b1", "b1", [("r1", "t1.old"), ("r2", "t1.two"), ("r2", "t1.two"), ("r3", None)])
    second = _batch(tmp_path / "b2", "b2", [("r1", "t1.new"), ("r4", "t1.four")])
    with Workspace() as ws:
        count = ws.load([first, second], {("gongan.hukou", "b2")})
        rows = ws.sql("SELECT record_id, link_token, batch_id, fresh, id_status FROM rec ORDER BY record_id").fetchall()
    assert count == 4
    assert rows == [
        ("r1", "t1.new", "b2", True, "valid"),  # updated in the later batch: its newest version only
        ("r2", "t1.two", "b1", False, "valid"),  # repeated within one batch: once
        ("r3", None, "b1", False, "missing"),
        ("r4", "t1.four", "b2", True, "valid"),
    ]
