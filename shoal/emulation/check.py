"""check_env: conformance checks users can run on their own Gymnasium or PettingZoo envs.

The checks, each reported with the agent, space or step that broke it:

* every space compiles into a layout (supported leaf types, fixed sizes);
* spaces are stable: ``observation_space(agent)`` / ``action_space(agent)`` return equal spaces on every call;
* observations lie inside their spaces, at reset and during play;
* determinism: resetting with the same seed and replaying the same actions reproduces observations and rewards;
* agent death (PettingZoo parallel envs): an agent that terminated or truncated does not come back in the same
  episode, and no agent appears that is neither in ``possible_agents`` nor announced by the env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from shoal.emulation.base import ACTION_MASK_KEY, find_violation
from shoal.emulation.layout import compile_layout
from shoal.errors import APIUsageError, EnvError, ShoalError

__all__ = ["check_env"]


def check_env(env: Any, steps: int = 200, seed: int = 0, raise_on_error: bool = True) -> list[str]:
    """Run the conformance checks on ``env`` (a gymnasium.Env, pettingzoo ParallelEnv or AECEnv).

    Args:
        env: the environment to check. It is reset and stepped; close it afterwards yourself.
        steps: number of environment steps to play in each determinism rollout.
        seed: seed for ``reset`` and for the random actions.
        raise_on_error: raise :class:`EnvError` listing every problem found (otherwise return them).

    Returns:
        A list of problem descriptions (empty when the env passes).
    """
    from pettingzoo import AECEnv, ParallelEnv

    if isinstance(env, gym.Env):
        problems = _check_gymnasium(env, steps, seed)
    elif isinstance(env, ParallelEnv):
        problems = _check_parallel(env, steps, seed)
    elif isinstance(env, AECEnv):
        problems = _check_aec(env, steps, seed)
    else:
        raise APIUsageError(f"check_env needs a gymnasium.Env, pettingzoo.ParallelEnv or AECEnv, got "
                            f"{type(env).__name__}")
    if problems and raise_on_error:
        raise EnvError(f"{type(env).__name__} failed {len(problems)} check(s):\n- " + "\n- ".join(problems))
    return problems


def _layout_problem(space: Any, who: str) -> list[str]:
    try:
        compile_layout(space)
    except ShoalError as exc:
        return [f"{who}: {exc}"]
    return []


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return isinstance(b, tuple | list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=False))
    if isinstance(a, str):
        return a == b
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def _check_determinism(rollout: Any, seed: int, problems: list[str]) -> list[str]:
    """Play ``rollout`` twice; report where the two traces first differ."""
    first, second = rollout(), rollout()
    if not problems and not _same(first, second):
        pairs = enumerate(zip(first, second, strict=False))
        index = next((i for i, (a, b) in pairs if not _same(a, b)), min(len(first), len(second)))
        problems.append(f"not deterministic: reset(seed={seed}) and the same actions diverge at trace entry "
                        f"{index}; seed every random source from reset(seed=...) (use self.np_random)")
    return problems


def _seeded_rng(env: Any, seed: int) -> np.random.Generator:
    """Seed every agent's action space and return the generator for mask-aware sampling."""
    for agent in env.possible_agents:
        env.action_space(agent).seed(seed)
    return np.random.default_rng(seed)


def _sample_action(space: Any, rng: np.random.Generator, mask: Any = None) -> Any:
    if isinstance(space, gym.spaces.Discrete) and mask is not None:
        legal = np.flatnonzero(np.asarray(mask))
        return np.int64(space.start + rng.choice(legal)) if legal.size else space.sample()
    return space.sample()


# --------------------------------------------------------------------------------------------------------------


def _check_gymnasium(env: gym.Env, steps: int, seed: int) -> list[str]:
    problems = _layout_problem(env.observation_space, "observation_space")
    problems += _layout_problem(env.action_space, "action_space")
    if problems:
        return problems

    def rollout() -> list[Any]:
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        trace: list[Any] = [obs]
        for t in range(steps):
            bad = find_violation(env.observation_space, obs)
            if bad:
                problems.append(f"step {t}: observation outside observation_space: {bad}")
                break
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            trace += [obs, float(reward), bool(terminated), bool(truncated)]
            if terminated or truncated:
                obs, _info = env.reset()
        return trace

    first, second = rollout(), rollout()
    if not problems and not _same(first, second):
        index = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if not _same(a, b))
        problems.append(f"not deterministic: reset(seed={seed}) and the same actions diverge at trace entry "
                        f"{index}; seed every random source from reset(seed=...) (use self.np_random)")
    return problems


def _check_spaces_stable(env: Any, agents: list[str]) -> list[str]:
    problems = []
    for agent in agents:
        for name in ("observation_space", "action_space"):
            first, again = getattr(env, name)(agent), getattr(env, name)(agent)
            if first != again:
                problems.append(f"agent {agent!r}: {name}(agent) returned different spaces on two calls; return "
                                "the same space object every time (e.g. cache it with functools.lru_cache)")
            problems += _layout_problem(first, f"agent {agent!r} {name}")
    return problems


def _check_parallel(env: Any, steps: int, seed: int) -> list[str]:
    problems = _check_spaces_stable(env, list(env.possible_agents))
    if problems:
        return problems

    def rollout() -> list[Any]:
        rng = _seeded_rng(env, seed)
        obs, infos = env.reset(seed=seed)
        trace: list[Any] = [obs]
        gone: set[str] = set()
        for t in range(steps):
            if not env.agents:
                obs, infos = env.reset()
                gone.clear()
            for agent, value in obs.items():
                bad = find_violation(env.observation_space(agent), value)
                if bad:
                    problems.append(f"step {t}, agent {agent!r}: observation outside its space: {bad}")
                    return trace
            back = gone & set(env.agents)
            if back:
                problems.append(f"step {t}: agents {sorted(back)} acted again after terminating or truncating in "
                                "the same episode; remove dead agents from env.agents")
                return trace
            actions = {}
            for agent in env.agents:
                mask = _mask_of(obs.get(agent), infos.get(agent))
                actions[agent] = _sample_action(env.action_space(agent), rng, mask)
            obs, rewards, terms, truncs, infos = env.step(actions)
            gone |= {a for a in terms if terms[a] or truncs.get(a, False)}
            trace += [obs, rewards, terms, truncs]
        return trace

    return _check_determinism(rollout, seed, problems)


def _mask_of(obs: Any, info: Any) -> Any:
    if isinstance(obs, dict) and ACTION_MASK_KEY in obs:
        return obs[ACTION_MASK_KEY]
    if isinstance(info, dict) and ACTION_MASK_KEY in info:
        return info[ACTION_MASK_KEY]
    return None


def _check_aec(env: Any, steps: int, seed: int) -> list[str]:
    problems = _check_spaces_stable(env, list(env.possible_agents))
    if problems:
        return problems

    def rollout() -> list[Any]:
        rng = _seeded_rng(env, seed)
        env.reset(seed=seed)
        trace: list[Any] = []
        for t in range(steps):
            if not env.agents:
                env.reset()
            agent = env.agent_selection
            obs, reward, terminated, truncated, info = env.last()
            bad = find_violation(env.observation_space(agent), obs)
            if bad:
                problems.append(f"step {t}, agent {agent!r}: observation outside its space: {bad}")
                return trace
            trace += [agent, obs, float(reward), bool(terminated), bool(truncated)]
            action = None if terminated or truncated else _sample_action(
                env.action_space(agent), rng, _mask_of(obs, info))
            env.step(action)
        return trace

    return _check_determinism(rollout, seed, problems)
