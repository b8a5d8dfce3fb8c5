"""Evaluation: play whole episodes with a trained policy and report the mean episode return.

Every evaluation is bounded: at most ``max_steps`` steps per env (:data:`DEFAULT_MAX_STEPS`), since a
deterministic policy in an env without a time limit (e.g. ``CliffWalking-v1``) can loop forever. The evaluation
at the end of training (:func:`evaluate_after_training`) reports a failure instead of raising it: the training
it follows has finished and is saved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shoal.errors import APIUsageError, CheckpointError, ShoalError
from shoal.policies import Policy
from shoal.policies.policy import check_saved_config
from shoal.train.acting import RowActor
from shoal.train.config import TrainConfig
from shoal.train.runs.checkpoint import check_signature, env_signature, find_checkpoint, load_checkpoint
from shoal.train.runs.resolve import EnvFn, resolve_env

__all__ = [
    "DEFAULT_MAX_STEPS",
    "evaluate",
    "evaluate_after_training",
    "evaluate_checkpoint",
    "load_policy_from_checkpoint",
]

log = logging.getLogger(__name__)

#: Default bound of an evaluation: steps per env (each step steps every env of the evaluation once).
DEFAULT_MAX_STEPS = 100_000


def _no_end_hint(deterministic: bool) -> str:
    """How to get finite episodes out of an env that did not end them."""
    return (
        ("deterministic actions can loop forever in an env without a time limit; evaluate with --stochastic "
         "(deterministic=False), or " if deterministic else "give the env ")
        + "a time limit (e.g. --env-kwargs '{\"max_episode_steps\": 500}' for a Gymnasium id), or raise the "
        "bound (--max-steps, max_steps=...)"
    )


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
    max_steps: int | None = None,
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
        max_agents: slots per PettingZoo env.
        max_steps: bound on the steps of each env (default :data:`DEFAULT_MAX_STEPS`); when it is reached with
            fewer than ``episodes`` finished, the finished ones are reported (with a warning).

    Returns:
        ``{"mean_return", "std_return", "mean_length", "episodes", "returns"}``.

    Raises:
        APIUsageError: no episode finished within ``max_steps`` (the message says how to bound the episodes).
    """
    from shoal import vector

    if episodes < 1:
        raise APIUsageError(f"episodes must be >= 1, got {episodes}")
    max_steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise APIUsageError(f"max_steps must be a positive int, got {max_steps!r}")
    num_envs = num_envs or min(episodes, 8)
    emulate_kwargs = {"max_agents": max_agents} if max_agents is not None else None
    vec = vector.make(env_fn, num_envs, backend="serial", seed=seed, emulate_kwargs=emulate_kwargs)
    device = torch.device(device) if device is not None else next(policy.parameters()).device
    rows = vec.num_agents
    every_row = np.arange(rows, dtype=np.int64)
    acting = RowActor(policy, rows, vec.agents_per_env, device,
                      continuous=vec.action_layout.kind in ("continuous", "hybrid"), deterministic=deterministic)
    quota = math.ceil(episodes / rows)
    counts = np.zeros(rows, np.int64)
    returns: list[float] = []
    lengths: list[float] = []
    was_training = policy.training
    policy.eval()
    try:
        obs, _ = vec.reset(seed)
        starts = np.ones(rows, np.bool_)
        ever_live = np.zeros(rows, np.bool_)
        for _ in range(max_steps):
            masks = vec.masks
            ever_live |= masks
            action = acting.act(obs, every_row, masks, starts=starts, action_masks=vec.action_masks).env_actions
            starts = np.where(masks, False, starts)
            obs, _rewards, terminals, truncations, infos = vec.step(action)
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
                raise APIUsageError(
                    f"evaluation stopped: no episode finished within {max_steps:,} steps per env; "
                    + _no_end_hint(deterministic)
                )
            log.warning(
                "evaluation stopped after %s steps per env with %d of %d episodes finished; the result covers "
                "those only (%s)", f"{max_steps:,}", min(len(returns), episodes), episodes, _no_end_hint(deterministic)
            )
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
    path: str | Path,
    device: Any = "cpu",
    env_fn: Callable[[], Any] | None = None,
    *,
    env: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[nn.Module, TrainConfig, Any]:
    """Rebuild the policy of a checkpoint (or the newest readable checkpoint of a run directory).

    The policy is checked against the env it will play: ``env_fn``, else ``env`` (an ENV string as for
    ``shoal train``) with ``env_kwargs``, else the run's own env. Another env with the same observation and
    action spaces is accepted with a warning naming both.

    Returns:
        ``(policy, config, env_fn)``: ``config`` is the run's own.

    Raises:
        CheckpointError: unreadable checkpoint, or it does not fit the env (another observation or action
            space) or the policy class.
    """
    from shoal import vector

    path = find_checkpoint(path)
    payload = load_checkpoint(path, map_location=device)
    config = TrainConfig.from_dict(payload["config"])
    if env_fn is None:
        name = config.env if env is None else env
        if env_kwargs is None and name == config.env:
            env_kwargs = config.env_kwargs
        env_fn = resolve_env(name, env_kwargs, source=None if env is not None else str(path))
    # EnvFn knows its ENV string: a plain callable is the caller's own choice and is only checked by shape
    name = env_fn.name if isinstance(env_fn, EnvFn) else config.env
    emulate_kwargs = {"max_agents": config.max_agents} if config.max_agents is not None else None
    vec = vector.make(env_fn, 1, backend="serial", seed=0, emulate_kwargs=emulate_kwargs)
    try:
        check_signature(payload["env_signature"], env_signature(vec), str(path), name)
        if name != config.env:
            log.warning("%s was trained on %r, not %r; the spaces of both match, so it plays %r", path, config.env,
                        name, name)
        policy_config = dict(payload["policy_config"])
        if not policy_config:
            raise CheckpointError(
                f"{path} holds a custom policy ({payload.get('policy_class')}) without a config; "
                "rebuild it yourself and load payload['model']"
            )
        policy_config = check_saved_config(policy_config, str(path))
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
    env: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` the policy of a checkpoint or run directory.

    ``env``/``env_kwargs`` evaluate it on another env than the run's (see :func:`load_policy_from_checkpoint`).
    Adds ``"checkpoint"``, ``"env"`` (the env played) and ``"trained_env"`` to the result.
    """
    checkpoint = find_checkpoint(path)
    policy, config, env_fn = load_policy_from_checkpoint(checkpoint, device=device, env=env, env_kwargs=env_kwargs)
    result = evaluate(
        policy,
        env_fn,
        episodes,
        seed=config.seed + 10_007 if seed is None else seed,
        deterministic=deterministic,
        max_agents=config.max_agents,
        max_steps=max_steps,
    )
    result["checkpoint"] = str(checkpoint)
    result["env"] = env_fn.name if isinstance(env_fn, EnvFn) else config.env
    result["trained_env"] = config.env
    return result


def evaluate_after_training(policy: nn.Module, env_fn: Callable[[], Any], config: TrainConfig,
                            device: Any = None) -> dict[str, Any]:
    """The evaluation that ends :func:`shoal.train.train`: ``config.eval_episodes`` episodes with the most likely
    actions, then as many sampling actions, as a deterministic policy can fail where the stochastic one it was
    trained as succeeds (e.g. walking into a wall for ever).

    Returns:
        The deterministic :func:`evaluate` result, with the sampled one under ``"stochastic"``. A failure does
        not undo the training: it is logged as a warning and reported as ``{"error": message, "mean_return":
        None, "episodes": 0}`` in place of that evaluation's result (interrupts still propagate).
    """
    results = {}
    for name, deterministic in (("deterministic", True), ("stochastic", False)):
        try:
            results[name] = evaluate(policy, env_fn, config.eval_episodes, seed=config.seed + 10_007,
                                     deterministic=deterministic, device=device, max_agents=config.max_agents)
        except Exception as exc:
            message = str(exc) if isinstance(exc, ShoalError) else f"{type(exc).__name__}: {exc}"
            log.warning("the %s evaluation after training failed (training finished and is saved; evaluate again "
                        "with shoal eval RUN_DIR): %s", name, message, exc_info=not isinstance(exc, ShoalError))
            results[name] = {"error": message, "mean_return": None, "episodes": 0}
    return {**results["deterministic"], "stochastic": results["stochastic"]}
