"""ENV strings: Gymnasium's ``module:EnvId`` next to ``module:attribute``; names read from files stay restricted."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import pytest

from shoal.errors import APIUsageError
from shoal.train.runs.resolve import resolve_env


@pytest.mark.parametrize("name", ["minigrid:MiniGrid-Empty-5x5-v0", "ale_py:ALE/Pong-v5"])
def test_gymnasium_module_env_id_imports_the_module_then_makes_the_id(name: str) -> None:
    env_fn = resolve_env(name)
    assert env_fn.kind == "gymnasium" and env_fn.name == name
    env = env_fn()
    assert env.spec.id == name.split(":", 1)[1]
    env.close()


def test_module_attribute_still_names_an_env_factory() -> None:
    env_fn = resolve_env("shoal.envs.memory:MemoryEnv")
    assert env_fn.kind == "entry_point"
    assert isinstance(env_fn(), gym.Env)


@pytest.fixture
def env_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module that registers Gymnasium ids on import and also has an attribute named like one of them."""
    (tmp_path / "shoal_test_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('ShoalBoth', entry_point='gymnasium.envs.classic_control:CartPoleEnv')\n"
        "gym.register('ShoalPole-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv')\n"
        "from gymnasium.envs.classic_control import CartPoleEnv as ShoalBoth\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "shoal_test_envs"
    sys.modules.pop("shoal_test_envs", None)


def test_a_name_that_is_both_an_attribute_and_an_id_is_refused_as_ambiguous(env_module: str) -> None:
    assert resolve_env(f"{env_module}:ShoalPole-v0")().spec.id == "ShoalPole-v0"
    with pytest.raises(APIUsageError, match="ambiguous: 'ShoalBoth' is both an attribute"):
        resolve_env(f"{env_module}:ShoalBoth")


def test_unknown_module_env_id_suggests_close_ids() -> None:
    with pytest.raises(APIUsageError, match="Did you mean") as info:
        resolve_env("minigrid:MiniGrid-Empty-5x5-v9")
    assert "'minigrid:MiniGrid-Empty-5x5-v0'" in str(info.value)
    with pytest.raises(APIUsageError, match="cannot import 'no_such_module_x'"):
        resolve_env("no_such_module_x:Thing-v0")


def test_names_read_from_a_file_accept_trusted_env_packages_only(env_module: str) -> None:
    assert resolve_env("minigrid:MiniGrid-Empty-5x5-v0", source="run/config.json").kind == "gymnasium"
    # ...and never the compatibility ids that build another library's env from a module path in their arguments
    for name in (f"{env_module}:ShoalPole-v0", "shoal.envs.memory:MemoryEnv", "minigrid:Wrapper",
                 "shimmy:GymV26Environment-v0", "GymV26Environment-v0", "GymV21Environment-v0"):
        with pytest.raises(APIUsageError, match="which loading would import and call"):
            resolve_env(name, source="run/config.json")


def test_raw_minigrid_and_babyai_envs_emulate_with_missions_as_long_as_they_get() -> None:
    import shoal
    from shoal.emulation.layout import is_registered

    # BabyAI's generated instructions run past 100 characters on some seeds
    with shoal.vector.make(resolve_env("minigrid:BabyAI-BossLevel-v0"), 1) as vec:
        for seed in range(30):
            vec.reset(seed=seed)
    from minigrid.core.mission import MissionSpace

    assert is_registered(MissionSpace)
