"""NaN and infinity in rewards and observations: emulators raise NonFiniteError naming the field and the step."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from shoal.emulation import compile_layout, emulate
from shoal.emulation.finite import FiniteCheck, first_nonfinite
from shoal.errors import EnvError, NonFiniteError
from tests.vector import envs_for_tests as envs

NAN, INF = float("nan"), float("inf")


def _step_until_error(env, steps: int = 10) -> NonFiniteError:
    action = np.zeros((1, *env.action_layout.flat_shape), env.action_layout.flat_dtype)
    with pytest.raises(NonFiniteError) as caught:
        for _ in range(steps):
            env.step(action)
    return caught.value


@pytest.mark.parametrize("value", [NAN, INF, -INF, np.float32(NAN), np.array(INF)])
def test_non_finite_reward_names_env_field_and_step(value: object, row_copy: str) -> None:
    env = emulate(envs.poisoned_cartpole("reward", at=3, value=value))
    env.reset(seed=0)
    error = _step_until_error(env)
    message = str(error)
    shown = "NaN" if np.isnan(float(value)) else str(float(value))
    assert f"CartPoleEnv returned a non-finite reward = {shown} at step 3 of its episode" in message
    assert "check_finite=False" in message and error.field == "reward"
    assert isinstance(error, EnvError)  # the env broke its contract
    assert pickle.loads(pickle.dumps(error)).field == "reward"


def test_non_finite_observation_names_the_leaf_entry(row_copy: str) -> None:
    env = emulate(envs.poisoned_cartpole("obs", at=2, value=-INF, index=2))
    env.reset(seed=0)
    error = _step_until_error(env)
    assert "non-finite observation obs[2] = -inf at step 2 of its episode" in str(error)
    assert error.field == "obs[2]"


def test_non_finite_entry_of_a_byte_row_names_its_nested_leaf() -> None:
    env = emulate(envs.poisoned_nested(at=2, value=INF))  # float32 position among integer leaves
    assert env.obs_layout.is_bytes
    env.reset(seed=0)
    error = _step_until_error(env)
    assert "NestedDictEnv returned a non-finite observation obs['agent']['position'][1] = inf at step 2" in str(error)


def test_final_observation_and_first_observation_are_checked(row_copy: str) -> None:
    # Truncated at step 4 with the poisoned observation: it reaches only info["final_observation"].
    env = emulate(envs.poisoned_cartpole("obs", at=4, max_episode_steps=4))
    env.reset(seed=0)
    error = _step_until_error(env)
    assert "obs[2] (the final observation) = NaN at step 4 of its episode" in str(error)
    # Infinite velocity lies inside CartPole's unbounded Box, so only the finite check catches it on reset.
    env = emulate(envs.poisoned_cartpole("obs", at=0, value=INF, index=1))
    with pytest.raises(NonFiniteError, match=r"observation obs\[1\] = inf on reset"):
        env.reset(seed=0)


def test_auto_reset_first_observation_is_checked(row_copy: str) -> None:
    class PoisonFirst(gym.Wrapper):  # the second episode's first observation is infinite
        resets = 0

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            self.resets += 1
            return (obs if self.resets == 1 else np.array([0, INF, 0, 0], np.float32)), info

    env = emulate(PoisonFirst(gym.make("CartPole-v1", max_episode_steps=3)))
    env.reset(seed=0)
    with pytest.raises(NonFiniteError, match=r"obs\[1\] = inf on reset"):
        for _ in range(4):
            env.step(np.array([0]))


def test_check_finite_false_lets_them_through(row_copy: str) -> None:
    env = emulate(envs.poisoned_cartpole("reward", at=1), check_finite=False)
    env.reset(seed=0)
    assert np.isnan(env.step(np.array([0]))[1][0])
    env = emulate(envs.poisoned_cartpole("obs", at=1, value=INF), check_finite=False)
    env.reset(seed=0)
    assert np.isinf(env.step(np.array([0]))[0][0, 2])


def test_option_survives_pickling() -> None:
    for check in (True, False):
        env = emulate(envs.poisoned_cartpole("reward", at=2), check_finite=check)
        env.reset(seed=0)
        env.step(np.array([0]))
        copy = pickle.loads(pickle.dumps(env))
        assert (copy._finite is not None) == check
        if check:
            _step_until_error(copy)
        else:
            copy.step(np.array([0]))


def test_pettingzoo_names_the_agent_and_its_slot() -> None:
    env = emulate(envs.poisoned_kaz(at=2))  # float64 observations
    env.reset(seed=0)
    with pytest.raises(NonFiniteError, match=r"agent 'archer_1' \(slot 1\) of knights_archers_zombies_v11 returned "
                       r"a non-finite reward = NaN at step 2 since reset\(\)"):
        for _ in range(5):
            env.step(np.zeros(env.num_agents, np.int64))
    env = emulate(envs.poisoned_kaz(at=2), check_finite=False)
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros(env.num_agents, np.int64))


def test_finite_check_scans_float_leaves_only() -> None:
    ints = compile_layout(spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(0, 9, (4,), np.int16)}))
    assert not FiniteCheck(ints).active  # nothing to scan: integers hold no NaN
    assert FiniteCheck(ints).first_bad(np.zeros((3, ints.flat_size), ints.flat_dtype)) is None
    mixed = compile_layout(spaces.Dict({"n": spaces.Discrete(3), "x": spaces.Box(-1, 1, (2, 2), np.float64)}))
    check = FiniteCheck(mixed)
    rows = np.zeros((3, mixed.flat_size), mixed.flat_dtype)
    assert check.first_bad(rows) is None
    leaf = mixed.leaf("x")
    rows[2, leaf.byte_offset : leaf.byte_offset + leaf.nbytes].view(np.float64)[3] = NAN
    assert check.first_bad(rows)[:2] == (2, "obs['x'][1][1]")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.longdouble])
def test_first_nonfinite(dtype: type) -> None:
    values = np.zeros(300, dtype)
    assert first_nonfinite(values) == -1
    values[[120, 250]] = [INF, NAN]
    assert first_nonfinite(values) == 120
    assert first_nonfinite(values[::2]) == 60  # strided: numpy does it
    assert first_nonfinite(values.reshape(30, 10)) == 120
    assert first_nonfinite(np.zeros(5, np.int64)) == -1


def test_vector_groups_leave_the_check_to_the_vector_env() -> None:
    from shoal.vector.group import make_emulator

    assert make_emulator(envs.cartpole, {})._finite is None
    assert make_emulator(envs.cartpole, {"check_finite": True})._finite is not None
    assert emulate(gym.make("CartPole-v1"))._finite is not None  # on its own: checked by default


def test_lock_step_unchanged_with_the_check() -> None:
    # The check changes nothing in what a healthy env's emulator returns.
    a, b = emulate(gym.make("CartPole-v1")), emulate(gym.make("CartPole-v1"), check_finite=False)
    np.testing.assert_array_equal(a.reset(seed=3)[0], b.reset(seed=3)[0])
    rng = np.random.default_rng(0)
    for _ in range(300):
        action = rng.integers(0, 2, 1)
        out_a, out_b = a.step(action), b.step(action)
        for x, y in zip(out_a[:4], out_b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        assert out_a[4][0].keys() == out_b[4][0].keys()




def test_native_checked_copy() -> None:
    rowcopy = pytest.importorskip("shoal.emulation._rowcopy")
    dst, src = np.zeros(3, np.float32), np.array([1, 2, NAN], np.float32)
    rowcopy.copy_row(dst, src, 1.0)  # the third argument is ignored
    np.testing.assert_array_equal(dst, src)
    with pytest.raises(rowcopy.NonFiniteValue) as caught:
        rowcopy.copy_row_checked(dst, src * 2, 1.0)
    assert caught.value.args == ("observation", 2) and np.isnan(dst[2]) and dst[1] == 4  # copied, then raised
    for reward in (NAN, -INF, np.float32(INF), np.array(NAN)):
        with pytest.raises(rowcopy.NonFiniteValue, match="reward"):
            rowcopy.copy_row_checked(dst, np.ones(3, np.float32), reward)
    rowcopy.copy_row_checked(dst, np.ones(3, np.float32), 10**400)  # an int too large for a double: finite
    ints = np.zeros(3, np.int64)
    rowcopy.copy_row_checked(ints, np.ones(3, np.int64), 0.0)  # integer rows are not scanned
    with pytest.raises(TypeError):
        rowcopy.copy_row_checked(dst, src)


def test_byte_swapped_floats_are_checked_too() -> None:
    # the native scan reads native-order bit patterns: a big-endian NaN looked finite to it
    swapped = ">f8" if np.little_endian else "<f8"
    assert first_nonfinite(np.array([1.0, np.nan, 3.0], swapped)) == 1
    assert first_nonfinite(np.array([1.0, 2.0], swapped)) == -1

    class Swapped(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (3,), np.dtype(">f4"))
        action_space = gym.spaces.Discrete(2)

        def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            return np.zeros(3, ">f4"), {}

        def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
            return np.array([0.0, np.nan, 0.0], ">f4"), 0.0, False, False, {}

    env = emulate(Swapped())
    env.reset(seed=0)
    with pytest.raises(NonFiniteError, match=r"obs\[1\]"):
        env.step(np.zeros(1, np.int64))
