"""Evaluation: play whole episodes with a trained policy and report the mean episode return."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shoal.errors import APIUsageError, CheckpointError
from shoal.train.runs.checkpoint import check_signature, env_signature, find_checkpoint, load_checkpoint
from shoal.train.config import TrainConfig
from shoal.train.runs.resolve import resolve_env

__all__ = ["evaluate", "evaluate_checkpoint", "load_policy_from_checkpoint"]


def evaluate(
    policy: nn.Module,
    env_fn: Callable[[], Any],
    episodes: int = 10,
    *,
    seed: int = 0,
    num_envs: int | None = None,
    deterministic: bool = True,
    device: Any = None,
    max_agents: int | None = None,
    max_steps: int = 1_000_000,
) -> dict[str, Any]:
    """Play ``episodes`` agent-episodes and report their returns.

    Every env row contributes at most ``ceil(episodes / rows)`` episodes, so short episodes are not
    over-represented. In multi-agent envs each agent's episode counts once.

    Args:
        policy: the policy (``forward`` as :class:`~shoal.policies.Policy`).
        env_fn: env constructor. episodes: how many agent-episodes to collect.
        seed: seed of the evaluation envs. num_envs: parallel envs (default ``min(episodes, 8)``).
        deterministic: take the most likely action instead of sampling.
        device: where to run the policy (default: its own device).
        max_agents: slots per PettingZoo env. max_steps: safety bound on env steps.

    Returns:
        ``{"mean_return", "std_return", "mean_length", "episodes", "returns"}``.
    """
    from shoal import vector

    if episodes < 1:
        raise APIUsageError(f"episodes must be >= 1, got {episodes}")
    num_envs = num_envs or min(episodes, 8)
    emulate_kwargs = {"max_agents": max_agents} if max_agents is not None else None
    vec = vector.make(env_fn, num_envs, backend="serial", seed=seed, emulate_kwargs=emulate_kwargs)
    device = torch.device(device) if device is not None else next(policy.parameters()).device
    recurrent = bool(getattr(policy, "is_recurrent", False))
    num_agent_ids = int(getattr(policy, "num_agent_ids", 0))
    continuous = vec.action_layout.kind in ("continuous", "hybrid")
    rows = vec.num_agents
    quota = math.ceil(episodes / rows)
    counts = np.zeros(rows, np.int64)
    returns: list[float] = []
    lengths: list[float] = []
    was_training = policy.training
    policy.eval()
    try:
        obs, _ = vec.reset(seed)
        state = policy.initial_state(rows, device) if recurrent else None
        starts = np.ones(rows, np.bool_)
        ever_live = np.zeros(rows, np.bool_)
        for _ in range(max_steps):
            masks = vec.masks
            ever_live |= masks
            with torch.inference_mode():
                action_masks = vec.action_masks
                out = policy(
                    torch.from_numpy(obs).to(device),
                    state,
                    done=torch.from_numpy(starts).to(device) if recurrent else None,
                    action_masks=None
                    if action_masks is None or action_masks.all()
                    else torch.from_numpy(action_masks).to(device),
                    agent_ids=torch.from_numpy(np.arange(rows) % vec.agents_per_env).to(device)
                    if num_agent_ids
                    else None,
                    deterministic=deterministic,
                )
                action = policy.clip_action(out.action) if continuous else out.action
            if recurrent:  # only live rows advance their state
                live = torch.from_numpy(masks).to(device).view(1, -1, 1)
                state = (torch.where(live, out.state[0], state[0]), torch.where(live, out.state[1], state[1]))
            starts = np.where(masks, False, starts)
            obs, _rewards, terminals, truncations, infos = vec.step(action.cpu().numpy())
            ended = terminals | truncations
            starts = starts | ended
            for k in np.flatnonzero(ended):
                episode = infos[k].get("episode")
                if episode is not None and counts[k] < quota:
                    counts[k] += 1
                    returns.append(float(episode["return"]))
                    lengths.append(float(episode["length"]))
            target_rows = ever_live if ever_live.any() else np.ones(rows, np.bool_)
            if len(returns) >= episodes and (counts[target_rows] >= quota).all():
                break
            if len(returns) >= episodes and _steps_exhausted(counts, ever_live, quota):
                break
        else:
            if not returns:
                raise APIUsageError(f"no episode finished within {max_steps} steps")
    finally:
        policy.train(was_training)
        vec.close()
    returns = returns[:episodes] if len(returns) > episodes else returns
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths[: len(returns)])),
        "episodes": len(returns),
        "returns": returns,
    }


def _steps_exhausted(counts: np.ndarray, ever_live: np.ndarray, quota: int) -> bool:
    """Enough episodes overall and most live rows reached their quota (some slots may rarely end episodes)."""
    live = counts[ever_live]
    return bool(live.size) and float((live >= quota).mean()) >= 0.75


def load_policy_from_checkpoint(
    path: str | Path, device: Any = "cpu", env_fn: Callable[[], Any] | None = None
) -> tuple[nn.Module, TrainConfig, Any]:
    """Rebuild the policy of a checkpoint (or the newest checkpoint of a run directory).

    Returns:
        ``(policy, config, env_fn)``; the env is checked against the checkpoint's env signature.

    Raises:
        CheckpointError: unreadable checkpoint, or it does not fit the env or the policy class.
    """
    from shoal import vector
    from shoal.policies import Policy

    path = find_checkpoint(path)
    payload = load_checkpoint(path, map_location=device)
    config = TrainConfig.from_dict(payload["config"])
    env_fn = env_fn if env_fn is not None else resolve_env(config.env, config.env_kwargs)
    emulate_kwargs = {"max_agents": config.max_agents} if config.max_agents is not None else None
    vec = vector.make(env_fn, 1, backend="serial", seed=0, emulate_kwargs=emulate_kwargs)
    try:
        check_signature(payload["env_signature"], env_signature(vec), str(path), config.env)
        policy_config = dict(payload["policy_config"])
        if not policy_config:
            raise CheckpointError(
                f"{path} holds a custom policy ({payload.get('policy_class')}) without a config; "
                "rebuild it yourself and load payload['model']"
            )
        try:
            policy = Policy.from_env(vec, **policy_config, device=device)
        except TypeError as exc:
            raise CheckpointError(f"{path}: cannot rebuild its policy from {policy_config}: {exc}") from exc
    finally:
        vec.close()
    try:
        policy.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the saved weights do not fit the policy: {exc}") from exc
    return policy, config, env_fn


def evaluate_checkpoint(
    path: str | Path,
    episodes: int = 10,
    *,
    seed: int | None = None,
    deterministic: bool = True,
    device: Any = "cpu",
) -> dict[str, Any]:
    """:func:`evaluate` the policy of a checkpoint or run directory; adds ``"checkpoint"`` to the result."""
    checkpoint = find_checkpoint(path)
    policy, config, env_fn = load_policy_from_checkpoint(checkpoint, device=device)
    result = evaluate(
        policy,
        env_fn,
        episodes,
        seed=config.seed + 10_007 if seed is None else seed,
        deterministic=deterministic,
        max_agents=config.max_agents,
    )
    result["checkpoint"] = str(checkpoint)
    result["env"] = config.env
    return result
