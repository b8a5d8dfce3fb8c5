"""Space types of other libraries: a clear error pointing to register_space, then stored as a built-in leaf."""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import shoal
from shoal.emulation import compile_layout, flatten, register_space, to_native, unflatten
from shoal.errors import APIUsageError, SpaceError

MISSION_CHARS = string.ascii_letters + string.digits + " ,.-'"


def test_an_unregistered_space_type_is_refused_naming_it_and_how_to_register_it() -> None:
    class Ticket(spaces.Space):
        """A space type shoal has no handler for."""

    space = spaces.Dict({"image": spaces.Box(0, 255, (3, 3), np.uint8), "ticket": Ticket()})
    with pytest.raises(SpaceError, match=r"Ticket at obs\['ticket'\].*shoal\.emulation\.register_space\("
                                         r"Ticket, as_space, encode\)"):
        compile_layout(space)


def test_a_raw_minigrid_env_emulates_once_its_mission_space_is_registered() -> None:
    from minigrid.core.mission import MissionSpace

    env = gym.make("MiniGrid-Empty-5x5-v0")
    # (registrations last for the process: other tests may have registered MissionSpace already; registering it
    # again replaces the handler, and an unregistered type's error is checked below with a type of the test's own)
    register_space(MissionSpace, lambda space: spaces.Text(512, charset=MISSION_CHARS))  # room for BabyAI
    emu = shoal.emulate(env)
    obs, _ = emu.reset(seed=0)
    native = to_native(emu.obs_layout, obs[0])
    assert native["mission"] == env.unwrapped.mission == "get to the green goal square"
    raw = env.unwrapped.gen_obs()
    assert np.array_equal(native["image"], raw["image"]) and native["direction"] == raw["direction"]
    assert unflatten(emu.obs_layout, obs)["mission"].dtype == np.int32  # codes, as for any Text leaf
    for _ in range(3):
        obs = emu.step(np.array([2]))[0]  # forward
    assert to_native(emu.obs_layout, obs[0])["mission"] == "get to the green goal square"
    policy = shoal.policies.Policy.from_env(emu)  # the default network embeds the mission's codes
    import torch

    out = policy(torch.as_tensor(obs))
    assert out.logits.shape == (1, 7) and torch.isfinite(out.value).all()
    emu.close()


class Tag(spaces.Space):
    """A space of another library: one of a few string tags."""

    def __init__(self, tags: tuple[str, ...]) -> None:
        super().__init__((), None)
        self.tags = tags

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        return self.tags[int(self.np_random.integers(len(self.tags)))]

    def contains(self, x: Any) -> bool:
        return x in self.tags


class Tagged(Tag):
    """A subclass uses its base class's registration."""


def test_a_custom_space_is_stored_through_its_handler_and_decoded_back() -> None:
    space = spaces.Dict({"tag": Tag(("red", "green", "blue")), "x": spaces.Box(-1, 1, (2,), np.float32)})
    with pytest.raises(SpaceError, match=r"unsupported space Tag at obs\['tag'\].*register_space\(Tag"):
        compile_layout(space)
    register_space(Tag, lambda s: spaces.Discrete(len(s.tags)), encode=lambda s, v: s.tags.index(v),
                   decode=lambda s, i: s.tags[int(i)])
    layout = compile_layout(space)
    sample = {"tag": "blue", "x": np.array([0.5, -0.25], np.float32)}
    row = flatten(layout, sample)
    assert layout.leaf("tag").kind == "discrete" and layout.leaf("tag").source is space["tag"]
    assert unflatten(layout, row)["tag"] == 2
    back = to_native(layout, row)
    assert back["tag"] == "blue" and np.array_equal(back["x"], sample["x"])
    assert to_native(compile_layout(Tagged(("a", "b"))), flatten(Tagged(("a", "b")), "b")) == "b"


def test_register_space_refuses_bad_registrations() -> None:
    with pytest.raises(APIUsageError, match="already stores Box"):
        register_space(spaces.Box, lambda s: s)
    with pytest.raises(APIUsageError, match=r"not a gymnasium\.spaces\.Space subclass"):
        register_space(int, lambda s: s)  # type: ignore[arg-type]

    class Odd(spaces.Space):
        pass

    register_space(Odd, lambda s: spaces.Dict({"a": spaces.Discrete(2)}))
    with pytest.raises(SpaceError, match="must return a Box, Discrete, MultiDiscrete, MultiBinary or Text"):
        compile_layout(Odd())
