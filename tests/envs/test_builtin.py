"""The built-in envs: registry, API conformance, determinism, and that their tasks are what they claim."""

from __future__ import annotations

import numpy as np
import pytest

from shoal import envs
from shoal.emulation import check_env, emulate
from shoal.errors import APIUsageError


@pytest.mark.parametrize("name", envs.names())
def test_registered_envs_pass_check_env(name: str) -> None:
    env = envs.make(name)
    assert check_env(env, steps=100, raise_on_error=False) == []
    emulated = emulate(envs.make(name))
    emulated.reset(seed=0)
    assert emulated.num_agents >= 1


def test_registry_lists_the_required_envs_and_rejects_unknown_names() -> None:
    assert {"bandit", "memory", "nested"} <= set(envs.names())
    with pytest.raises(APIUsageError, match="bandit"):
        envs.make("no-such-env")


def test_bandit_rewards_only_the_contexts_arm() -> None:
    env = envs.make("bandit", num_contexts=3, num_arms=5)
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        context = int(np.argmax(obs))
        _, reward, terminated, truncated, _ = env.step(int(env.correct_arms[context]))
        assert reward == 1.0 and terminated and not truncated
        env.reset(seed=seed)
        _, reward, _, _, _ = env.step(int(env.correct_arms[context] + 1) % 5)
        assert reward == 0.0


def test_memory_shows_the_cue_only_first_and_rewards_recall_at_the_end() -> None:
    env = envs.make("memory", length=5, num_cues=3)
    obs, _ = env.reset(seed=3)
    cue = int(np.argmax(obs[:3]))
    assert obs[:3].sum() == 1
    for t in range(1, 5):  # actions before the query are ignored
        obs, reward, terminated, _, _ = env.step(cue)
        assert obs[:3].sum() == 0 and reward == 0 and not terminated
        assert obs[3] == (1.0 if t == 4 else 0.0)  # the query flag marks the step to answer
    _, reward, terminated, _, _ = env.step(cue)
    assert reward == 1.0 and terminated
    env.reset(seed=3)
    for _ in range(4):
        env.step(cue)
    assert env.step((cue + 1) % 3)[1] == 0.0


def test_nested_env_terminates_and_truncates() -> None:
    env = envs.make("nested", max_steps=4, terminate_prob=0.3)
    env.reset(seed=0)
    seen = set()
    for _ in range(400):
        action = env.action_space.sample()
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            seen.add("terminated" if terminated else "truncated")
            env.reset()
    assert seen == {"terminated", "truncated"}
    assert emulate(envs.make("nested")).obs_layout.is_bytes  # mixed dtypes: a byte row


def test_squad_kills_agents_that_miss_their_cue() -> None:
    env = envs.make("squad", num_agents=2, num_cues=2, max_steps=3)
    obs, _ = env.reset(seed=1)
    cue0 = int(np.argmax(obs["agent_0"][:2]))
    cue1 = int(np.argmax(obs["agent_1"][:2]))
    _, rewards, terminations, _, _ = env.step({"agent_0": cue0, "agent_1": 1 - cue1})
    assert rewards == {"agent_0": 1.0, "agent_1": -1.0}
    assert terminations == {"agent_0": False, "agent_1": True}
    assert env.agents == ["agent_0"]
