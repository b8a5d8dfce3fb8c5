"""GymnasiumBatch: stepping many emulators as one leaves the same buffers and infos as stepping each on its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from shoal.emulation import Buffers, GymnasiumEmulator, emulate
from shoal.emulation.gymnasium_batch import MAX_ROW_BYTES, GymnasiumBatch
from shoal.errors import APIUsageError, EnvError, SpaceError

pytestmark = pytest.mark.timeout(60)


class Quirky(gym.Env):
    """Box ``[2, 3]`` observations sent as float64 after the first (the space says float32), float32 or int
    rewards, an
    ``"action_mask"`` in ``info`` on some steps only, a ``"note"`` on others, and episodes that end by
    termination or truncation."""

    observation_space = spaces.Box(-10.0, 10.0, (2, 3), np.float32)
    action_space = spaces.Discrete(3, start=-1)

    def __init__(self, rewards: str = "float32") -> None:
        self.rewards = rewards

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.limit = int(self.np_random.integers(3, 9))
        obs = self.np_random.uniform(-1, 1, (2, 3)).astype(np.float32)
        return obs, ({"start": self.limit} if self.limit % 2 else {})

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict]:
        assert self.action_space.contains(action), action
        self.t += 1
        obs = self.np_random.uniform(-1, 1, (2, 3)) + int(action)
        reward = np.float32(0.1 * self.t + int(action)) if self.rewards == "float32" else int(action) + 2
        info: dict[str, Any] = {}
        if self.t % 3 == 1:
            info["action_mask"] = np.array([1, 0, self.t % 2], np.int8)
        elif self.t % 4 == 2:
            info["note"] = self.t
        terminated = self.t >= self.limit and self.limit % 2 == 0
        truncated = self.t >= self.limit and not terminated
        return obs, reward, terminated, truncated, info


class _ConstantEnv(gym.Env):
    action_space = spaces.Discrete(2)

    def __init__(self, observation_space: spaces.Box) -> None:
        self.observation_space = observation_space

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(self.observation_space.shape, self.observation_space.dtype), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(self.observation_space.shape, self.observation_space.dtype), 0.0, False, False, {}


def _rows(envs: list[GymnasiumEmulator]) -> dict[str, np.ndarray]:
    """Every buffer of ``envs``, one row per env, each env attached to its row."""
    spec = envs[0].buffer_spec()
    arrays = {name: np.zeros((len(envs), *shape[1:]), dtype) for name, (shape, dtype) in spec.items()}
    for i, env in enumerate(envs):
        env.attach(Buffers(**{name: array[i : i + 1] for name, array in arrays.items()}))
    return arrays


def _try_batch(envs: list[GymnasiumEmulator]) -> tuple[GymnasiumBatch | None, dict[str, np.ndarray]]:
    """Attach ``envs`` to rows of fresh arrays, reset env ``i`` with seed ``i``, and build a batch over them."""
    arrays = _rows(envs)
    for i, env in enumerate(envs):
        env.reset(seed=i)
    return GymnasiumBatch.build(envs, arrays), arrays


def _batch(envs: list[GymnasiumEmulator]) -> tuple[GymnasiumBatch, dict[str, np.ndarray]]:
    """:func:`_try_batch`, which must build one."""
    batch, arrays = _try_batch(envs)
    assert batch is not None
    return batch, arrays


def _same_info(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert actual[key].dtype == value.dtype
            np.testing.assert_array_equal(actual[key], value)
        elif isinstance(value, dict):
            _same_info(value, actual[key])
        else:
            assert actual[key] == value and type(actual[key]) is type(value), key


class SharedScratch(gym.Env):
    """Every instance returns the same array object (a class-level scratch buffer, as a C env might)."""

    observation_space = spaces.Box(-1e3, 1e3, (3,), np.float32)
    action_space = spaces.Discrete(2)
    scratch = np.zeros(3, np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t, self.me = 0, float(seed or 0)
        return np.full(3, self.me, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        SharedScratch.scratch[:] = self.me + self.t / 100 + int(action)
        return SharedScratch.scratch, 1.0, self.t % 5 == 0, False, {}


class SharedScratchMasked(SharedScratch):
    """One observation array and one mask array for every instance, a mask in every info, episodes ending every
    5 steps (a mask in the reset info on odd seeds only)."""

    observation_space = spaces.Box(-1e3, 1e3, (3,), np.float32)
    action_space = spaces.Discrete(3)
    mask = np.zeros(3, np.int8)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, _ = super().reset(seed=seed)
        SharedScratchMasked.mask[:] = [1, 1, 0]
        return obs, ({"action_mask": SharedScratchMasked.mask} if int(self.me) % 2 else {})

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, _ = super().step(action)
        SharedScratchMasked.mask[:] = 0
        SharedScratchMasked.mask[(int(self.me) + self.t) % 3] = 1
        return obs, reward, terminated, truncated, {"action_mask": SharedScratchMasked.mask}


class TypeDrift(gym.Env):
    """float32 observations at reset (the row's type), float64 ones afterwards; ``None`` as the reset info."""

    observation_space = spaces.Box(-10.0, 10.0, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, Any]:
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), None

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return self.np_random.uniform(-1, 1, 4) + int(action), 0.5, self.t % 7 == 0, False, {}


