"""Search players: the exact tic-tac-toe solver and connect-four alpha-beta, on the real PettingZoo games."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.errors import APIUsageError
from shoal.train.runs.resolve import resolve_env
from shoal.train.selfplay.heuristics import connect_four_heuristic, random_policy, tictactoe_heuristic
from shoal.train.selfplay.league import make_player, play_match
from shoal.train.selfplay.opponents import ScriptedPlayer
from shoal.train.selfplay.search import (
    alphabeta_connect_four,
    connect_four_bitboards,
    connect_four_scores,
    search_player,
    tictactoe_solver,
    tictactoe_values,
)

TICTACTOE = "pettingzoo.classic.tictactoe_v3"
CONNECT_FOUR = "pettingzoo.classic.connect_four_v3"


def _player(name: str, fn, seed: int) -> ScriptedPlayer:
    return ScriptedPlayer(name, fn, np.random.default_rng(seed))


def test_solver_never_loses_to_random_from_either_seat() -> None:
    result = play_match(_player("solver", tictactoe_solver, 1), _player("random", random_policy(9), 2),
                        resolve_env(TICTACTOE), 600, seed=5, num_envs=16)
    assert result.games == 600
    assert result.losses == 0
    assert set(result.seats) == {0, 1} and all(sum(v) == 300 for v in result.seats.values())
    # a perfect player wins most games against random play from both seats
    assert result.seats[0][0] >= 270 and result.seats[1][0] >= 200


def test_solver_against_itself_always_draws_and_never_loses_to_the_heuristic() -> None:
    env_fn = resolve_env(TICTACTOE)
    mirror = play_match(_player("a", tictactoe_solver, 1), _player("b", tictactoe_solver, 2), env_fn, 200, seed=3)
    assert (mirror.games, mirror.draws) == (200, 200)
    versus = play_match(_player("solver", tictactoe_solver, 1), _player("heuristic", tictactoe_heuristic, 2),
                        env_fn, 300, seed=4)
    assert versus.losses == 0 and versus.wins > 30


def test_solver_values_match_known_positions() -> None:
    # the empty board is a draw with every opening; a free win is worth more than anything else
    assert set(tictactoe_values(0, 0).values()) == {0}
    own = 0b000_000_011  # cells 0 and 1: cell 2 wins at once
    opp = 0b000_011_000  # cells 3 and 4: the opponent threatens 5
    values = tictactoe_values(own, opp)
    assert max(values, key=values.get) == 2 and values[2] > 0
    # without the winning move the threat at 5 must be blocked: every other move loses
    values = tictactoe_values(0b001_000_000 | 0b000_000_001, 0b000_011_000 | 0b100_000_000)
    assert values[5] >= 0 and all(v < 0 for c, v in values.items() if c != 5)


def test_connect_four_board_reading_follows_the_pettingzoo_observation() -> None:
    env = resolve_env(CONNECT_FOUR)()
    env.reset(seed=0)
    for column in (3, 3, 4):  # first player: 3, 4 (bottom row); second player: 3 (on top of the first)
        env.step(column)
    obs = env.observe(env.agent_selection)["observation"]  # the second player to move
    own, opp = connect_four_bitboards(obs.reshape(1, -1))[0]
    assert own == 1 << (3 * 7 + 1)  # column 3, height 1
    assert opp == (1 << (3 * 7)) | (1 << (4 * 7))  # columns 3 and 4 at height 0
    env.close()


def test_alphabeta_wins_blocks_and_sees_a_double_threat() -> None:
    bottom = lambda *cols: sum(1 << (c * 7) for c in cols)  # noqa: E731
    # three in a row on the bottom: win now
    assert max(connect_four_scores(bottom(1, 2, 3), bottom(1, 2, 3) << 1, 2).items(), key=lambda kv: kv[1])[0] in (0, 4)
    # the opponent has three in a row on the bottom, open at column 0 only (column 4 taken): block at 0
    own, opp = bottom(4) | (1 << (1 * 7 + 1)), bottom(1, 2, 3)
    scores = connect_four_scores(own, opp, 3)
    assert max(scores, key=scores.get) == 0
    # two in a row with both ends open (columns 1 and 4 free, 0 and 5 too): depth 3 finds the double threat
    own, opp = bottom(2, 3), (1 << (2 * 7 + 1)) | (1 << (3 * 7 + 1))
    scores = connect_four_scores(own, opp, 3)
    assert max(scores, key=scores.get) in (1, 4)


@pytest.mark.parametrize("depth", [2, 4])
def test_alphabeta_beats_the_one_step_heuristic_from_both_seats(depth: int) -> None:
    result = play_match(_player("ab", alphabeta_connect_four(depth), 1), _player("h", connect_four_heuristic, 2),
                        resolve_env(CONNECT_FOUR), 40, seed=9)
    assert result.games == 40
    assert result.wins >= 34, result.summary()
    assert all(v[0] >= 16 for v in result.seats.values())


def test_deeper_search_beats_shallower() -> None:
    result = play_match(_player("d4", alphabeta_connect_four(4), 1), _player("d1", alphabeta_connect_four(1), 2),
                        resolve_env(CONNECT_FOUR), 20, seed=2)
    assert result.score >= 0.8, result.summary()


def test_search_player_names_are_checked() -> None:
    assert search_player("solver", "tictactoe") is tictactoe_solver
    with pytest.raises(APIUsageError, match="does not play 'connect_four'"):
        search_player("solver", "connect_four")
    with pytest.raises(APIUsageError, match="positive integer"):
        search_player("alphabeta@0", "connect_four")
    with pytest.raises(APIUsageError, match="takes none"):
        search_player("solver@3", "tictactoe")
    with pytest.raises(APIUsageError, match="search depth must be a positive int"):
        alphabeta_connect_four(0)
    player = make_player("alphabeta@2", resolve_env(CONNECT_FOUR))
    assert player.player_id == "alphabeta@2"
