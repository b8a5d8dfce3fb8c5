"""shoal.vector.to_sb3: Stable-Baselines3 and sb3-contrib algorithms train on shoal's backends."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from pettingzoo import ParallelEnv
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecCheckNan, VecEnvWrapper
from stable_baselines3.common.vec_env import VecEnv as SB3VecEnvBase

import shoal.vector
from shoal.emulation import unflatten
from shoal.envs.squad import SquadEnv
from shoal.errors import APIUsageError
from shoal.vector.sb3 import SB3VecEnv
from tests.vector import envs_for_tests as envs
from tests.vector.helpers import random_actions

pytestmark = pytest.mark.timeout(120)


def squad() -> SquadEnv:
    """3 agents that die on a wrong move: dead slots stay padded until their env's episode ends."""
    return SquadEnv(num_agents=3, num_cues=2, max_steps=6)


def spread() -> Any:
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(N=3, max_cycles=25, continuous_actions=False)


def pendulum() -> gym.Env:
    return gym.make("Pendulum-v1")


# ---- the API ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_is_an_sb3_vec_env_with_one_index_per_agent_slot(backend: str) -> None:
    vec = shoal.vector.make(squad, num_envs=2, backend=backend, num_workers=2)
    with shoal.vector.to_sb3(vec) as env:
        assert isinstance(env, SB3VecEnvBase)
        assert env.num_envs == 6
        assert env.observation_space == vec.single_observation_space
        assert env.action_space == gym.spaces.Discrete(2)
        assert env.seed(7) == [7, 7, 7, 8, 8, 8]
        obs = env.reset()
        assert obs.shape == (6, 3) and obs.dtype == np.float32
        with shoal.vector.make(squad, num_envs=2, seed=7) as twin:
            np.testing.assert_array_equal(obs, twin.reset()[0])  # env e seeded with 7 + e
            env.seed(8)
            np.testing.assert_array_equal(env.reset(), twin.reset(seed=8)[0])
    assert vec.closed


def test_refuses_partial_batches_closed_envs_and_non_vector_envs() -> None:
    vec = shoal.vector.make(envs.cartpole, num_envs=4, num_workers=2, batch_size=2)
    with pytest.raises(APIUsageError, match="batch_size=2"):
        shoal.vector.to_sb3(vec)
    vec.close()
    with pytest.raises(APIUsageError, match="closed"):
        shoal.vector.to_sb3(vec)
    with pytest.raises(APIUsageError, match="CartPoleEnv"):
        shoal.vector.to_sb3(gym.make("CartPole-v1").unwrapped)


# ---- parity with the shoal vector env --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
@pytest.mark.parametrize("env_fn", [envs.cartpole, squad, envs.tictactoe], ids=["cartpole", "squad", "tictactoe"])
def test_obs_rewards_dones_equal_the_shoal_vector_env(backend: str, env_fn: Any) -> None:
    twin = shoal.vector.make(env_fn, num_envs=4, backend=backend, num_workers=2, seed=3)
    env = shoal.vector.to_sb3(shoal.vector.make(env_fn, num_envs=4, backend=backend, num_workers=2, seed=3))
    try:
        ref_obs, _ = twin.reset()
        obs = env.reset()
        np.testing.assert_array_equal(obs, ref_obs)
        rng = np.random.default_rng(0)
        ended = padding_ends = 0
        for _ in range(120):
            actions = random_actions(env.action_space, env.num_envs, rng, twin.action_masks)
            was_live = twin.masks.copy()
            ref_obs, ref_rewards, terminals, truncations, ref_infos = twin.step(actions)
            obs, rewards, dones, infos = env.step(actions)
            np.testing.assert_array_equal(obs, ref_obs)
            np.testing.assert_array_equal(rewards, ref_rewards)
            for k, info in enumerate(infos):
                ref = ref_infos[k]
                if "final_observation" in ref:  # a real episode end
                    ended += 1
                    assert dones[k] == (terminals[k] or truncations[k]) and dones[k]
                    np.testing.assert_array_equal(info["terminal_observation"], ref["final_observation"])
                    assert info["TimeLimit.truncated"] == (truncations[k] and not terminals[k])
                    assert info["episode"]["r"] == ref["episode"]["return"]
                    assert info["episode"]["l"] == ref["episode"]["length"]
                elif "reset_info" in ref and not was_live[k]:  # a padding segment ends with its env's episode
                    padding_ends += 1
                    assert dones[k] and not terminals[k] and not truncations[k]
                    np.testing.assert_array_equal(info["terminal_observation"], np.zeros_like(obs[k]))
                    assert info["TimeLimit.truncated"] is False and "episode" not in info
                else:
                    assert not dones[k] and not terminals[k] and not truncations[k]
        assert ended > 0
        if env_fn is squad:
            assert padding_ends > 0
    finally:
        twin.close()
        env.close()