CASES: dict[str, Callable[[], gym.Env]] = {
    "cartpole_truncating": lambda: gym.make("CartPole-v1", max_episode_steps=12),
    "taxi_discrete_obs_masks_every_step": lambda: gym.make("Taxi-v4", max_episode_steps=15),
    "one_scratch_array_for_all_envs": SharedScratch,
    "one_scratch_array_and_one_mask_array_for_all_envs": SharedScratchMasked,
    "observation_dtype_drifts_after_reset": TypeDrift,
    "quirky_float32_rewards": lambda: Quirky("float32"),
    "quirky_int_rewards": lambda: Quirky("int"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_batch_steps_exactly_like_each_emulator_on_its_own(case: str, row_copy: str) -> None:
    n, steps = 5, 150
    batched = [GymnasiumEmulator(CASES[case]()) for _ in range(n)]
    alone = [GymnasiumEmulator(CASES[case]()) for _ in range(n)]
    arrays = _rows(batched)
    for i in range(n):
        batched[i].reset(seed=i)
        alone[i].reset(seed=i)
    batch = GymnasiumBatch.build(batched, arrays)
    assert batch is not None
    choices = batched[0].action_layout.flat_space.n
    rng = np.random.default_rng(0)
    ended = masked = 0
    for _ in range(steps):
        actions = rng.integers(0, choices, n)
        pairs = dict(batch.step(actions))
        for i, env in enumerate(alone):
            obs, rewards, terminals, truncations, infos = env.step(actions[i : i + 1])
            np.testing.assert_array_equal(arrays["obs"][i], obs[0])
            assert arrays["obs"].dtype == obs.dtype
            assert (arrays["rewards"][i], arrays["terminals"][i], arrays["truncations"][i]) == (
                rewards[0], terminals[0], truncations[0])
            np.testing.assert_array_equal(arrays["action_masks"][i], env.action_masks[0])
            if infos[0]:
                _same_info(infos[0], pairs[i])
                ended += "episode" in infos[0]
            else:
                assert i not in pairs
            masked += not env.action_masks[0].all()
    assert ended > 20 and (masked > 20 or not case.startswith(("quirky", "taxi", "one_scratch_array_and")))
    batch.flush()  # the running returns and lengths go back to the emulators
    for mine, theirs in zip(batched, alone, strict=True):
        assert (mine._return, mine._length) == (theirs._return, theirs._length)
        assert type(mine._return) is type(theirs._return)


def test_batches_are_only_built_for_plain_box_observations_and_one_discrete_table() -> None:
    def build(env_fn: Callable[[], Any], reset: bool = True) -> GymnasiumBatch | None:
        envs = [emulate(env_fn()) for _ in range(2)]
        arrays = _rows(envs)
        if reset:
            for env in envs:
                env.reset(seed=0)
        return GymnasiumBatch.build(envs, arrays)

    assert build(lambda: gym.make("CartPole-v1")) is not None
    assert build(lambda: gym.make("CartPole-v1"), reset=False) is None  # not ready: no action table yet
    assert build(lambda: gym.make("Blackjack-v1")) is None  # a Tuple observation: several leaves
    assert build(lambda: gym.make("MountainCarContinuous-v0")) is None  # Box actions
    frames = spaces.Box(0, 255, (MAX_ROW_BYTES + 1,), np.uint8)  # large rows are written env by env
    assert build(lambda: _ConstantEnv(frames)) is None
    assert build(lambda: _ConstantEnv(spaces.Box(0, 255, (MAX_ROW_BYTES,), np.uint8))) is not None

    class Shaped(GymnasiumEmulator):
        def step(self, actions: np.ndarray) -> tuple:
            return super().step(actions)

    assert build(lambda: Shaped(gym.make("CartPole-v1"))) is None  # its own step code must run
    # Every method whose work the batch does itself keeps a subclass that overrides it out of the batch.
    for hook in ("_native_action", "_observe", "_end_episode", "_write", "_unmask", "_strip_mask"):
        base = getattr(GymnasiumEmulator, hook)
        hooked = type("Hooked", (GymnasiumEmulator,), {hook: lambda self, *args, base=base: base(self, *args)})
        assert build(lambda hooked=hooked: hooked(gym.make("CartPole-v1"))) is None, hook


def test_an_out_of_range_action_steps_no_env_and_names_the_env() -> None:
    envs = [emulate(gym.make("CartPole-v1")) for _ in range(3)]
    batch, arrays = _batch(envs)
    before = arrays["obs"].copy()
    with pytest.raises(APIUsageError, match=r"flat action 2 of env 1 .*Discrete\(2\).*0\.\.1"):
        batch.step(np.array([0, 2, 1]))
    np.testing.assert_array_equal(arrays["obs"], before)
    batch.flush()
    assert [env._length for env in envs] == [0, 0, 0]


class _BadShapeAt3(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, bad: bool) -> None:
        self.bad = bad

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        obs = np.zeros(5 if self.bad and self.t == 3 else 4, np.float32)
        return obs, 0.0, False, False, {}


def test_an_observation_of_the_wrong_shape_is_named_with_its_env_as_a_lone_emulator_names_it() -> None:
    alone = GymnasiumEmulator(_BadShapeAt3(bad=True))
    alone.reset(seed=0)
    envs = [GymnasiumEmulator(_BadShapeAt3(bad=i == 1)) for i in range(3)]
    batch = _batch(envs)[0]
    for _ in range(2):
        batch.step(np.zeros(3, np.int64))
        alone.step(np.zeros(1, np.int64))
    with pytest.raises(SpaceError) as theirs:
        alone.step(np.zeros(1, np.int64))
    with pytest.raises(SpaceError) as ours:
        batch.step(np.zeros(3, np.int64))
    lone = str(theirs.value)
    assert lone.startswith("_BadShapeAt3 returned an observation that does not fit its observation space")
    assert "shape (5,)" in lone and "Fix the env" in lone
    assert str(ours.value) == lone.replace("_BadShapeAt3", "env 1 of this group (_BadShapeAt3)", 1)


class _BytesAfterReset(_ConstantEnv):
    """Box(uint8) rows; env ``bad`` sends bytes instead of an array from its second step."""

    def __init__(self, bad: bool) -> None:
        super().__init__(spaces.Box(0, 255, (4,), np.uint8))
        self.bad, self.t = bad, 0

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        obs = super().step(action)[0]
        return (bytes(4) if self.bad and self.t >= 2 else obs), 0.0, False, False, {}


def test_an_observation_that_is_not_an_array_is_named_with_or_without_the_native_copy(row_copy: str) -> None:
    batch = _batch([GymnasiumEmulator(_BytesAfterReset(bad=i == 2)) for i in range(3)])[0]
    batch.step(np.zeros(3, np.int64))
    with pytest.raises(SpaceError, match=r"^env 2 of this group \(_BytesAfterReset\) returned an observation"):
        batch.step(np.zeros(3, np.int64))


class _RewardOf(_ConstantEnv):
    def __init__(self, reward: object) -> None:
        super().__init__(spaces.Box(-1.0, 1.0, (2,), np.float32))
        self.reward = reward

    def step(self, action: Any) -> tuple[np.ndarray, object, bool, bool, dict]:
        return super().step(action)[0], self.reward, False, False, {}


@pytest.mark.parametrize("reward", [None, np.array([1.0, 2.0])], ids=["none", "vector"])
def test_a_reward_that_is_not_one_number_is_named_with_its_env(reward: object) -> None:
    envs = [GymnasiumEmulator(_RewardOf(1.0 if i != 2 else reward)) for i in range(3)]
    batch = _batch(envs)[0]
    with pytest.raises(EnvError, match=r"env 2 of this group \(_RewardOf\) returned the reward .* one real number"):
        batch.step(np.zeros(3, np.int64))


def test_a_batch_rebuilt_after_an_episode_end_clears_the_flags_like_the_emulators_would() -> None:
    """A group rebuilds its batch from its emulators (after a snapshot is restored, say): the flags of the
    episodes that ended on the last step must still be cleared on the next one."""
    batched = [GymnasiumEmulator(gym.make("CartPole-v1", max_episode_steps=3)) for _ in range(2)]
    alone = [GymnasiumEmulator(gym.make("CartPole-v1", max_episode_steps=3)) for _ in range(2)]
    arrays = _rows(batched)
    for i in range(2):
        batched[i].reset(seed=i)
        alone[i].reset(seed=i)
    batch = GymnasiumBatch.build(batched, arrays)
    assert batch is not None
    for step in range(7):
        if step % 3 == 0:  # every step after an episode end, and others
            batch.flush()
            batch = GymnasiumBatch.build(batched, arrays)
            assert batch is not None
        batch.step(np.zeros(2, np.int64))
        for i, env in enumerate(alone):
            _, _, terminals, truncations, _ = env.step(np.zeros(1, np.int64))
            assert (arrays["terminals"][i], arrays["truncations"][i]) == (terminals[0], truncations[0]), (step, i)


class _TerminalReward(_ConstantEnv):
    """Rewards 1.0, then a vector reward on the step that ends the episode."""

    def __init__(self) -> None:
        super().__init__(spaces.Box(-1.0, 1.0, (2,), np.float32))
        self.t = 0

    def step(self, action: Any) -> tuple[np.ndarray, object, bool, bool, dict]:
        self.t += 1
        reward = np.array([1.0, 2.0]) if self.t == 3 else 1.0
        return super().step(action)[0], reward, self.t == 3, False, {}


def test_a_bad_reward_on_the_step_that_ends_the_episode_is_named_too() -> None:
    envs = [GymnasiumEmulator(_TerminalReward()) for _ in range(2)]
    batch = _batch(envs)[0]
    for _ in range(2):
        batch.step(np.zeros(2, np.int64))
    with pytest.raises(EnvError, match=r"env 0 of this group \(_TerminalReward\) returned the reward array"):
        batch.step(np.zeros(2, np.int64))


class _Tagged(GymnasiumEmulator):
    """Adds a tag to the info of every finished episode: code the batch must not bypass."""

    def _end_episode(self, obs: Any, terminated: bool, truncated: bool, info: dict[str, Any]) -> dict[str, Any]:
        return {**super()._end_episode(obs, terminated, truncated, info), "tag": 1}


def test_subclasses_that_end_episodes_or_write_their_own_way_get_no_batch() -> None:
    envs = [_Tagged(gym.make("CartPole-v1", max_episode_steps=2)) for _ in range(2)]
    assert _try_batch(envs)[0] is None

    class Stripped(GymnasiumEmulator):
        def _strip_mask(self, obs: Any) -> Any:
            return np.clip(obs, -0.01, 0.01)

    envs = [Stripped(gym.make("CartPole-v1")) for _ in range(2)]
    assert _try_batch(envs)[0] is None


def test_rows_that_are_not_contiguous_get_no_batch() -> None:
    envs = [GymnasiumEmulator(gym.make("CartPole-v1")) for _ in range(3)]
    spec = envs[0].buffer_spec()
    arrays = {name: np.zeros((3, *shape[1:]), dtype) for name, (shape, dtype) in spec.items()}
    arrays["obs"] = np.zeros((3, 8), np.float32)[:, :4]  # every other 4 floats
    for i, env in enumerate(envs):
        env.attach(Buffers(**{name: array[i : i + 1] for name, array in arrays.items()}))
        env.reset(seed=i)
    assert GymnasiumBatch.build(envs, arrays) is None


def test_envs_with_different_action_mask_keys_get_no_batch() -> None:
    envs = [GymnasiumEmulator(gym.make("CartPole-v1"), action_mask_key=key) for key in ("action_mask", "legal")]
    assert _try_batch(envs)[0] is None
    unmasked = [GymnasiumEmulator(gym.make("CartPole-v1"), action_mask_key=None) for _ in range(2)]
    assert _try_batch(unmasked)[0] is not None  # masks off everywhere: one kind

def test_keys_that_are_not_strings_are_compared_too() -> None:
    mixed = [GymnasiumEmulator(gym.make("CartPole-v1"), action_mask_key=key) for key in (None, 0)]
    assert _try_batch(mixed)[0] is None  # one env reads masks under key 0, the other reads none
    same = [GymnasiumEmulator(gym.make("CartPole-v1"), action_mask_key=0) for _ in range(2)]
    assert _try_batch(same)[0] is not None


def test_one_action_per_env_or_no_env_steps() -> None:
    envs = [emulate(gym.make("CartPole-v1")) for _ in range(3)]
    batch, arrays = _batch(envs)
    before = arrays["obs"].copy()
    for actions in (np.zeros(2, np.int64), np.zeros(4, np.int64)):
        with pytest.raises(APIUsageError, match=f"{len(actions)} actions for a group of 3 envs"):
            batch.step(actions)
    np.testing.assert_array_equal(arrays["obs"], before)
    batch.flush()
    assert [env._length for env in envs] == [0, 0, 0]


def test_rows_of_other_flag_arrays_get_no_batch() -> None:
    envs = [GymnasiumEmulator(gym.make("CartPole-v1")) for _ in range(2)]
    arrays = _rows(envs)
    for i, env in enumerate(envs):
        env.reset(seed=i)
    assert GymnasiumBatch.build(envs, {**arrays, "terminals": arrays["terminals"].copy()}) is None
    assert GymnasiumBatch.build(envs, arrays) is not None


class _Breaks(gym.Env):
    """Episodes of 3 steps whose reset info carries an action mask; at global step ``fail_at`` the env raises in
    ``step`` (``mode="step"``), returns an observation of the wrong shape (``"obs"``) or raises in the reset that
    ends that step's episode (``"reset"``)."""

    observation_space = spaces.Box(-1e3, 1e3, (3,), np.float32)
    action_space = spaces.Discrete(3)

    def __init__(self, fail_at: int | None = None, mode: str = "step") -> None:
        self.fail_at, self.mode, self.n = fail_at, mode, 0

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self.mode == "reset" and self.n == self.fail_at:
            raise RuntimeError("reset broke")
        self.t = 0
        return np.full(3, self.n, np.float32), {"action_mask": np.array([1, 0, 1], np.int8)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.n += 1
        self.t += 1
        if self.mode == "step" and self.n == self.fail_at:
            raise RuntimeError("step broke")
        shape = 5 if self.mode == "obs" and self.n == self.fail_at else 3
        return np.full(shape, self.n + int(action), np.float32), float(action), self.t == 3, False, {}


@pytest.mark.parametrize(("mode", "fail_at", "error"), [("step", 4, RuntimeError), ("obs", 4, SpaceError),
                                                        ("reset", 6, RuntimeError)])
def test_an_env_that_raises_leaves_every_env_as_stepping_one_by_one_would(mode: str, fail_at: int,
                                                                         error: type) -> None:
    # Env 2 of 4 breaks on a step that follows an episode end (flags up, masks from the reset info now stale).
    def make() -> list[GymnasiumEmulator]:
        return [GymnasiumEmulator(_Breaks(fail_at if i == 2 else None, mode)) for i in range(4)]

    batched, alone = make(), make()
    arrays, lone_arrays = _rows(batched), _rows(alone)
    for i in range(4):
        batched[i].reset(seed=i)
        alone[i].reset(seed=i)
    batch = GymnasiumBatch.build(batched, arrays)
    assert batch is not None
    actions = np.array([1, 2, 0, 1])
    for _ in range(fail_at - 1):
        batch.step(actions)
        for i, env in enumerate(alone):
            env.step(actions[i : i + 1])
    with pytest.raises(error, match=r"broke|shape"):
        batch.step(actions)
    for i, env in enumerate(alone):
        if i == 2:
            with pytest.raises(error, match=r"broke|shape"):
                env.step(actions[i : i + 1])
            break
        env.step(actions[i : i + 1])
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, lone_arrays[name], err_msg=name)
    if mode != "reset":
        assert arrays["terminals"][3]  # env 3 did not step: its last episode end still shows
    batch.flush()
    for mine, theirs in zip(batched, alone, strict=True):
        assert (mine._return, mine._length, mine._flags_up, mine._mask_set) == (
            theirs._return, theirs._length, theirs._flags_up, theirs._mask_set)
