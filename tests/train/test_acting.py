"""RowActor with a sequence policy: each row's token context, reset at episode starts, lowered by its rewards,
extended only by the rows that act."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch
from pettingzoo.classic import tictactoe_v3

from shoal import vector
from shoal.errors import APIUsageError
from shoal.policies.decision_transformer import DecisionTransformer
from shoal.train import evaluate
from shoal.train.acting import RowActor

#: CartPole with a short time limit
CARTPOLE = functools.partial(gym.make, "CartPole-v1", max_episode_steps=200)




def transformer(vec: vector.VecEnv, target_return: float | None = 50.0) -> DecisionTransformer:
    torch.manual_seed(0)
    return DecisionTransformer.from_env(vec, context_length=3, embed_dim=16, num_layers=1, dropout=0.0,
                                        hidden_size=16, return_scale=50.0, target_return=target_return).eval()


def test_the_context_follows_each_row_and_restarts_with_its_episode() -> None:
    with vector.make(CARTPOLE, 2, seed=0) as vec:
        policy = transformer(vec)
        actor = RowActor(policy, 2, 1, "cpu", continuous=False, deterministic=True, target_return=30.0)
        rows = np.arange(2)
        obs, _ = vec.reset(0)
        seen = []
        starts, rewards = np.ones(2, bool), np.zeros(2, np.float32)
        for step in range(5):
            seen.append(obs[1].copy())
            action = actor.act(obs, rows, starts=starts, rewards=rewards).env_actions
            starts = np.zeros(2, bool)
            obs, rewards, *_ = vec.step(action)
            rewards = rewards * np.float32(step + 1)  # distinct rewards, to see each one subtracted
        context = actor.context
        assert context.length.tolist() == [5, 5] and context.next_timestep.tolist() == [5, 5]
        # the return-to-go of each step: the target less the rewards before it (1, 2, 3, 4 received so far)
        torch.testing.assert_close(context.returns[1], torch.tensor([30.0 - 1 - 2, 30.0 - 1 - 2 - 3, 30.0 - 10]))
        torch.testing.assert_close(context.obs[1], torch.from_numpy(np.stack(seen[-3:])))
        assert context.timesteps[1].tolist() == [2, 3, 4]

        # row 1 starts an episode: it acts as a fresh actor would on that observation, row 0 goes on
        fresh = RowActor(policy, 2, 1, "cpu", continuous=False, deterministic=True, target_return=30.0)
        starts = np.array([False, True])
        logp = actor.act(obs, rows, starts=starts, rewards=rewards).log_probs
        expected = fresh.act(obs, rows, starts=np.ones(2, bool), rewards=np.zeros(2, np.float32)).log_probs
        assert logp[1] == expected[1] and logp[0] != expected[0]
        assert context.length.tolist() == [6, 1] and context.timesteps[1, -1] == 0
        assert context.to_go.tolist() == [30.0 - 15, 30.0]


def test_turn_based_rows_extend_their_context_only_when_they_act() -> None:
    with vector.make(tictactoe_v3.env, 1, seed=0) as vec:
        policy = transformer(vec, target_return=1.0)
        actor = RowActor(policy, 2, 2, "cpu", continuous=False, deterministic=False)  # the model's own target
        rows = np.arange(2)
        obs, _ = vec.reset(0)
        starts, rewards = np.ones(2, bool), np.zeros(2, np.float32)
        moves = np.zeros(2, np.int64)
        for _ in range(4):  # no game of tic-tac-toe ends within four moves
            live = vec.masks.copy()
            action = actor.act(obs, rows, live, starts=starts, action_masks=vec.action_masks,
                               rewards=rewards).env_actions
            assert vec.action_masks[live][0, action[live][0]]  # legal moves only
            starts = np.where(live, False, starts)
            moves += live
            obs, rewards, *_ = vec.step(action)
        assert actor.context.length.tolist() == moves.tolist() == [2, 2]
        assert actor.context.next_timestep.tolist() == [2, 2]
    assert evaluate(policy, tictactoe_v3.env, 4, seed=1)["episodes"] == 4


def test_acting_without_a_target_return_or_rewards_is_refused() -> None:
    with vector.make(CARTPOLE, 1, seed=0) as vec:
        obs, _ = vec.reset(0)
        untargeted = transformer(vec, target_return=None)
        with pytest.raises(APIUsageError, match="none was given: pass --target-return"):
            evaluate(untargeted, CARTPOLE, 1)
        assert evaluate(untargeted, CARTPOLE, 1, target_return=5.0)["episodes"] == 1
        actor = RowActor(transformer(vec), 1, 1, "cpu", continuous=False)
        with pytest.raises(ValueError, match=r"needs starts .* and rewards"):
            actor.act(obs, np.arange(1), starts=np.ones(1, bool))
