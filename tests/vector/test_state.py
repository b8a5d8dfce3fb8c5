"""VecEnv.get_state / set_state: a snapshot taken mid-episode continues bit for bit in a fresh vector env."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import shoal.vector
from shoal.errors import APIUsageError
from shoal.vector import VecEnv
from shoal.vector.snapshot import dumps_env, loads_env
from tests.vector import envs_for_tests as envs
from tests.vector.helpers import random_actions

pytestmark = pytest.mark.timeout(120)

FIELDS = ("obs", "rewards", "terminals", "truncations", "masks", "action_masks", "agent_types")


def connect_four() -> Any:
    """connect_four_v3, a turn-based AEC env with legal-action masks and longer games than tic-tac-toe."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pettingzoo.classic import connect_four_v3

    return connect_four_v3.env()


class UnpicklableEnv(gym.Env):
    """A Gymnasium env holding a lock, so it cannot be pickled."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, np.float32), 1.0, False, False, {}


def short_cartpole() -> gym.Env:
    """CartPole whose episodes are truncated after 5 steps: a snapshot after 5 steps holds ended episodes."""
    return gym.make("CartPole-v1", max_episode_steps=5)


def normalized_mountain_car() -> Any:
    """MountainCar (8-step episodes) under SuperSuit's normalize_obs_v0, as its preset ran it before obs_norm (runs
    saved then still resume with it): the wrapper holds a closure, which plain pickle refuses."""
    from shoal.wrappers import apply_wrappers

    env = gym.make("MountainCar-v0", max_episode_steps=8)
    return apply_wrappers(env, "normalize_obs_v0(env_min=-1.0, env_max=1.0)")


def stacked_mountain_car() -> Any:
    """MountainCar under SuperSuit wrappers built from classes defined inside functions (frame stacking, the
    maximum over the last observations)."""
    from shoal.wrappers import apply_wrappers

    env = gym.make("MountainCar-v0", max_episode_steps=8)
    return apply_wrappers(env, "frame_stack_v1(3),max_observation_v0(2)")


#: name -> (env constructor, num_envs, num_workers, steps before the snapshot, steps after it). The steps after
#: the snapshot are enough for episodes to end and auto-reset.
CASES: dict[str, tuple[Callable[[], Any], int, int, int, int]] = {
    "cartpole": (envs.cartpole, 4, 1, 7, 80),
    "cartpole_two_groups": (envs.cartpole, 4, 2, 5, 60),
    "cartpole_snapshot_right_after_episode_ends": (short_cartpole, 4, 2, 5, 12),
    "nested_dict": (envs.nested, 3, 1, 4, 30),
    "tictactoe_aec_action_masks": (envs.tictactoe, 4, 2, 3, 30),
    "connect_four_aec_action_masks": (connect_four, 2, 1, 5, 60),
    "supersuit_closure_wrapper": (normalized_mountain_car, 3, 1, 5, 30),
    "supersuit_local_class_wrappers": (stacked_mountain_car, 3, 1, 5, 30),
}


def results(vecenv: VecEnv) -> dict[str, Any]:
    """Copies of every array describing the last result (observations from a snapshot's buffer copies)."""
    state = vecenv.get_state()
    assert state is not None
    out: dict[str, Any] = {"obs": state["arrays"]["obs"], "masks": vecenv.masks.copy(),
                           "agent_types": vecenv.agent_types.copy()}
    out["action_masks"] = None if vecenv.action_masks is None else vecenv.action_masks.copy()
    return out


def actions_at(vecenv: VecEnv, step: int) -> np.ndarray:
    """The actions of every row at ``step``: a function of the step and the current legal actions only."""
    return random_actions(vecenv.single_action_space, vecenv.num_agents, np.random.default_rng([7, step]),
                          vecenv.action_masks)


def run(vecenv: VecEnv, first_step: int, steps: int) -> list[dict[str, Any]]:
    """Step ``steps`` times (actions of steps ``first_step``...); copies of every result and its episode infos."""
    record = []
    for step in range(first_step, first_step + steps):
        obs, rewards, terminals, truncations, infos = vecenv.step(actions_at(vecenv, step))
        episodes = [(row, info["episode"]["return"], info["episode"]["length"])
                    for row, info in enumerate(infos) if "episode" in info]
        record.append({"obs": obs.copy(), "rewards": rewards.copy(), "terminals": terminals.copy(),
                       "truncations": truncations.copy(), "masks": vecenv.masks.copy(),
                       "action_masks": None if vecenv.action_masks is None else vecenv.action_masks.copy(),
                       "agent_types": vecenv.agent_types.copy(), "episodes": episodes})
    return record


def assert_identical(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> None:
    assert len(expected) == len(actual)
    for step, (a, b) in enumerate(zip(expected, actual, strict=True)):
        assert a["episodes"] == b["episodes"], step
        for name in FIELDS:
            if a[name] is None:
                assert b[name] is None, (step, name)
                continue
            assert a[name].dtype == b[name].dtype, (step, name)
            assert a[name].tobytes() == b[name].tobytes(), (step, name)  # bit for bit, NaN-safe


@pytest.mark.parametrize("restore_before_reset", [False, True], ids=["after-reset", "before-reset"])
@pytest.mark.parametrize("case", list(CASES))
def test_snapshot_continues_bit_for_bit_in_a_fresh_vector_env(case: str, restore_before_reset: bool) -> None:
    env_fn, num_envs, num_workers, before, after = CASES[case]
    with shoal.vector.make(env_fn, num_envs, backend="serial", num_workers=num_workers, seed=3) as vecenv:
        vecenv.reset()
        run(vecenv, 0, before)
        at_snapshot = results(vecenv)
        state = vecenv.get_state()
        assert state is not None
        state = pickle.loads(pickle.dumps(state))  # what a checkpoint file holds
        expected = run(vecenv, before, after)
    assert any(r["episodes"] for r in expected), "the rollout should cross episode boundaries"

    with shoal.vector.make(env_fn, num_envs, backend="serial", num_workers=num_workers, seed=3) as fresh:
        if not restore_before_reset:
            fresh.reset()
        assert fresh.set_state(state) is True
        restored = results(fresh)
        for name in ("obs", "masks", "agent_types", "action_masks"):
            if at_snapshot[name] is None:
                assert restored[name] is None
            else:
                np.testing.assert_array_equal(restored[name], at_snapshot[name], err_msg=name)
        assert_identical(expected, run(fresh, before, after))


def test_the_snapshot_is_a_copy() -> None:
    with shoal.vector.make(envs.cartpole, 2, seed=0) as vecenv:
        vecenv.reset()
        state = vecenv.get_state()
        assert state is not None and set(state) == {"emulators", "arrays"}
        obs = state["arrays"]["obs"].copy()
        vecenv.step(np.ones(2, np.int64))
        np.testing.assert_array_equal(state["arrays"]["obs"], obs)
        # taking a snapshot does not disturb the env it was taken from
        again = vecenv.get_state()
        assert again is not None and not np.array_equal(again["arrays"]["obs"], obs)


def test_a_mismatching_vector_env_returns_false_and_is_untouched() -> None:
    with shoal.vector.make(envs.cartpole, 4, seed=0) as source:
        source.reset()
        state = source.get_state()
    assert state is not None
    for kwargs in ({"num_envs": 2}, {"num_envs": 4, "num_workers": 2}):
        with shoal.vector.make(envs.cartpole, backend="serial", seed=9, **kwargs) as other:
            obs, _ = other.reset()
            before = obs.copy()
            assert other.set_state(state) is False
            np.testing.assert_array_equal(obs, before)  # the buffers are untouched
            other.step(np.zeros(other.num_agents, np.int64))  # and the envs still run
    with shoal.vector.make(envs.nested, 4, seed=0) as other:
        other.reset()
        assert other.set_state(state) is False


def test_unpicklable_envs_and_partial_batches_give_none() -> None:
    with shoal.vector.make(UnpicklableEnv, 2) as vecenv:
        vecenv.reset()
        assert vecenv.get_state() is None
        vecenv.step(np.zeros(2, np.int64))  # still usable
    with shoal.vector.make(envs.cartpole, 4, num_workers=2, batch_size=2) as vecenv:
        vecenv.async_reset()
        vecenv.recv()
        assert vecenv.get_state() is None
    with shoal.vector.make(envs.cartpole, 4, num_workers=2) as source:
        source.reset()
        state = source.get_state()
    assert state is not None
    with shoal.vector.make(envs.cartpole, 4, num_workers=2, batch_size=2) as vecenv:
        assert vecenv.set_state(state) is False


def test_closures_pickle_by_value_and_files_locks_and_views_not_at_all() -> None:
    def scale(k: float) -> Callable[[np.ndarray], np.ndarray]:
        def apply(x: np.ndarray) -> np.ndarray:
            return np.asarray(x) * k

        return apply

    restored = loads_env(dumps_env({"scale": scale(3.0), "shift": lambda x: x + 1, "env": envs.cartpole}))
    assert restored["scale"](np.array([2.0]))[0] == 6.0 and restored["shift"](1) == 2
    assert restored["env"] is envs.cartpole  # module-level functions (and classes) stay references
    with open(__file__) as handle:
        for refused in (handle, threading.Lock(), memoryview(b"board")):
            with pytest.raises(TypeError):
                dumps_env({"held": refused})


def test_a_snapshot_whose_envs_cannot_load_returns_false_and_leaves_the_envs(caplog: pytest.LogCaptureFixture) -> None:
    with shoal.vector.make(envs.cartpole, 2, seed=0) as source:
        source.reset()
        state = source.get_state()
    assert state is not None
    state["emulators"][-1][-1] = b"not a pickle"  # the other envs load first, then are dropped
    with shoal.vector.make(envs.cartpole, 2, seed=1) as other:
        obs, _ = other.reset()
        before = obs.copy()
        assert other.set_state(state) is False
        assert "cannot load the envs of this snapshot" in caplog.text
        np.testing.assert_array_equal(obs, before)
        other.step(np.zeros(2, np.int64))  # the envs still run


def test_classes_and_functions_of_a_script_stay_references(tmp_path: Path) -> None:
    """A script's own env class and module-level functions pickle by name (as plain pickle does), so a resumed
    script's envs are its own classes; only what has no name (locals, lambdas) is pickled by value."""
    script = tmp_path / "script.py"
    script.write_text(
        "import pickle\n"
        "import sys\n"
        "from shoal.vector.snapshot import dumps_env\n"
        "class Walker:\n"
        "    def step(self):\n"
        "        return 1\n"
        "def reward(x):\n"
        "    return x\n"
        "data = dumps_env({'env': Walker(), 'reward': reward, 'shift': lambda x: x + 1})\n"
        "loaded = pickle.loads(data)\n"
        "assert loaded['reward'] is reward and loaded['shift'] is not None  # a copy by value would be a new object\n"
        "sys.stdout.write(data.hex())\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    data = bytes.fromhex(out.stdout)
    assert b"__main__" in data and b"Walker" in data and b"reward" in data
    assert b"_make_skeleton_class" not in data  # the class is not copied by value
    assert data.count(b"_make_function") == 1  # only the lambda is


def test_call_order_errors() -> None:
    vecenv = shoal.vector.make(envs.cartpole, 2)
    with pytest.raises(APIUsageError, match="before reset"):
        vecenv.get_state()
    vecenv.async_reset()
    with pytest.raises(APIUsageError, match="recv"):
        vecenv.get_state()
    vecenv.recv()
    state = vecenv.get_state()
    assert state is not None
    vecenv.send(np.zeros(2, np.int64))
    with pytest.raises(APIUsageError, match="recv"):
        vecenv.set_state(state)
    vecenv.recv()
    with pytest.raises(APIUsageError, match="get_state"):
        vecenv.set_state({"arrays": {}})  # type: ignore[typeddict-item]
    vecenv.close()
    with pytest.raises(APIUsageError, match="close"):
        vecenv.get_state()
    with pytest.raises(APIUsageError, match="close"):
        vecenv.set_state(state)


def test_multiprocessing_backend_has_no_snapshots() -> None:
    with shoal.vector.make(envs.cartpole, 4, backend="serial", seed=1) as serial:
        serial.reset()
        state = serial.get_state()
    assert state is not None
    with shoal.vector.make(envs.cartpole, 4, backend="multiprocessing", num_workers=2, seed=1) as vecenv:
        with pytest.raises(APIUsageError, match="before reset"):
            vecenv.get_state()
        obs, _ = vecenv.reset()
        before = obs.copy()
        assert vecenv.get_state() is None
        assert vecenv.set_state(state) is False
        np.testing.assert_array_equal(obs, before)  # the shared buffers are untouched
        obs, rewards, *_ = vecenv.step(np.zeros(4, np.int64))  # and the workers still run
        assert obs.shape == (4, 4) and rewards.shape == (4,)
