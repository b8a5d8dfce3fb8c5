"""GymnasiumEmulator in lock step with the raw env on real Gymnasium envs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import shoal.vector
from shoal.emulation import Buffers, GymnasiumEmulator, compile_layout, emulate, flatten, to_native
from shoal.errors import APIUsageError, EnvError, SpaceError
from tests.emulation.helpers import HybridActionEnv, assert_same_sample


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Blackjack-v1", "Taxi-v4", "FrozenLake-v1"])
def test_lock_step_with_raw_env(env_id: str, row_copy: str) -> None:
    raw = gym.make(env_id)
    emulated = emulate(gym.make(env_id))
    assert isinstance(emulated, GymnasiumEmulator) and emulated.num_agents == 1
    layout = compile_layout(raw.observation_space)
    rng = np.random.default_rng(0)

    raw_obs, raw_info = raw.reset(seed=11)
    obs, infos = emulated.reset(seed=11)
    assert_same_sample(raw.observation_space, raw_obs, to_native(layout, obs[0]))
    episode_return, episode_length, episodes = 0.0, 0, 0
    for _ in range(400):
        action = int(rng.integers(raw.action_space.n))
        raw_obs, reward, terminated, truncated, raw_info = raw.step(action)
        obs, rewards, terminals, truncations, infos = emulated.step(np.array([action]))
        episode_return += reward
        episode_length += 1
        assert rewards.dtype == np.float32 and rewards[0] == np.float32(reward)
        assert (terminals[0], truncations[0]) == (terminated, truncated)
        assert emulated.masks[0]
        if terminated or truncated:
            episodes += 1
            final = infos[0]["final_observation"]
            assert_same_sample(raw.observation_space, raw_obs, to_native(layout, final))
            assert infos[0]["episode"] == pytest.approx({"return": episode_return, "length": episode_length})
            episode_return, episode_length = 0.0, 0
            raw_obs, raw_info = raw.reset()
        assert_same_sample(raw.observation_space, raw_obs, to_native(layout, obs[0]))
        if "action_mask" in raw_info:
            np.testing.assert_array_equal(emulated.action_masks[0], raw_info["action_mask"].astype(bool))
    assert episodes > 0


def test_taxi_action_masks_come_from_infos() -> None:
    env = emulate(gym.make("Taxi-v4"))
    _, infos = env.reset(seed=3)
    assert env.action_masks.shape == (1, 6)
    np.testing.assert_array_equal(env.action_masks[0], infos[0]["action_mask"].astype(bool))
    assert not env.action_masks[0].all(), "Taxi forbids some moves at every start state"


class _MaskOnOddSteps(gym.Env):
    """Box observations; a legal-action mask in ``info`` on odd steps only (all actions legal on the others)."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(3)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        info = {"action_mask": np.array([1, 0, self.t % 3 == 1], np.int8)} if self.t % 2 else {}
        return np.full(2, self.t / 10, np.float32), 0.0, False, self.t == 7, info


def test_every_action_is_legal_when_the_env_gives_no_mask() -> None:
    env = emulate(gym.make("CartPole-v1"))
    env.reset(seed=0)
    assert env.action_masks.tolist() == [[True, True]]
    env.step(np.array([1]))
    assert env.action_masks.tolist() == [[True, True]]


def test_a_step_without_a_mask_in_info_makes_every_action_legal_again() -> None:
    env = emulate(_MaskOnOddSteps())
    env.reset(seed=0)
    for t in range(1, 15):  # the episode truncates at t=7 and restarts: t % 7 counts its steps
        obs = env.step(np.array([0]))[0]
        k = t % 7
        expected = [True, True, True] if k % 2 == 0 else [True, False, k % 3 == 1]
        assert env.action_masks[0].tolist() == expected, t
        np.testing.assert_array_equal(obs[0], np.full(2, k / 10, np.float32))


class _FixedReward(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, reward: object) -> None:
        self.reward = reward

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(2, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, object, bool, bool, dict]:
        return np.zeros(2, np.float32), self.reward, False, False, {}


@pytest.mark.parametrize("reward", [None, "3", np.array([1.0, 2.0])], ids=["none", "str", "vector"])
def test_a_reward_that_is_not_one_number_is_named(reward: object) -> None:
    env = emulate(_FixedReward(reward))
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"_FixedReward returned the reward .* must be one real number"):
        env.step(np.array([0]))