def test_mixed_dtype_rows_become_float_columns_of_every_leaf() -> None:
    twin = shoal.vector.make(envs.nested, num_envs=2, seed=1)
    assert twin.obs_layout.is_bytes
    with twin, shoal.vector.to_sb3(shoal.vector.make(envs.nested, num_envs=2, seed=1)) as env:
        width = sum(leaf.size for leaf in twin.obs_layout.leaves)
        assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (width,), np.float32)
        twin.reset()
        env.reset()
        rng = np.random.default_rng(0)
        for _ in range(10):
            actions = random_actions(env.action_space, 2, rng)
            ref_obs = twin.step(actions)[0]
            obs = env.step(actions)[0]
            views = unflatten(twin.obs_layout, ref_obs)
            columns = []
            for leaf in twin.obs_layout.leaves:
                value = views
                for key in leaf.path:
                    value = value[key]
                columns.append(np.asarray(value, np.float32).reshape(2, -1))
            np.testing.assert_array_equal(obs, np.concatenate(columns, axis=1))


class _ShiftedChoices(gym.Env):
    """A Dict observation whose Discrete and MultiDiscrete leaves start above 0."""

    observation_space = gym.spaces.Dict({"level": gym.spaces.Discrete(3, start=5),
                                         "dice": gym.spaces.MultiDiscrete([6, 6], start=[1, 1]),
                                         "pos": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def test_leaves_give_cnn_policy_the_image_of_a_gymnasium_env() -> None:
    def car() -> gym.Env:
        return gym.make("CarRacing-v3")

    raw = car()
    with shoal.vector.to_sb3(shoal.vector.make(car, num_envs=1, seed=3), observations="leaves") as env:
        assert env.observation_space == raw.observation_space  # Box(0, 255, (96, 96, 3), uint8)
        obs = env.reset()
        np.testing.assert_array_equal(obs[0], raw.reset(seed=3)[0])
        actions = np.array([[0.0, 0.5, 0.0]], np.float32)
        obs = env.step(actions)[0]
        np.testing.assert_array_equal(obs[0], raw.step(actions[0])[0])
        model = PPO("CnnPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0)
        assert type(model.policy.features_extractor).__name__ == "NatureCNN"
        model.learn(32)
    raw.close()


def test_leaves_give_multi_input_policy_one_dict_key_per_leaf() -> None:
    twin = shoal.vector.make(envs.nested, num_envs=2, seed=1)
    with twin, shoal.vector.to_sb3(shoal.vector.make(envs.nested, num_envs=2, seed=1), observations="leaves") as env:
        keys = ["/".join(map(str, leaf.path)) for leaf in twin.obs_layout.leaves]
        assert list(env.observation_space.spaces) == keys
        assert env.observation_space["agent/position"] == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        twin.reset()
        env.reset()
        rng = np.random.default_rng(0)
        for _ in range(10):
            actions = random_actions(env.action_space, 2, rng)
            views = unflatten(twin.obs_layout, twin.step(actions)[0])
            obs = env.step(actions)[0]
            for name, leaf in zip(keys, twin.obs_layout.leaves, strict=True):
                value = views
                for key in leaf.path:
                    value = value[key]
                np.testing.assert_array_equal(obs[name], value)
            assert all({key: value[k] for key, value in obs.items()} in env.observation_space for k in range(2))
        model = PPO("MultiInputPolicy", env, n_steps=16, batch_size=32, n_epochs=1, seed=0)
        model.learn(64)


def test_leaves_shift_discrete_starts_to_zero_for_sb3() -> None:
    with shoal.vector.to_sb3(shoal.vector.make(_ShiftedChoices, num_envs=3, seed=0), observations="leaves") as env:
        assert env.observation_space["level"] == gym.spaces.Discrete(3)
        assert env.observation_space["dice"] == gym.spaces.MultiDiscrete([6, 6])
        for _ in range(5):
            obs = env.reset()
            for k in range(3):
                assert {key: value[k] for key, value in obs.items()} in env.observation_space
        PPO("MultiInputPolicy", env, n_steps=8, batch_size=24, n_epochs=1, seed=0).learn(24)


class _DyingShifted(ParallelEnv):
    """Two agents observing a Discrete(3, start=5) leaf; agent "b" dies after its first step."""

    metadata = {"name": "dying_shifted"}
    possible_agents = ["a", "b"]

    def observation_space(self, agent: str) -> gym.spaces.Space:
        return gym.spaces.Dict({"level": gym.spaces.Discrete(3, start=5), "pos": gym.spaces.Box(-1, 1, (2,))})

    def action_space(self, agent: str) -> gym.spaces.Space:
        return gym.spaces.Discrete(2)

    def _obs(self) -> dict[str, Any]:
        return {agent: {"level": 6, "pos": np.zeros(2, np.float32)} for agent in self.agents}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents, self.t = list(self.possible_agents), 0
        return self._obs(), {agent: {} for agent in self.agents}

    def step(self, actions: dict) -> tuple[dict, ...]:
        self.t += 1
        ended = {agent: agent == "b" or self.t >= 4 for agent in self.agents}
        rewards = {agent: 0.0 for agent in self.agents}
        truncations = {agent: False for agent in self.agents}
        infos = {agent: {} for agent in self.agents}
        obs = self._obs()
        self.agents = [agent for agent in self.agents if not ended[agent]]
        return obs, rewards, ended, truncations, infos


def test_leaves_give_padded_slots_zeros_not_a_shifted_start() -> None:
    with shoal.vector.to_sb3(shoal.vector.make(_DyingShifted, num_envs=2), observations="leaves") as env:
        env.reset()
        obs = env.step(np.zeros(4, np.int64))[0]  # "b" died: its slots (1, 3) are padding from now on
        np.testing.assert_array_equal(obs["level"], [1, 0, 1, 0])
        assert all({key: value[k] for key, value in obs.items()} in env.observation_space for k in range(4))
        PPO("MultiInputPolicy", env, n_steps=8, batch_size=32, n_epochs=1, seed=0).learn(32)


def test_leaves_refuse_a_text_leaf_and_name_it() -> None:
    from shoal.train.runs.resolve import resolve_env

    # shoal's resolver stores MiniGrid's mission as a Text leaf
    grid = shoal.vector.make(resolve_env("minigrid:MiniGrid-Empty-5x5-v0", {}), num_envs=1)
    with pytest.raises(APIUsageError, match=r"mission.*observations='flat'"):
        shoal.vector.to_sb3(grid, observations="leaves")
    grid.close()
    with pytest.raises(APIUsageError, match="choose 'flat'"):
        shoal.vector.to_sb3(shoal.vector.make(pendulum, num_envs=1), observations="dict")


# ---- training ------------------------------------------------------------------------------------------------


def test_ppo_learns_cartpole_through_the_bridge() -> None:
    env = VecCheckNan(shoal.vector.to_sb3(shoal.vector.make(envs.cartpole, num_envs=8, seed=0)), raise_exception=True)
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=256, seed=0)
    model.learn(16_384)  # 8 updates; evaluates to about 440 with seed 0
    env.close()
    # Evaluated on fresh envs, with Gymnasium's own episode bookkeeping (Monitor) underneath.
    with shoal.vector.to_sb3(shoal.vector.make(lambda: Monitor(gym.make("CartPole-v1")), num_envs=4, seed=100)) as ev:
        assert ev.env_is_wrapped(Monitor) == [True] * 4
        mean, _ = evaluate_policy(model, ev, n_eval_episodes=20, deterministic=True)
    assert mean >= 150, mean  # a random policy returns about 22


def test_ppo_learns_a_pettingzoo_game_with_dying_agents_on_multiprocessing() -> None:
    # Every wrong move kills the agent: dead slots stay padded until their env's episode ends.
    with shoal.vector.to_sb3(shoal.vector.make(squad, num_envs=4, backend="multiprocessing", num_workers=2)) as env:
        model = PPO("MlpPolicy", env, n_steps=64, batch_size=256, seed=0)
        model.learn(15_000)
    returns = [episode["r"] for episode in model.ep_info_buffer]
    assert len(returns) == 100  # real agent episodes only (padding ends carry no "episode")
    assert np.mean(returns) >= 2.5, np.mean(returns)  # random play returns about 0; a perfect agent 6


def test_ppo_and_a2c_run_on_simple_spread() -> None:
    for algo, backend in ((PPO, "multiprocessing"), (A2C, "serial")):
        with shoal.vector.to_sb3(shoal.vector.make(spread, num_envs=2, backend=backend, num_workers=2)) as env:
            model = algo("MlpPolicy", env, n_steps=128 if algo is PPO else 5, seed=0)
            model.learn(1_600)
        assert model.num_timesteps >= 1_600
        lengths = {episode["l"] for episode in model.ep_info_buffer}
        assert lengths == {25}, lengths  # max_cycles, per agent


def test_sac_runs_on_a_continuous_env() -> None:
    with shoal.vector.to_sb3(shoal.vector.make(pendulum, num_envs=2)) as env:
        assert not env.has_attr("action_masks")
        model = SAC("MlpPolicy", env, learning_starts=100, batch_size=64, seed=0)
        model.learn(600)
        with pytest.raises(NotImplementedError, match="continuous"):
            env.action_masks()
    assert model.replay_buffer.size() == 300  # 600 steps over 2 envs
    assert {episode["l"] for episode in model.ep_info_buffer} == {200}


class _LegalityCheck(VecEnvWrapper):
    """Records, before every step, whether each live agent's action is legal under the env's own masks."""

    def __init__(self, venv: SB3VecEnv) -> None:
        super().__init__(venv)
        self.checked = 0
        self.illegal = 0

    def step_async(self, actions: np.ndarray) -> None:
        vec = self.venv.vec
        live = np.flatnonzero(vec.masks)
        self.checked += len(live)
        self.illegal += int((~vec.action_masks[live, actions[live]]).sum())
        self.venv.step_async(actions)

    def step_wait(self) -> Any:
        return self.venv.step_wait()

    def reset(self) -> np.ndarray:
        return self.venv.reset()


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_maskable_ppo_never_plays_an_illegal_move(backend: str) -> None:
    inner = shoal.vector.to_sb3(shoal.vector.make(envs.tictactoe, num_envs=8, backend=backend, num_workers=2))
    env = _LegalityCheck(inner)
    with inner:
        assert env.has_attr("action_masks")
        model = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=256, seed=0)
        model.learn(4_096)
        assert env.checked >= 4_096 // 2 and env.illegal == 0
        # An illegal move ends a tic-tac-toe game at once; a win takes 3 moves, so both players moved at least twice.
        assert min(e["l"] for e in model.ep_info_buffer) >= 2


def _first_seat_results(model: MaskablePPO | None, games: int = 200) -> np.ndarray:
    """Returns of the first player in ``games`` tic-tac-toe games: ``model`` (None: uniformly random legal moves)
    against an opponent playing uniformly random legal moves."""
    rng = np.random.default_rng(0)
    returns: list[float] = []
    with shoal.vector.make(envs.tictactoe, num_envs=20, seed=1) as vec:
        obs, _ = vec.reset()
        while len(returns) < games:
            legal = vec.action_masks.copy()
            actions = np.argmax(rng.random(legal.shape) * legal, axis=1)
            if model is not None:
                seat = np.arange(0, vec.num_agents, 2)
                actions[seat] = model.predict(obs[seat], deterministic=True, action_masks=legal[seat])[0]
                live = seat[vec.masks[seat]]
                assert legal[live, actions[live]].all()
            obs, _, _, _, infos = vec.step(actions)
            returns += [infos[k]["episode"]["return"] for k in range(0, vec.num_agents, 2) if "episode" in infos[k]]
    return np.array(returns[:games])


def test_maskable_ppo_self_play_beats_a_random_player() -> None:
    with shoal.vector.to_sb3(shoal.vector.make(envs.tictactoe, num_envs=8)) as env:
        model = MaskablePPO("MlpPolicy", env, n_steps=128, batch_size=256, ent_coef=0.01, seed=0)
        model.learn(10_240)
    random_wins = (_first_seat_results(None) > 0).mean()
    wins = (_first_seat_results(model) > 0).mean()
    assert random_wins < 0.65 and wins >= random_wins + 0.15, (wins, random_wins)  # measured: 0.875 vs 0.55


def test_padded_slots_give_maskable_ppo_no_policy_gradient() -> None:
    with shoal.vector.to_sb3(shoal.vector.make(envs.tictactoe, num_envs=2)) as env:
        env.reset()
        model = MaskablePPO("MlpPolicy", env, seed=0)
        masks = env.action_masks()
        padded = ~env.vec.masks
        assert padded.sum() == 2
        np.testing.assert_array_equal(masks[padded], np.eye(9, dtype=bool)[[0, 0]])
        np.testing.assert_array_equal(masks[~padded], env.vec.action_masks[~padded])
        assert env.env_method("action_masks", indices=[1])[0].tolist() == masks[1].tolist()
        obs = torch.as_tensor(env.reset(), dtype=torch.float32)
        _, log_prob, entropy = model.policy.evaluate_actions(obs, torch.zeros(4), action_masks=masks)
        log_prob[torch.as_tensor(padded)].sum().backward()
        assert all(p.grad is None or not p.grad.any() for p in model.policy.action_net.parameters())
        assert torch.all(log_prob[torch.as_tensor(padded)] == 0)
        assert torch.all(entropy[torch.as_tensor(padded)].abs() < 1e-6)


# ---- env access ------------------------------------------------------------------------------------------------


def test_serial_backend_reaches_the_envs() -> None:
    make = functools.partial(gym.make, "CartPole-v1", render_mode="rgb_array")
    with shoal.vector.to_sb3(shoal.vector.make(make, num_envs=2)) as env:
        env.reset()
        assert env.render_mode == "rgb_array"
        assert env.get_attr("spec")[0].id == "CartPole-v1"
        env.set_attr("gravity", 5.0, indices=1)
        assert env.get_attr("gravity") == [9.8, 5.0]
        assert env.env_method("get_wrapper_attr", "gravity", indices=[1]) == [5.0]
        assert env.env_is_wrapped(gym.wrappers.TimeLimit) == [True, True]
        assert env.env_is_wrapped(Monitor) == [True, True]  # the bridge reports Monitor's episode info itself
        image = env.render()
        assert image.dtype == np.uint8 and image.shape[2] == 3
        with pytest.raises(IndexError, match="index 2"):
            env.get_attr("gravity", indices=[2])
        with pytest.raises(NotImplementedError, match="options"):
            env.set_options({"low": 0.1})
        env.set_options(None)


def test_multiprocessing_backend_says_what_it_cannot_do() -> None:
    with shoal.vector.to_sb3(shoal.vector.make(envs.cartpole, num_envs=2, backend="multiprocessing")) as env:
        env.reset()
        assert env.render_mode is None and env.get_attr("render_mode") == [None, None]
        for call in (lambda: env.get_attr("gravity"), lambda: env.set_attr("gravity", 1.0),
                     lambda: env.env_method("reset"), env.get_images):
            with pytest.raises(NotImplementedError, match=r"'multiprocessing' backend .* backend='serial'"):
                call()
        assert not env.has_attr("gravity")


def test_sb3_evaluation_and_vec_monitor_work_off_the_serial_backend() -> None:
    # the bridge reports Monitor's episode info itself: SB3's helpers that ask for a Monitor run on any backend
    from stable_baselines3.common.vec_env import VecMonitor

    with shoal.vector.make(lambda: gym.make("CartPole-v1"), 2, backend="multiprocessing", num_workers=2) as vec:
        env = shoal.vector.to_sb3(vec)
        assert env.env_is_wrapped(Monitor) == [True, True] and env.env_is_wrapped(gym.Wrapper) == [False, False]
        model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, device="cpu")
        returns, lengths = evaluate_policy(model, env, n_eval_episodes=4, return_episode_rewards=True)
        assert len(returns) == 4 and all(r == n for r, n in zip(returns, lengths, strict=True))  # CartPole: 1/step
        VecMonitor(env)
