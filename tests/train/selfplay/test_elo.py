"""ELO: the textbook formula on hand-computed cases, anchors, pairwise multiplayer, save/load."""

from __future__ import annotations

import pytest

from shoal.errors import APIUsageError
from shoal.train.selfplay.elo import LeagueTable, elo_update, expected_score, pairwise_scores


def test_textbook_cases() -> None:
    assert expected_score(1000, 1000) == 0.5
    assert elo_update(1000, 1000, 1.0, k=32) == (1016.0, 984.0)
    # E_a = 1 / (1 + 10 ** (-200 / 400)) = 0.7597469...
    a, b = elo_update(1200, 1000, 1.0, k=32)
    assert a == pytest.approx(1207.6881, abs=1e-4) and b == pytest.approx(992.3119, abs=1e-4)
    a, b = elo_update(1200, 1000, 0.5, k=32)  # a draw costs the favourite
    assert a == pytest.approx(1191.6881, abs=1e-4) and b == pytest.approx(1008.3119, abs=1e-4)
    a, b = elo_update(1200, 1000, 0.0, k=10)
    assert a == pytest.approx(1200 - 7.597469, abs=1e-5) and a + b == pytest.approx(2200)
    with pytest.raises(APIUsageError, match="score_a"):
        elo_update(1000, 1000, 2.0)


def test_table_records_anchors_and_parents() -> None:
    table = LeagueTable(k=32)
    table.add("random", rating=800, fixed=True)
    table.add("learner-0")
    table.record_game("learner-0", "random", 1.0)
    assert table.rating("random") == 800  # anchors do not move
    assert table.rating("learner-0") == pytest.approx(1000 + 32 * (1 - expected_score(1000, 800)))
    table.record_game("learner-0", "random", 0.5)
    table.add("learner-1", parent="learner-0")
    assert table.rating("learner-1") == table.rating("learner-0")
    row = next(r for r in table.rows() if r["id"] == "learner-0")
    assert (row["games"], row["wins"], row["draws"], row["losses"]) == (2, 1, 1, 0)
    assert table.players["random"].record == {"learner-0": [0, 1, 1]}
    with pytest.raises(APIUsageError, match="already"):
        table.add("random")
    with pytest.raises(APIUsageError, match="unknown player 'ghost'"):
        table.record_game("ghost", "random", 1.0)


def test_pairwise_multiplayer_reduces_to_two_player() -> None:
    assert pairwise_scores([3.0, 1.0, 3.0]) == [(0, 1, 1.0), (0, 2, 0.5), (1, 2, 0.0)]
    two, multi = LeagueTable(k=32), LeagueTable(k=32)
    for t in (two, multi):
        t.add("a", rating=1100)
        t.add("b")
    two.record_game("a", "b", 0.0)
    multi.record_multiplayer(["a", "b"], [0.0, 1.0])
    assert two.rating("a") == multi.rating("a") and two.rating("b") == multi.rating("b")
    three = LeagueTable(k=32)
    for pid in "xyz":
        three.add(pid)
    three.record_multiplayer(list("xyz"), [2.0, 1.0, 0.0])
    assert three.rating("x") == pytest.approx(1016) and three.rating("y") == pytest.approx(1000)
    assert three.rating("z") == pytest.approx(984)


def test_save_and_load_round_trip(tmp_path) -> None:
    table = LeagueTable(k=24)
    table.add("random", rating=900, fixed=True)
    table.add("s0")
    for score in (1.0, 0.0, 0.5, 1.0):
        table.record_game("s0", "random", score)
    table.save(tmp_path / "league.json")
    loaded = LeagueTable.load(tmp_path / "league.json")
    assert loaded == table and loaded.history == table.history and loaded.format() == table.format()
