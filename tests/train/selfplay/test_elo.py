"""ELO: the textbook formula on hand-computed cases, anchors, multiplayer games with openskill, save/load."""

from __future__ import annotations

import math

import pytest

from shoal.errors import APIUsageError
from shoal.train.selfplay.elo import DEFAULT_SIGMA, LeagueTable, elo_update, expected_score, pairwise_scores


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


def test_multiplayer_games_use_openskill_on_the_elo_scale() -> None:
    assert pairwise_scores([3.0, 1.0, 3.0]) == [(0, 1, 1.0), (0, 2, 0.5), (1, 2, 0.0)]
    three = LeagueTable(k=32)
    for pid in "xyz":
        three.add(pid)
    three.record_multiplayer(list("xyz"), [2.0, 1.0, 0.0])
    x, y, z = (three.players[pid] for pid in "xyz")
    assert x.rating > y.rating > z.rating
    assert x.rating > 1000 > z.rating
    assert all(p.sigma is not None and p.sigma < DEFAULT_SIGMA for p in (x, y, z))  # uncertainty shrinks
    assert x.record == {"y": [1, 0, 0], "z": [1, 0, 0]} and three.total_games == 1
    # against a fixed anchor, a player scoring 76% settles near +200 (ELO's expected score for +200 is 0.76)
    table = LeagueTable(k=32)
    table.add("anchor", rating=1000.0, fixed=True)
    table.add("a")
    pattern = [1.0] * 19 + [0.0] * 6
    for game in range(2500):
        win = pattern[(game * 7) % 25]
        table.record_multiplayer(["a", "anchor"], [win, 1.0 - win])
    assert table.rating("anchor") == 1000.0
    assert table.rating("a") == pytest.approx(1000 + 400 * math.log10(0.76 / 0.24), abs=40)


def test_save_and_load_round_trip(tmp_path) -> None:
    table = LeagueTable(k=24)
    table.add("random", rating=900, fixed=True)
    table.add("s0")
    for score in (1.0, 0.0, 0.5, 1.0):
        table.record_game("s0", "random", score)
    table.save(tmp_path / "league.json")
    loaded = LeagueTable.load(tmp_path / "league.json")
    assert loaded == table and loaded.history == table.history and loaded.format() == table.format()
