"""SuperSuit wrapper specs: parsed safely (literal arguments, known wrappers only), applied to real envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import shoal
from shoal.errors import APIUsageError
from shoal.wrappers import WRAPPERS, WrappedEnvFn, Wrapper, apply_wrappers, parse_wrappers

IMAGE = "color_reduction_v0(mode='B'),resize_v1(84,84),frame_stack_v1(4)"


def test_a_spec_parses_into_calls_in_order() -> None:
    assert parse_wrappers(IMAGE) == (
        Wrapper("color_reduction_v0", (), {"mode": "B"}),
        Wrapper("resize_v1", (84, 84), {}),
        Wrapper("frame_stack_v1", (4,), {}),
    )
    assert parse_wrappers(" dtype_v0('float32') ") == (Wrapper("dtype_v0", ("float32",), {}),)
    assert parse_wrappers(None) == () and parse_wrappers("  ") == ()


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("resize_v2(84, 84)", "unknown wrapper 'resize_v2'"),
        ("os.system('true')", "is not a call of a SuperSuit wrapper"),
        ("resize_v1(__import__('os').getpid(), 84)", "is not a literal"),
        ("resize_v1(size, 84)", "is not a literal"),
        ("resize_v1", "write resize_v1() to call it"),
        ("resize_v1(*[84, 84])", "unpacks arguments"),
        ("resize_v1(84, 84", "cannot parse"),
        ("resize_v1({[1]: 2})", "is not a literal"),  # an unhashable key: ast.literal_eval raises TypeError
    ],
)
def test_unknown_wrappers_and_code_are_refused_naming_the_wrapper(spec: str, needle: str) -> None:
    with pytest.raises(APIUsageError, match="wrappers: ") as info:
        parse_wrappers(spec)
    assert needle in str(info.value)
    if "unknown" in needle or "not a call" in needle:
        assert "valid wrappers: " + ", ".join(WRAPPERS) in str(info.value)


@pytest.mark.parametrize(("name", "reason"), [("observation_lambda_v0", "takes a function"),
                                              ("concat_vec_envs_v1", "shoal.vector")])
def test_wrappers_that_take_code_or_vectorize_are_refused_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(APIUsageError, match=reason):
        parse_wrappers(f"{name}()")


def test_image_wrappers_on_an_atari_game() -> None:
    env = apply_wrappers(gym.make("ale_py:ALE/Breakout-v5"), "color_reduction_v0(mode='full'),resize_v1(84,84),"
                                                            "frame_stack_v1(4)")
    assert env.observation_space.shape == (84, 84, 4) and env.observation_space.dtype == np.uint8
    emu = shoal.emulate(env)
    obs, _ = emu.reset(seed=0)
    assert obs.shape == (1, 84 * 84 * 4) and obs.dtype == np.uint8
    obs = emu.step(np.array([1]))[0]
    assert obs.reshape(84, 84, 4)[..., -1].any()  # the newest frame holds the screen
    emu.close()


def test_image_wrappers_on_pistonball_every_agent() -> None:
    from pettingzoo.butterfly import pistonball_v6

    env = apply_wrappers(pistonball_v6.parallel_env(n_pistons=4, continuous=False), IMAGE)
    for agent in env.possible_agents:
        assert env.observation_space(agent).shape == (84, 84, 4)
    emu = shoal.emulate(env)
    obs, _ = emu.reset(seed=0)
    assert obs.shape == (4, 84 * 84 * 4) and obs.any()
    emu.close()


def test_a_wrapper_that_refuses_its_arguments_is_named() -> None:
    with pytest.raises(APIUsageError, match=r"wrappers: color_reduction_v0\(mode='X'\) cannot wrap"):
        apply_wrappers(gym.make("ale_py:ALE/Breakout-v5"), "color_reduction_v0(mode='X')")


def test_a_wrapped_env_fn_pickles_and_wraps() -> None:
    import pickle

    from shoal.train.runs.resolve import resolve_env

    fn = pickle.loads(pickle.dumps(WrappedEnvFn(resolve_env("CartPole-v1"), "dtype_v0('float64')")))
    assert fn().observation_space.dtype == np.float64
