"""Rollout recorders shared by the vector tests: same seed and action stream in, comparable arrays out."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.vector import VecEnv
from tests.vector import envs_for_tests as envs

__all__ = ["CASES", "action_for", "assert_same_rollout", "async_rollout", "random_actions", "sync_rollout"]

#: Parity cases: name -> (env constructor, num_envs, steps), long enough for episodes to end and auto-reset.
CASES = {
    "cartpole": (envs.cartpole, 4, 60),
    "nested_dict": (envs.nested, 4, 30),
    "knights_archers_zombies": (envs.kaz, 2, envs.KAZ_MAX_CYCLES + 5),
    "tictactoe_aec_action_masks": (envs.tictactoe, 4, 20),
}


def random_actions(space: spaces.Space, rows: int, rng: np.random.Generator,
                   action_masks: np.ndarray | None = None) -> np.ndarray:
    """``rows`` flat actions of ``space`` (Discrete or MultiDiscrete) drawn from ``rng``, legal ones for Discrete."""
    if isinstance(space, spaces.Discrete):
        if action_masks is None:
            return rng.integers(0, space.n, rows)
        return np.argmax(rng.random(action_masks.shape) * action_masks, axis=1)  # uniform over legal actions
    assert isinstance(space, spaces.MultiDiscrete), space
    return rng.integers(0, space.nvec, (rows, *space.nvec.shape))


def action_for(space: spaces.Space, env: int, step: int, agents: int,
               action_masks: np.ndarray | None = None) -> np.ndarray:
    """The actions of ``env``'s ``agents`` slots at its ``step``-th step: a function of (env, step, masks) only."""
    return random_actions(space, agents, np.random.default_rng([env, step]), action_masks)


def _episode_infos(infos: list[dict[str, Any]]) -> list[tuple]:
    out = []
    for row, info in enumerate(infos):
        if "episode" in info:
            final = info.get("final_observation")
            out.append((row, info["episode"]["return"], info["episode"]["length"],
                        None if final is None else np.asarray(final).tobytes()))
    return out


def sync_rollout(vecenv: VecEnv, steps: int, action_seed: int = 0, seed: int | None = None) -> dict[str, Any]:
    """Reset, then step ``steps`` times with actions from ``default_rng(action_seed)``; copies of everything."""
    rng = np.random.default_rng(action_seed)
    obs, infos = vecenv.reset(seed=seed)
    record: dict[str, list] = {"obs": [obs.copy()], "masks": [vecenv.masks.copy()], "rewards": [], "terminals": [],
                               "truncations": [], "episodes": [], "agent_types": [vecenv.agent_types.copy()]}
    if vecenv.action_masks is not None:
        record["action_masks"] = [vecenv.action_masks.copy()]
    for _ in range(steps):
        actions = random_actions(vecenv.single_action_space, vecenv.num_agents, rng, vecenv.action_masks)
        obs, rewards, terminals, truncations, infos = vecenv.step(actions)
        record["obs"].append(obs.copy())
        record["rewards"].append(rewards.copy())
        record["terminals"].append(terminals.copy())
        record["truncations"].append(truncations.copy())
        record["masks"].append(vecenv.masks.copy())
        record["agent_types"].append(vecenv.agent_types.copy())
        if "action_masks" in record:
            record["action_masks"].append(vecenv.action_masks.copy())
        record["episodes"].append(_episode_infos(infos))
    out: dict[str, Any] = {key: np.stack(value) for key, value in record.items() if key != "episodes"}
    out["episodes"] = record["episodes"]
    return out


def async_rollout(vecenv: VecEnv, batches: int, min_each: int = 2, cap: int = 20_000
                  ) -> tuple[dict[int, list], list[np.ndarray]]:
    """Drive ``async_reset``/``recv``/``send`` with per-env actions (see :func:`action_for`).

    Runs ``batches`` batches, and more (up to ``cap``) until every env has come back ``min_each`` times: which
    workers finish first is up to the OS scheduler, so a worker may sit out many fast rounds.

    Returns:
        Per env, the list of ``(obs, reward, terminal, truncation, mask)`` byte strings it produced in order, and
        the ``env_ids`` of every batch.
    """
    a = vecenv.agents_per_env
    per_env: dict[int, list] = {e: [] for e in range(vecenv.num_envs)}
    counts = dict.fromkeys(range(vecenv.num_envs), 0)
    seen: list[np.ndarray] = []
    vecenv.async_reset()
    for i in range(cap):
        if i >= batches and min(counts.values()) >= min_each:
            break
        batch = vecenv.recv()
        obs, rewards, terminals, truncations, infos, env_ids, masks = batch
        assert len(env_ids) == vecenv.batch_size and len(set(env_ids.tolist())) == len(env_ids)
        assert obs.shape[0] == rewards.shape[0] == masks.shape[0] == len(infos) == len(env_ids) * a
        seen.append(env_ids.copy())
        actions = []
        for k, env in enumerate(env_ids.tolist()):
            rows = slice(k * a, (k + 1) * a)
            per_env[env].append(b"".join(np.ascontiguousarray(x[rows]).tobytes() for x in
                                         (obs, rewards, terminals, truncations, masks)))
            legal = None if batch.action_masks is None else batch.action_masks[rows]
            actions.append(action_for(vecenv.single_action_space, env, counts[env], a, legal))
            counts[env] += 1
        vecenv.send(np.concatenate(actions))
    assert min(counts.values()) >= min_each, f"some env never came back: {counts}"
    return per_env, seen


def assert_same_rollout(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    """Every recorded array equal bit for bit, and the same episode infos."""
    assert expected.keys() == actual.keys()
    for key in expected:
        if key == "episodes":
            assert expected[key] == actual[key], key
        else:
            assert expected[key].dtype == actual[key].dtype, key
            np.testing.assert_array_equal(expected[key], actual[key], err_msg=key)
