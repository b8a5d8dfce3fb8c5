"""EnvGroup: the one-lookup stepping path for single-agent Discrete envs agrees exactly with each env's own step."""

from __future__ import annotations

import functools
import pickle

import gymnasium as gym
import numpy as np
import pytest

import shoal.vector
from shoal.emulation import GymnasiumEmulator, emulate
from shoal.emulation.gymnasium_batch import GymnasiumBatch
from shoal.errors import APIUsageError
from shoal.vector.buffers import BufferLayout
from shoal.vector.group import EnvGroup
from tests.vector import envs_for_tests as envs

pytestmark = pytest.mark.timeout(60)


def _group(env_fn, num_envs: int) -> tuple[EnvGroup, dict[str, np.ndarray]]:
    probe = emulate(env_fn())
    layout = BufferLayout.build(probe.buffer_spec(), probe.action_layout, num_envs)
    probe.close()
    arrays = layout.allocate()
    return EnvGroup([env_fn] * num_envs, arrays, layout.agents_per_env, {}), arrays


def test_batched_group_matches_each_emulators_own_step() -> None:
    n, steps = 6, 300
    group, arrays = _group(envs.cartpole, n)
    singles = [GymnasiumEmulator(envs.cartpole()) for _ in range(n)]
    group.reset(list(range(n)))
    for i, env in enumerate(singles):
        env.reset(seed=i)
    assert group._batch is not None  # CartPole steps as one GymnasiumBatch
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(steps):
        actions = rng.integers(0, 2, n)
        arrays["actions"][:] = actions
        pairs = dict(group.step())
        for i, env in enumerate(singles):
            obs, rewards, terminals, truncations, infos = env.step(actions[i : i + 1])
            np.testing.assert_array_equal(arrays["obs"][i], obs[0])
            assert (arrays["rewards"][i], arrays["terminals"][i], arrays["truncations"][i]) == (
                rewards[0], terminals[0], truncations[0])
            if infos[0]:
                assert pairs[i]["episode"] == infos[0]["episode"]
                np.testing.assert_array_equal(pairs[i]["final_observation"], infos[0]["final_observation"])
                episodes += 1
            else:
                assert i not in pairs
    assert episodes > 20  # episodes ended and auto-reset along the way
    group.close()
    for env in singles:
        env.close()


def test_envs_without_a_shared_discrete_table_take_each_emulators_step() -> None:
    group, arrays = _group(envs.nested, 2)  # MultiDiscrete actions
    single = emulate(envs.nested())
    group.reset([0, 1])
    single.reset(seed=1)
    assert group._batch is None
    for t in range(5):
        arrays["actions"][:] = t % 2
        group.step()
        obs = single.step(arrays["actions"][1:2])[0]
        np.testing.assert_array_equal(arrays["obs"][1], obs[0])
    group.close()
    single.close()


def test_out_of_range_action_in_a_directly_driven_group_is_named() -> None:
    group, arrays = _group(envs.cartpole, 2)
    group.reset([0, 1])
    arrays["actions"][:] = [0, 7]
    with pytest.raises(APIUsageError, match=r"action 7 .*outside Discrete\(2\)"):
        group.step()
    group.close()


def test_closed_group_forgets_its_batch() -> None:
    group, _ = _group(envs.cartpole, 2)
    group.reset([0, 1])
    assert group._batch is not None
    group.close()
    assert group._batch is None


def test_native_actions_is_live_only_while_ready() -> None:
    env = GymnasiumEmulator(gym.make("CartPole-v1"))
    assert env.native_actions is None
    env.reset(seed=0)
    table = env.native_actions
    assert table is not None and sorted(table) == [0, 1] and env.env.action_space.contains(table[1])
    env.close()
    assert env.native_actions is None
    with pytest.raises(APIUsageError, match=r"step\(\) called after close\(\)"):
        env.step(np.array([1]))