@pytest.mark.parametrize("reward", [np.array(2.5), np.float32(1.5), np.int8(-3), True, 7])
def test_numeric_rewards_of_any_kind_are_kept(reward: object) -> None:
    env = emulate(_FixedReward(reward))
    env.reset(seed=0)
    for _ in range(2):
        rewards = env.step(np.array([0]))[1]
    assert rewards[0] == np.float32(float(reward)) and env._return == 2 * float(reward)


def test_seeds_are_honoured() -> None:
    a, b = emulate(gym.make("CartPole-v1")), emulate(gym.make("CartPole-v1"))
    np.testing.assert_array_equal(a.reset(seed=5)[0], b.reset(seed=5)[0])
    assert not np.array_equal(a.reset(seed=5)[0], b.reset(seed=6)[0])


class NestedDictEnv(gym.Env):
    """A nested Dict observation with an action mask and a hybrid Dict action."""

    def __init__(self, bad_first_obs: bool = False) -> None:
        self.observation_space = spaces.Dict(
            {
                "pos": spaces.Box(-1, 1, (2,), np.float32),
                "inv": spaces.Tuple((spaces.Discrete(3), spaces.MultiBinary(2))),
                "action_mask": spaces.MultiBinary(4),
            }
        )
        self.action_space = spaces.Dict({"move": spaces.Discrete(4), "aim": spaces.Box(-1, 1, (1,), np.float32)})
        self.bad_first_obs = bad_first_obs
        self.received: list = []

    def _obs(self, t: int) -> dict:
        pos = np.array([5.0, 0.0] if self.bad_first_obs else [t / 10, -t / 10], np.float32)
        return {"pos": pos, "inv": (t % 3, np.array([t % 2, 1], np.int8)),
                "action_mask": np.array([1, t % 2, 1, 0], np.int8)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(0), {}

    def step(self, action):
        self.received.append(action)
        self.t += 1
        return self._obs(self.t), 1.0, False, self.t >= 3, {"t": self.t}


def test_nested_dict_env_strips_the_mask_and_converts_hybrid_actions() -> None:
    env = emulate(NestedDictEnv())
    assert env.action_layout.kind == "hybrid"
    obs, _ = env.reset(seed=0)
    assert "action_mask" not in env.obs_layout.space.spaces
    np.testing.assert_array_equal(env.action_masks[0], [True, False, True, False])
    env.step(np.array([[2, 0.5]], np.float32))
    action = env.env.unwrapped.received[-1]
    assert int(action["move"]) == 2 and action["aim"].dtype == np.float32 and action["aim"][0] == 0.5
    env.step(np.array([[1, 0.0]], np.float32))
    _, _, _, truncations, infos = env.step(np.array([[0, 0.0]], np.float32))
    assert truncations[0] and infos[0]["episode"] == {"return": 3.0, "length": 3}
    final = to_native(env.obs_layout, infos[0]["final_observation"])
    np.testing.assert_array_equal(final["pos"], np.array([0.3, -0.3], np.float32))
    expected_first = {k: v for k, v in NestedDictEnv()._obs(0).items() if k != "action_mask"}
    np.testing.assert_array_equal(obs[0], flatten(env.obs_layout, expected_first))


def test_lifecycle_and_action_errors() -> None:
    env = emulate(gym.make("CartPole-v1"))
    with pytest.raises(APIUsageError, match=r"before reset\(\)"):
        env.step(np.array([0]))
    env.reset(seed=0)
    with pytest.raises(APIUsageError, match="shape"):
        env.step(np.array([0, 1, 0]))
    with pytest.raises(APIUsageError, match="integer"):
        env.step(np.array([0.5]))
    for bad in ([2], [3], [-1], [-3], [1 << 40]):  # past the end, negative, far outside
        with pytest.raises(APIUsageError, match=r"slot 0.*outside Discrete\(2\)"):
            env.step(np.array(bad))
    with pytest.raises(APIUsageError, match="integer"):
        env.step(np.array([1.0]))
    with pytest.raises(APIUsageError, match="shape"):
        env.step(np.array([[1]]))
    env.close()
    with pytest.raises(APIUsageError, match=r"after close\(\)"):
        env.step(np.array([0]))
    env.close()  # idempotent
    with pytest.raises(APIUsageError, match="max_agents"):
        emulate(gym.make("CartPole-v1"), max_agents=4)
    with pytest.raises(APIUsageError, match="cannot emulate"):
        emulate(object())


def test_first_observation_outside_its_space_is_reported() -> None:
    with pytest.raises(EnvError, match=r"obs\['pos'\].*outside"):
        emulate(NestedDictEnv(bad_first_obs=True)).reset(seed=0)


def test_emulator_writes_into_buffers_it_is_handed() -> None:
    env = emulate(gym.make("CartPole-v1"))
    spec = env.buffer_spec()
    from shoal.emulation import Buffers

    big = {name: np.zeros((3, *shape), dtype) for name, (shape, dtype) in spec.items()}
    env.attach(Buffers(**{name: array[1] for name, array in big.items()}))
    obs, _ = env.reset(seed=0)
    assert np.shares_memory(obs, big["obs"]) and big["obs"][1].any() and not big["obs"][0].any()
    assert big["masks"][1].all()
    with pytest.raises(APIUsageError, match="buffer 'obs'"):
        env.attach(Buffers(**{**{n: a[1] for n, a in big.items()}, "obs": np.zeros((1, 5), np.float32)}))


def test_discrete_start_flags_and_episode_boundaries_match_the_raw_env() -> None:
    """A Discrete space with a non-zero start gets its offset back; flags are raised for one step only."""
    space = gym.spaces.Discrete(3, start=-1)
    raw = gym.wrappers.TimeLimit(_ChoiceEcho(space), max_episode_steps=3)
    env = emulate(gym.wrappers.TimeLimit(_ChoiceEcho(space), max_episode_steps=3))
    env.reset(seed=0)
    raw.reset(seed=0)
    for t, flat in enumerate([0, 2, 1, 1, 0, 2, 2]):
        obs, rewards, terminals, truncations, infos = env.step(np.array([flat]))
        raw_obs, raw_reward, _, raw_truncated, _ = raw.step(flat - 1)
        assert rewards[0] == raw_reward == flat - 1
        assert bool(truncations[0]) == raw_truncated == (t % 3 == 2)
        assert not terminals[0]
        if raw_truncated:
            assert infos[0]["final_observation"][0] == flat - 1
            raw_obs, _ = raw.reset()
        np.testing.assert_array_equal(obs[0], raw_obs)


class _ChoiceEcho(gym.Env):
    """Observes and rewards the last action taken (0 after a reset)."""

    def __init__(self, space: gym.spaces.Discrete) -> None:
        self.action_space = space
        self.observation_space = gym.spaces.Box(-5, 5, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action: np.integer) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self.action_space.contains(action), action
        return np.full(1, action, np.float32), float(action), False, False, {}


def test_an_envs_own_episode_statistics_are_kept() -> None:
    """gymnasium's RecordEpisodeStatistics reports {"r", "l", "t"} under "episode": shoal adds to it, drops nothing."""
    env = emulate(gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1")))
    env.reset(seed=0)
    ends = 0
    while ends < 3:
        infos = env.step(np.array([0]))[4]
        episode = infos[0].get("episode")
        if episode is not None:
            ends += 1
            assert set(episode) == {"r", "l", "t", "return", "length"}
            assert episode["return"] == float(episode["r"]) and episode["length"] == int(episode["l"])


@pytest.mark.parametrize("theirs", [7, {"return": -1.0}], ids=["not-a-dict", "same-keys"])
def test_an_envs_episode_value_that_cannot_be_merged_moves_to_env_episode(theirs: object) -> None:
    from shoal.emulation.base import add_episode

    info = {"episode": theirs, "other": 1}
    add_episode(info, {"return": 2.0, "length": 3})
    assert info == {"episode": {"return": 2.0, "length": 3}, "env_episode": theirs, "other": 1}
    info = {}
    add_episode(info, {"return": 2.0, "length": 3})
    assert info == {"episode": {"return": 2.0, "length": 3}}


def test_a_pickled_emulator_continues_exactly_like_the_original() -> None:
    import pickle

    env = emulate(gym.make("CartPole-v1"))
    env.reset(seed=3)
    for _ in range(5):
        env.step(np.array([1]))
    copy_ = pickle.loads(pickle.dumps(env))
    rng = np.random.default_rng(0)
    for _ in range(60):  # crosses episode ends
        action = np.array([rng.integers(2)])
        mine, theirs = env.step(action), copy_.step(action)
        for a, b in zip(mine[:4], theirs[:4], strict=True):
            np.testing.assert_array_equal(a, b)
        assert mine[4][0].keys() == theirs[4][0].keys()
    assert copy_.obs_layout.flat_size == 4 and copy_.buffers.obs is not env.buffers.obs


class _LooseTypes(gym.Env):
    """Declares float32 observations but returns float64 ones, and rewards as numpy float32 (both common)."""

    observation_space = gym.spaces.Box(-10, 10, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action: np.integer) -> tuple[np.ndarray, np.float32, bool, bool, dict]:
        self.t += 1
        return np.full(3, self.t / 3, np.float64), np.float32(0.5 * self.t), False, self.t == 4, {}


def test_loosely_typed_observations_and_rewards_are_converted(row_copy: str) -> None:
    env = emulate(_LooseTypes(), check_observations=False)
    env.reset(seed=0)
    for t in range(1, 4):
        obs, rewards, _, _, _ = env.step(np.array([1]))
        np.testing.assert_array_equal(obs[0], np.full(3, t / 3, np.float32))
        assert rewards.dtype == np.float32 and rewards[0] == np.float32(0.5 * t)
    infos = env.step(np.array([0]))[4]
    assert infos[0]["episode"] == {"return": 5.0, "length": 4}


class _ResetDrift(gym.Env):
    """float32 observations, except that resets after the first return a list of floats, then a float64 array,
    then (with ``bad=True``) an array of the wrong length; 2-step episodes."""

    observation_space = gym.spaces.Box(-10, 10, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, bad: bool = False) -> None:
        self.resets, self.bad = 0, bad

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t, self.resets = 0, self.resets + 1
        value = self.resets + 0.25
        if self.resets == 2:
            return [value] * 3, {}
        if self.resets == 3:
            return np.full(3, value, np.float64), {}
        if self.resets == 4 and self.bad:
            return np.full(5, value, np.float32), {}
        return np.full(3, value, np.float32), {}

    def step(self, action: np.integer) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return np.full(3, -self.t, np.float32), 1.0, self.t == 2, False, {}


def test_auto_reset_observations_of_another_type_are_converted_and_a_wrong_shape_is_named(row_copy: str) -> None:
    env = emulate(_ResetDrift(), check_observations=False)
    env.reset(seed=0)
    for episode in range(2, 6):
        obs = env.step(np.array([0]))[0]
        np.testing.assert_array_equal(obs[0], np.full(3, -1, np.float32))
        obs, _, terminals, _, infos = env.step(np.array([1]))
        assert terminals[0] and infos[0]["episode"] == {"return": 2.0, "length": 2}
        np.testing.assert_array_equal(infos[0]["final_observation"], np.full(3, -2, np.float32))
        np.testing.assert_array_equal(obs[0], np.full(3, episode + 0.25, np.float32))
    broken = emulate(_ResetDrift(bad=True), check_observations=False)
    broken.reset(seed=0)
    for _ in range(4):
        broken.step(np.array([0]))
    broken.step(np.array([0]))
    with pytest.raises(SpaceError, match=r"shape \(5,\)"):
        broken.step(np.array([0]))


class _WrongShapeAt(gym.Env):
    """2-step episodes of Box(3) observations; the step ``at`` returns 5 entries instead."""

    observation_space = gym.spaces.Box(-10, 10, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, at: int) -> None:
        self.at, self.n = at, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action: np.integer) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t, self.n = self.t + 1, self.n + 1
        return np.zeros(5 if self.n == self.at else 3, np.float32), 1.0, self.t == 2, False, {}


@pytest.mark.parametrize("at", [3, 4], ids=["mid_episode", "final"])
def test_an_observation_that_does_not_fit_names_the_env_and_the_fix(at: int) -> None:
    env = emulate(_WrongShapeAt(at))
    env.reset(seed=0)
    for _ in range(at - 1):
        env.step(np.array([0]))
    with pytest.raises(SpaceError, match=r"^_WrongShapeAt returned an observation that does not fit its observation "
                                         r"space: value at obs \(shape \(5,\).*Fix the env"):
        env.step(np.array([0]))


class _BytesObservations(gym.Env):
    """Box(uint8) observations, sent as bytes after the reset (not an array of the space)."""

    observation_space = gym.spaces.Box(0, 255, (4,), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.arange(4, dtype=np.uint8), {}

    def step(self, action: np.integer) -> tuple[bytes, float, bool, bool, dict]:
        return bytes([9, 8, 7, 6]), 0.0, False, False, {}


def test_an_observation_that_is_not_an_array_is_converted_by_numpy_with_or_without_the_native_copy(
        row_copy: str) -> None:
    env = emulate(_BytesObservations())
    env.reset(seed=0)
    with pytest.raises(SpaceError, match=r"^_BytesObservations returned an observation that does not fit"):
        env.step(np.array([0]))


def test_a_write_replaced_on_one_emulator_runs_on_auto_reset_too() -> None:
    env = emulate(gym.make("CartPole-v1", max_episode_steps=3))
    calls = []
    original = env._write

    def counting(obs: Any, info: dict) -> None:
        calls.append(obs)
        original(obs, info)

    env._write = counting
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.array([0]))
    assert len(calls) == 2  # the reset and the auto-reset


def test_read_only_buffers_are_refused_when_handed_over() -> None:
    env = emulate(gym.make("CartPole-v1"))
    buffers = Buffers.allocate(env.buffer_spec())
    buffers.obs.flags.writeable = False
    with pytest.raises(APIUsageError, match=r"buffer 'obs' is read-only"):
        env.attach(buffers)


class _Clipped(GymnasiumEmulator):
    """Strips its observations its own way: the final observation must come from that code."""

    def _strip_mask(self, obs: Any) -> Any:
        return np.clip(obs, -0.01, 0.01)


def test_final_observations_of_a_plain_row_are_exact_copies_and_a_subclass_still_strips_its_own_way() -> None:
    plain = GymnasiumEmulator(gym.make("CartPole-v1", max_episode_steps=2))
    clipped = _Clipped(gym.make("CartPole-v1", max_episode_steps=2))
    raw = gym.make("CartPole-v1", max_episode_steps=2)
    for env in (plain, clipped, raw):
        env.reset(seed=0)
    raw.step(np.int64(1))
    last = raw.step(np.int64(1))[0]
    for env in (plain, clipped):
        env.step(np.array([1]))
    info = plain.step(np.array([1]))[4][0]
    final = info["final_observation"]
    np.testing.assert_array_equal(final, last)
    assert final.dtype == np.float32 and final.shape == (4,) and final.base is None  # its own memory
    assert not np.shares_memory(final, plain.buffers.obs)
    clipped_final = clipped.step(np.array([1]))[4][0]["final_observation"]
    np.testing.assert_array_equal(clipped_final, np.clip(last, -0.01, 0.01))


class _Shifted(GymnasiumEmulator):
    """Shifts every observation its own _write stores (the first one of each episode)."""

    def _write(self, obs: Any, info: dict[str, Any]) -> None:
        super()._write(obs, info)
        self.buffers.obs[0] += 100.0


def test_a_subclass_write_runs_on_reset_and_auto_reset_alone_and_in_a_vector_env() -> None:
    env = _Shifted(gym.make("CartPole-v1", max_episode_steps=3))
    assert env.reset(seed=0)[0][0, 0] > 50  # CartPole's cart position is within +-4.8
    for t in range(1, 8):
        obs = env.step(np.array([0]))[0]
        assert (obs[0, 0] > 50) == (t % 3 == 0), t  # shifted exactly when a new episode starts
    with shoal.vector.make(lambda: _Shifted(gym.make("CartPole-v1", max_episode_steps=3)), 2) as vecenv:
        assert (vecenv.reset()[0][:, 0] > 50).all()
        for t in range(1, 8):
            obs = vecenv.step(np.zeros(2, np.int64))[0]
            assert ((obs[:, 0] > 50) == (t % 3 == 0)).all(), t


def test_a_subclass_defining_step_native_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Legacy defines step_native\(\).*never run.*Override step\(\)"):

        class Legacy(GymnasiumEmulator):
            def step_native(self, action: Any) -> dict[str, Any]:
                return {}


def test_hybrid_action_space_samples_are_accepted_by_step() -> None:
    # 1000 samples of the flat hybrid space, each stepped: the emulator's checks and the env's own
    # action_space.contains both accept them (the env raises otherwise).
    env = emulate(HybridActionEnv(length=100))
    assert env.action_layout.kind == "hybrid"
    space = env.single_action_space
    space.seed(0)
    env.reset(seed=0)
    for _ in range(1000):
        action = space.sample()
        assert space.contains(action)
        env.step(action[None])
    received = env.env.unwrapped.received
    assert len(received) == 1000
    assert {int(a["weapon"]) for a in received} == {1, 2, 3} and {int(a["power"][0]) for a in received} == {-1, 0, 1, 2}
    with shoal.vector.make(HybridActionEnv, 4, backend="serial") as vecenv:  # the vector envs' space too
        vecenv.single_action_space.seed(1)
        vecenv.reset()
        for _ in range(50):
            vecenv.step(np.stack([vecenv.single_action_space.sample() for _ in range(4)]))
        gym_vec = shoal.vector.GymnasiumVectorEnv(vecenv)
        gym_vec.action_space.seed(2)
        gym_vec.reset()
        for _ in range(50):
            gym_vec.step(gym_vec.action_space.sample())
