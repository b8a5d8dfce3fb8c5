"""Policy players of matches and leagues: a sequence policy is refused by name; a sampling player keeps one batch
shape (and so its traces) whatever rows it plays, and advances only the state of the rows that act."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pettingzoo.classic import connect_four_v3, tictactoe_v3

from shoal import vector
from shoal.errors import APIUsageError
from shoal.policies import Policy
from shoal.policies.decision_transformer import DecisionTransformer
from shoal.train.selfplay.opponents import PolicyPlayer


def test_a_decision_transformer_is_not_a_match_player() -> None:
    with vector.make(tictactoe_v3.env, 1) as vec:
        policy = DecisionTransformer.from_env(vec, context_length=2, embed_dim=8, num_layers=1, hidden_size=8,
                                              target_return=1.0)
    with pytest.raises(APIUsageError, match=r"'dt' is a DecisionTransformer.*shoal eval RUN --target-return"):
        PolicyPlayer("dt", policy)


def _connect_four_rows(num_envs: int, steps: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Observations and legal-action masks of the live rows of a random connect-four game, step by step."""
    out = []
    with vector.make(connect_four_v3.env, num_envs, seed=seed) as vec:
        obs, _ = vec.reset(seed)
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            live = np.flatnonzero(vec.masks)
            out.append((obs[live].copy(), vec.action_masks[live].copy(), live))
            actions = np.zeros(vec.num_agents, np.int64)
            for row in live:
                actions[row] = rng.choice(np.flatnonzero(vec.action_masks[row]))
            obs, *_ = vec.step(actions)
    return out


def test_a_sampling_player_keeps_one_batch_shape_whatever_rows_it_plays() -> None:
    # a trace per batch size cost a league tens of milliseconds per size and player; a tracing player runs
    # every bound row, so its traces are one per mask signature however many rows act
    with vector.make(connect_four_v3.env, 4) as vec:
        torch.manual_seed(0)
        policy = Policy.from_env(vec, hidden_size=16)
        rows, per_env = vec.num_agents, vec.agents_per_env
    player = PolicyPlayer("p", policy)
    player.bind(rows, per_env)
    rng = np.random.default_rng(0)
    for obs, masks, live in _connect_four_rows(4, 40, seed=1):
        take = np.sort(rng.choice(len(live), size=int(rng.integers(1, len(live) + 1)), replace=False))
        actions = player.act(obs[take], masks[take], live[take], np.zeros(len(take), np.bool_))
        assert actions.shape == (len(take),)
        assert masks[take][np.arange(len(take)), actions].all()  # legal moves only
    assert player.acting is not None and 1 <= player.acting.forward.num_traces <= 2


def test_a_tracing_recurrent_player_advances_only_the_rows_that_act() -> None:
    # the full-batch call must leave the LSTM state of the rows not asked for as it was: the same states as an
    # eager player that is only ever given the acting rows
    with vector.make(connect_four_v3.env, 3) as vec:
        torch.manual_seed(0)
        policy = Policy.from_env(vec, hidden_size=16, recurrent=True, lstm_size=8)
        rows, per_env = vec.num_agents, vec.agents_per_env
    tracing, eager = PolicyPlayer("t", policy), PolicyPlayer("e", policy, trace=False)
    for player in (tracing, eager):
        player.bind(rows, per_env)
    first = np.ones(rows, np.bool_)
    rng = np.random.default_rng(3)
    for obs, masks, live in _connect_four_rows(3, 12, seed=2):
        # episode starts mid-game too: a start must zero that row's state before it acts
        starts = first[live] | (rng.random(len(live)) < 0.3)
        first[live] = False
        for player in (tracing, eager):
            player.act(obs, masks, live, starts)
    everyone = np.arange(rows)
    got, want = tracing.get_rows_state(everyone), eager.get_rows_state(everyone)
    assert got is not None and want is not None
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
    assert np.abs(got[0]).sum() > 0  # the rows did advance
