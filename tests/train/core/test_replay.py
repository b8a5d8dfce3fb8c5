"""ReplayBuffer: decisions completed into transitions exactly, on real envs and on hand-made results."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from pettingzoo.classic import tictactoe_v3

import shoal
from shoal.emulation.base import action_mask_width
from shoal.train.core.replay import ReplayBuffer


def _buffer(capacity: int = 100, rows: int = 2, agents: int = 1, mask_width: int = 0) -> ReplayBuffer:
    return ReplayBuffer(capacity, rows, agents, 3, np.float32, (), np.int64, mask_width)


def test_a_decision_completes_when_its_slot_acts_again_or_its_episode_ends() -> None:
    buf = _buffer()
    rows = np.arange(2)
    obs0 = np.arange(6, dtype=np.float32).reshape(2, 3)
    buf.act(rows, obs0, np.array([1, 0]), None)
    # row 0 continues, row 1 is truncated with a final observation
    obs1 = obs0 + 10
    final = np.full(3, -7.0, np.float32)
    done = buf.finish(rows, np.array([1.5, 2.5], np.float32), np.array([False, False]), np.array([False, True]),
                      np.array([True, True]), obs1, None, {1: final})
    assert done == 2 and buf.size == 2 and not buf.pending.any()
    np.testing.assert_array_equal(buf.obs[:2], obs0)
    np.testing.assert_array_equal(buf.next_obs[0], obs1[0])
    np.testing.assert_array_equal(buf.next_obs[1], final)  # truncation: bootstrap from the final observation
    np.testing.assert_array_equal(buf.rewards[:2], [1.5, 2.5])
    np.testing.assert_array_equal(buf.terminals[:2], [0.0, 0.0])
    np.testing.assert_array_equal(buf.actions[:2], [1, 0])


def test_rewards_add_up_while_a_slot_waits_and_a_terminal_is_kept() -> None:
    buf = _buffer()
    rows = np.arange(2)
    buf.act(rows[:1], np.zeros((1, 3), np.float32), np.array([1]), None)
    waiting = np.array([False, True])  # row 0 waits (another slot's turn)
    no = np.zeros(2, np.bool_)
    assert buf.finish(rows, np.array([1.0, 0.0], np.float32), no, no, waiting, np.ones((2, 3), np.float32), None,
                      {}) == 0
    assert buf.finish(rows, np.array([-3.0, 0.0], np.float32), np.array([True, False]), no, waiting,
                      np.ones((2, 3), np.float32), None, {}) == 1
    assert buf.rewards[0] == -2.0 and buf.terminals[0] == 1.0 and buf.size == 1


def test_the_ring_keeps_the_newest_transitions_and_round_trips_through_its_state() -> None:
    buf = _buffer(capacity=5, rows=1)
    for step in range(8):
        buf.act(np.array([0]), np.full((1, 3), step, np.float32), np.array([step]), None)
        buf.finish(np.array([0]), np.ones(1, np.float32), np.zeros(1, np.bool_), np.zeros(1, np.bool_),
                   np.ones(1, np.bool_), np.full((1, 3), step + 1, np.float32), None, {})
    assert buf.size == 5 and buf.added == 8
    assert sorted(buf.actions.tolist()) == [3, 4, 5, 6, 7]
    copy = _buffer(capacity=5, rows=1)
    copy.load_state_dict(buf.state_dict())
    copy.load_carry_state(buf.carry_state())
    for name in ("obs", "next_obs", "actions", "rewards", "terminals", "agent_ids"):
        np.testing.assert_array_equal(getattr(copy, name), getattr(buf, name))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = buf.sample(4, g1, torch.device("cpu")), copy.sample(4, g2, torch.device("cpu"))
    assert torch.equal(a.obs, b.obs) and torch.equal(a.actions, b.actions)


def _drive(vec: object, buf: ReplayBuffer, steps: int, rng: np.random.Generator) -> int:
    """Random legal actions on ``vec``, recorded in ``buf``; returns the decisions taken."""
    obs, infos = vec.reset(seed=0)
    rows = np.arange(vec.num_agents)
    decisions = 0
    for _ in range(steps):
        masks, action_masks = vec.masks.copy(), vec.action_masks
        if action_masks is None:
            actions = rng.integers(0, 2, vec.num_agents)
        else:
            actions = np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in action_masks])
        live = np.flatnonzero(masks)
        buf.act(rows[live], obs[live], actions[live], None if action_masks is None else action_masks[live])
        decisions += len(live)
        obs, rewards, terminals, truncations, infos = vec.step(actions)
        final = {k: infos[k]["final_observation"] for k in np.flatnonzero(truncations & ~terminals)}
        buf.finish(rows, rewards, terminals, truncations, vec.masks, obs, vec.action_masks, final)
    return decisions


def test_on_a_time_limited_gymnasium_env_next_observations_chain_and_truncations_bootstrap() -> None:
    vec = shoal.vector.make(lambda: gym.make("CartPole-v1", max_episode_steps=7), 1)
    buf = ReplayBuffer(1000, 1, 1, 4, np.float32, (), np.int64, 0)
    _drive(vec, buf, 60, np.random.default_rng(0))
    vec.close()
    n = buf.size
    length, truncations = 0, 0
    for i in range(n - 1):
        length += 1
        if buf.terminals[i]:
            length = 0
        elif length == 7:  # the time limit: bootstrap from the episode's final observation, not the next reset
            assert not np.array_equal(buf.next_obs[i], buf.obs[i + 1])
            truncations += 1
            length = 0
        else:  # within an episode the next observation is the next decision's observation
            np.testing.assert_array_equal(buf.next_obs[i], buf.obs[i + 1])
    assert truncations > 0, "expected time-limit truncations within 60 steps of 7-step episodes"


def test_in_a_turn_based_game_each_player_decision_becomes_one_transition_with_its_masks() -> None:
    vec = shoal.vector.make(lambda: tictactoe_v3.env(), 2)
    width = action_mask_width(vec.action_layout)
    buf = ReplayBuffer(1000, vec.num_agents, vec.agents_per_env, vec.obs_layout.flat_size,
                       vec.obs_layout.flat_dtype, (), np.int64, width)
    decisions = _drive(vec, buf, 200, np.random.default_rng(1))
    vec.close()
    assert buf.size == decisions - int(buf.pending.sum())
    n = buf.size
    # the stored action was legal at its decision, and games end with +-1 (or 0 for a draw) for the player
    assert all(buf.action_masks[i, buf.actions[i]] for i in range(n))
    assert set(np.unique(buf.rewards[:n])) <= {-1.0, 0.0, 1.0}
    assert (buf.rewards[:n] != 0).any() and (buf.terminals[:n] == 1).any()
    assert set(np.unique(buf.agent_ids[:n])) == {0, 1}


def test_n_step_transitions_join_a_slots_decisions_and_flush_at_the_episode_end() -> None:
    gamma = 0.5
    buf = ReplayBuffer(100, 1, 1, 3, np.float32, (), np.int64, 0, gamma=gamma, n_step=3)
    row, yes, no = np.array([0]), np.ones(1, np.bool_), np.zeros(1, np.bool_)
    rewards = [1.0, 2.0, 3.0, 4.0]
    for t, reward in enumerate(rewards):
        buf.act(row, np.full((1, 3), t, np.float32), np.array([t]), None)
        last = t == len(rewards) - 1
        buf.finish(row, np.array([reward], np.float32), yes if last else no, no, yes,
                   np.full((1, 3), t + 1, np.float32), None, {})
        assert buf.size == (0 if t < 2 else 1 if not last else 4)
    order = np.argsort(buf.actions[:4])
    np.testing.assert_allclose(buf.rewards[order], [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3 + 0.25 * 4, 3 + 0.5 * 4, 4])
    np.testing.assert_allclose(buf.discounts[order], [gamma**3, gamma**3, gamma**2, gamma])
    np.testing.assert_array_equal(buf.next_obs[order][:, 0], [3, 4, 4, 4])
    np.testing.assert_array_equal(buf.terminals[order], [0, 1, 1, 1])
    assert buf.c_length[0] == 0  # nothing left over into the next episode


def test_n_step_chains_of_interleaved_slots_stay_apart_and_a_truncation_flushes_with_its_final_observation() -> None:
    gamma = 0.9
    buf = ReplayBuffer(100, 2, 2, 3, np.float32, (), np.int64, 0, gamma=gamma, n_step=2)
    rows = np.arange(2)
    no, yes = np.zeros(2, np.bool_), np.ones(2, np.bool_)
    for t in range(3):  # both slots act every step; slot 1 is truncated after its third decision
        buf.act(rows, np.array([[t, 0, 0], [t, 1, 0]], np.float32), np.array([10 + t, 20 + t]), None)
        truncated = np.array([False, t == 2])
        buf.finish(rows, np.array([1.0, 2.0], np.float32), no, truncated, yes,
                   np.array([[t + 1, 0, 0], [t + 1, 1, 0]], np.float32), None,
                   {1: np.full(3, -5.0, np.float32)} if t == 2 else {})
    n = buf.size
    by_action = {int(buf.actions[i]): i for i in range(n)}
    assert sorted(by_action) == [10, 11, 20, 21, 22]  # slot 0's last decision still waits in its chain
    for action in (10, 11):  # slot 0: two decisions joined, rewards 1 + 0.9 * 1
        i = by_action[action]
        assert buf.agent_ids[i] == 0 and np.isclose(buf.rewards[i], 1.9) and np.isclose(buf.discounts[i], gamma**2)
    i = by_action[21]  # slot 1's truncated episode flushes: 2 joined decisions, then 1, both to the final obs
    assert np.isclose(buf.rewards[i], 3.8) and np.isclose(buf.discounts[i], gamma**2)
    np.testing.assert_array_equal(buf.next_obs[i], [-5, -5, -5])
    i = by_action[22]
    assert np.isclose(buf.rewards[i], 2.0) and np.isclose(buf.discounts[i], gamma) and buf.terminals[i] == 0
    np.testing.assert_array_equal(buf.next_obs[i], [-5, -5, -5])
    assert buf.c_length.tolist() == [1, 0]


def _critic_buffer(n_step: int = 1, capacity: int = 50) -> ReplayBuffer:
    return ReplayBuffer(capacity, 2, 2, 3, np.float32, (), np.int64, 0, gamma=0.5, n_step=n_step, critic_width=4)


def test_critic_inputs_ride_with_their_transitions_and_a_truncation_takes_the_final_one() -> None:
    buf = _critic_buffer()
    plain = _buffer(capacity=50)
    assert buf.nbytes - plain.nbytes == 50 * 2 * 4 * 4  # two float32 rows of 4 numbers per transition
    rows = np.arange(2)
    critic0 = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
    buf.act(rows, np.zeros((2, 3), np.float32), np.array([0, 1]), None, critic0)
    critic1 = critic0 + 100
    final = np.full(4, -9.0, np.float32)
    no = np.zeros(2, np.bool_)
    buf.finish(rows, np.ones(2, np.float32), no, np.array([False, True]), np.ones(2, np.bool_),
               np.ones((2, 3), np.float32), None, {1: np.full(3, -1.0, np.float32)}, critic1, {1: final})
    np.testing.assert_array_equal(buf.critic_obs[:2], critic0)
    np.testing.assert_array_equal(buf.next_critic_obs[0], critic1[0])
    np.testing.assert_array_equal(buf.next_critic_obs[1], final)
    batch = buf.sample(16, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert batch.critic_obs.shape == (16, 4) and batch.next_critic_obs.dtype == torch.float32
    # each sampled row's inputs belong to its own transition (actions 0 and 1 came from rows 0 and 1)
    for i in range(16):
        np.testing.assert_array_equal(batch.critic_obs[i].numpy(), critic0[int(batch.actions[i])])
    plain.act(np.array([0]), np.zeros((1, 3), np.float32), np.array([0]), None)
    plain.finish(np.array([0]), np.ones(1, np.float32), np.ones(1, np.bool_), np.zeros(1, np.bool_),
                 np.ones(1, np.bool_), np.zeros((1, 3), np.float32), None, {})
    assert plain.sample(2, torch.Generator(), torch.device("cpu")).critic_obs is None  # none stored, none sampled


def test_n_step_joins_carry_the_first_decisions_critic_input_and_the_last_next_one() -> None:
    buf = _critic_buffer(n_step=2)
    row = np.array([0])
    no, yes = np.zeros(1, np.bool_), np.ones(1, np.bool_)
    for step in range(3):
        buf.act(row, np.full((1, 3), step, np.float32), np.array([step]), None, np.full((1, 4), step, np.float32))
        end = np.array([step == 2])
        buf.finish(row, np.ones(1, np.float32), end, no, yes, np.full((1, 3), step + 1, np.float32), None, {},
                   np.full((1, 4), step + 1, np.float32))
    # transitions from decisions 0 (joined with 1), 1 (joined with 2, terminal) and 2 (flushed at the end)
    assert buf.size == 3
    np.testing.assert_array_equal(buf.critic_obs[:3, 0], [0, 1, 2])
    np.testing.assert_array_equal(buf.next_critic_obs[:3, 0], [2, 3, 3])
    np.testing.assert_array_equal(buf.next_obs[:3, 0], [2, 3, 3])
    restored = _critic_buffer(n_step=2)
    restored.load_state_dict(buf.state_dict())
    restored.load_carry_state(buf.carry_state())
    for name in ("critic_obs", "next_critic_obs", "p_critic", "c_critic"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(buf, name))


def test_a_buffer_with_critic_inputs_refuses_decisions_without_them_and_states_without_them() -> None:
    buf = _critic_buffer()
    with pytest.raises(ValueError, match="critic_obs"):
        buf.act(np.arange(2), np.zeros((2, 3), np.float32), np.array([0, 1]), None)
    plain = ReplayBuffer(50, 2, 2, 3, np.float32, (), np.int64, 0, gamma=0.5)
    with pytest.raises(ValueError, match="critic_obs"):
        buf.load_state_dict(plain.state_dict())