class _Shaped(GymnasiumEmulator):
    """A subclass that changes what a step does: the group must run its ``step``."""

    def step(self, actions: np.ndarray) -> tuple:
        result = super().step(actions)
        self.buffers.rewards[0] *= 10.0
        return result


def test_subclasses_that_override_step_keep_their_own_step() -> None:
    group, arrays = _group(lambda: _Shaped(envs.cartpole()), 2)
    group.reset([0, 1])
    assert group._batch is None
    arrays["actions"][:] = 0
    group.step()
    assert arrays["rewards"].tolist() == [10.0, 10.0]
    group.close()


class _SecondResetFails(gym.Wrapper):
    """CartPole whose second reset raises."""

    def __init__(self) -> None:
        super().__init__(envs.cartpole())
        self.resets = 0

    def reset(self, **kwargs):
        self.resets += 1
        if self.resets == 2:
            raise RuntimeError("second reset")
        return self.env.reset(**kwargs)


def test_a_reset_that_fails_part_way_leaves_no_stale_batch() -> None:
    probe = emulate(envs.cartpole())
    layout = BufferLayout.build(probe.buffer_spec(), probe.action_layout, 2)
    probe.close()
    arrays = layout.allocate()
    group = EnvGroup([envs.cartpole, _SecondResetFails], arrays, layout.agents_per_env, {})
    group.reset([0, 1])
    assert group._batch is not None
    arrays["actions"][:] = 0
    for _ in range(5):
        group.step()
    with pytest.raises(RuntimeError, match="second reset"):
        group.reset([2, 3])  # env 0 starts a new episode, env 1 fails
    assert group._batch is None
    steps = 0
    while True:  # env 0's new episode counts from the reset, not from the episode before it
        steps += 1
        arrays["actions"][:] = steps % 2
        info = dict(group.step()).get(0)
        if info is not None and "episode" in info:
            break
    assert info["episode"]["length"] == steps and info["episode"]["return"] == float(steps)
    group.close()


def _rollout(env_fn, num_envs: int, steps: int) -> list[tuple]:
    """Serial rollout with a snapshot restored into a fresh vector env half-way and a reset later on."""
    out = []
    rng = np.random.default_rng(0)
    vecenv = shoal.vector.make(env_fn, num_envs, backend="serial", num_workers=2, seed=1)
    vecenv.reset()
    for step in range(steps):
        if step == steps // 3:
            state = pickle.loads(pickle.dumps(vecenv.get_state()))
            vecenv.close()
            vecenv = shoal.vector.make(env_fn, num_envs, backend="serial", num_workers=2, seed=1)
            vecenv.reset()
            assert vecenv.set_state(state)
        if step == 2 * steps // 3:
            vecenv.reset(seed=5)
        obs, rewards, terminals, truncations, infos = vecenv.step(rng.integers(0, 2, num_envs))
        episodes = [(row, info["episode"]["return"], info["episode"]["length"], info["final_observation"].tobytes())
                    for row, info in enumerate(infos) if "episode" in info]
        out.append((obs.tobytes(), rewards.tobytes(), terminals.tobytes(), truncations.tobytes(),
                    vecenv.action_masks.tobytes(), episodes))
    vecenv.close()
    return out


def test_a_vector_env_steps_the_same_with_and_without_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches on (checked to be used) and off give the same results across snapshots, restores and resets."""
    env_fn = functools.partial(gym.make, "CartPole-v1", max_episode_steps=9)
    group, _ = _group(env_fn, 2)
    group.reset([0, 1])
    assert group._batch is not None
    group.close()
    batched = _rollout(env_fn, 4, 90)
    monkeypatch.setattr(GymnasiumBatch, "build", classmethod(lambda cls, envs, arrays: None))
    group, _ = _group(env_fn, 2)
    group.reset([0, 1])
    assert group._batch is None
    group.close()
    assert _rollout(env_fn, 4, 90) == batched
    assert sum(len(step[-1]) for step in batched) > 20
