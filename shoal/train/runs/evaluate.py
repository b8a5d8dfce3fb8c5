"""Evaluation: play whole env episodes (games) with a trained policy and report their mean return.

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

from shoal.errors import APIUsageError, CheckpointError, EpisodeLimitError, ShoalError
from shoal.policies.registry import rebuild_policy
from shoal.train.acting import RowActor
from shoal.train.config import TrainConfig
from shoal.train.runs.agent_stats import Game, GameTracker
from shoal.train.runs.checkpoint import check_signature, env_signature, find_checkpoint, load_checkpoint
from shoal.train.runs.resolve import EnvFn, resolve_env
from shoal.train.runs.video import FrameRecorder, VideoWriter, check_display, with_render_mode

__all__ = [
    "DEFAULT_MAX_STEPS",
    "evaluate",
    "evaluate_after_training",
    "evaluate_checkpoint",
    "evaluate_vecenv",
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
    video: str | Path | None = None,
    render: bool = False,
    fps: float = 30.0,
    target_return: float | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` whole env episodes (games) and report their returns, with per-agent returns beside them.

    A game ends when the env resets (every agent done): in a multi-agent env whose agents die at different times
    it is one game, however many agents died (:class:`~shoal.train.runs.agent_stats.GameTracker`). Every env
    contributes at most ``ceil(episodes / num_envs)`` games, so short games are not over-represented.

    Args:
        policy: the policy (``forward`` as :class:`~shoal.policies.Policy`).
        env_fn: env constructor. episodes: how many games to play.
        seed: seed of the evaluation envs. num_envs: parallel envs (default ``min(episodes, 8)``).
        deterministic: take the most likely action instead of sampling.
        device: where to run the policy (default: its own device).
        max_agents: slots per PettingZoo env.
        max_steps: bound on the steps of each env (default :data:`DEFAULT_MAX_STEPS`); when it is reached with
            fewer than ``episodes`` games finished, the finished ones are reported (with a warning).
        video: record the episodes into this file (one env, every episode in turn; see
            :mod:`shoal.train.runs.video`): an mp4, or a gif when the name ends in ``.gif`` or ffmpeg is missing.
            The env is built with ``render_mode="rgb_array"`` (an :class:`EnvFn` gets it; another ``env_fn`` must
            build its env so). One frame after the reset and after every step.
        render: show the episodes in a window instead (``render_mode="human"``, one env).
        fps: frames per second of the video.
        target_return: the return a sequence policy (the Decision Transformer) conditions every episode on; None:
            its own default (the best episode return of its training data), if it has one. Other policies take
            none.

    Returns:
        Per game: ``"episodes"`` (games played), ``"returns"`` (each game's mean return over its agents: the
        return of a single-agent env), ``"mean_return"``, ``"std_return"``, ``"team_returns"`` and
        ``"mean_team_return"`` (summed over its agents), ``"lengths"`` and ``"mean_length"`` (its longest agent
        episode). Per agent episode of those games: ``"agent_episodes"``, ``"agent_returns"``, ``"agent_lengths"``,
        ``"mean_agent_return"``, ``"mean_agent_length"``. With ``video``: ``"video"`` (the file written) and
        ``"frames"``.

    Raises:
        EpisodeLimitError: no game finished within ``max_steps`` (the message says how to bound the episodes).
        APIUsageError: a sequence policy without a target return, or a target return for another policy;
            ``video`` without the ``video`` extra installed, an env that cannot render, ``render`` without a
            display.
    """
    from shoal import vector

    if episodes < 1:
        raise APIUsageError(f"episodes must be >= 1, got {episodes}")
    max_steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise APIUsageError(f"max_steps must be a positive int, got {max_steps!r}")
    if (video is not None or render) and num_envs not in (None, 1):
        raise APIUsageError(f"video/render play one env, not num_envs={num_envs}; leave num_envs unset")
    num_envs = num_envs or min(episodes, 8)
    recorder: FrameRecorder | None = None
    writer: VideoWriter | None = None
    if video is not None or render:
        if video is not None and render:
            raise APIUsageError("video and render cannot be combined (an env has one render mode); choose one")
        num_envs, mode = 1, ("human" if render else "rgb_array")
        if render:
            check_display()
        name = env_fn.name if isinstance(env_fn, EnvFn) else getattr(env_fn, "__name__", type(env_fn).__name__)
        env_fn = recorder = FrameRecorder(with_render_mode(env_fn, mode), mode, name)
    emulate_kwargs = {"max_agents": max_agents} if max_agents is not None else None
    vec = vector.make(env_fn, num_envs, backend="serial", seed=seed, emulate_kwargs=emulate_kwargs)
    try:  # once the env renders, so that a failure leaves no empty file behind
        writer = None if video is None else VideoWriter(video, fps)
    except BaseException:
        vec.close()
        raise
    try:
        after_step = None if writer is None else (lambda: _write_frames(writer, recorder))
        result = evaluate_vecenv(policy, vec, episodes, seed=seed, deterministic=deterministic, device=device,
                                 max_steps=max_steps, after_step=after_step, target_return=target_return)
    finally:
        vec.close()
        if writer is not None:
            writer.close()
    recorded = {} if writer is None else {"video": str(writer.path), "frames": writer.frames}
    return {**result, **recorded}


def evaluate_vecenv(policy: nn.Module, vec: Any, episodes: int, *, seed: int = 0, deterministic: bool = True,
                    device: Any = None, max_steps: int | None = None,
                    after_step: Callable[[], None] | None = None,
                    target_return: float | None = None) -> dict[str, Any]:
    """Play ``episodes`` whole games on an open shoal vector env ``vec`` (reset with ``seed`` first; left open).

    The loop of :func:`evaluate` (which builds a serial vector env, and returns the same keys but ``"video"`` and
    ``"frames"``); the offline trainers evaluate on their own vector env with it. ``vec`` must step every env at
    once (its batch size is its number of envs). ``after_step`` is called after the reset and after every step.
    ``target_return`` conditions a sequence policy (see :func:`evaluate`).

    Raises:
        EpisodeLimitError: no game finished within ``max_steps`` steps per env (the message says how to bound
            them).
        APIUsageError: a sequence policy without a target return, or a target return for another policy.
    """
    if episodes < 1:
        raise APIUsageError(f"episodes must be >= 1, got {episodes}")
    max_steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise APIUsageError(f"max_steps must be a positive int, got {max_steps!r}")
    if target_return is not None and not getattr(policy, "is_sequence", False):
        raise APIUsageError(f"target_return={target_return!r} conditions a Decision Transformer; this policy is a "
                            f"{type(policy).__name__}, which takes none: leave it out (--target-return)")
    num_envs = vec.num_envs
    device = torch.device(device) if device is not None else next(policy.parameters()).device
    rows = vec.num_agents
    every_row = np.arange(rows, dtype=np.int64)
    env_ids = np.arange(num_envs, dtype=np.int64)
    tracker = GameTracker(num_envs, vec.agents_per_env)
    quota = math.ceil(episodes / num_envs)
    counts = np.zeros(num_envs, np.int64)
    games: list[Game] = []
    was_training = policy.training
    policy.eval()
    try:
        acting = RowActor(policy, rows, vec.agents_per_env, device,
                          continuous=vec.action_layout.kind in ("continuous", "hybrid"), deterministic=deterministic,
                          target_return=target_return)
        obs, _ = vec.reset(seed)
        if after_step is not None:
            after_step()
        starts = np.ones(rows, np.bool_)
        rewards = np.zeros(rows, np.float32)
        for _ in range(max_steps):
            masks = vec.masks
            action = acting.act(obs, every_row, masks, starts=starts, action_masks=vec.action_masks,
                                rewards=rewards).env_actions
            starts = np.where(masks, False, starts)
            obs, rewards, terminals, truncations, infos = vec.step(action)
            if after_step is not None:
                after_step()
            ended = terminals | truncations
            starts = starts | ended
            if ended.any():
                for game in tracker.record(every_row, env_ids, infos, ended):
                    if counts[game.env] < quota:
                        counts[game.env] += 1
                        games.append(game)
            if (counts >= quota).all():
                break
        else:
            if not games:
                raise EpisodeLimitError(
                    f"evaluation stopped: no episode finished within {max_steps:,} steps per env; "
                    + _no_end_hint(deterministic)
                )
            log.warning(
                "evaluation stopped after %s steps per env with %d of %d episodes finished; the result covers "
                "those only (%s)", f"{max_steps:,}", min(len(games), episodes), episodes, _no_end_hint(deterministic)
            )
    finally:
        policy.train(was_training)
    games = games[:episodes]
    returns = [game.mean_return for game in games]
    agent_returns = [r for game in games for r in game.returns]
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean([game.length for game in games])),
        "episodes": len(games),
        "returns": returns,
        "lengths": [game.length for game in games],
        "team_returns": [game.total_return for game in games],
        "mean_team_return": float(np.mean([game.total_return for game in games])),
        "agent_episodes": len(agent_returns),
        "agent_returns": agent_returns,
        "mean_agent_return": float(np.mean(agent_returns)),
        "agent_lengths": [n for game in games for n in game.lengths],
        "mean_agent_length": float(np.mean([n for game in games for n in game.lengths])),
    }


def _write_frames(writer: VideoWriter, recorder: FrameRecorder | None) -> None:
    """The frames the env rendered during the last vector call (its last frame before an autoreset included); an
    env the recorder could not wrap gives the frame it shows now."""
    assert recorder is not None
    frames = recorder.take() if recorder.env is not None and recorder.pending else [recorder.frame()]
    for frame in frames:
        writer.append(frame)


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
    action spaces is accepted with a warning naming both. The run's SuperSuit wrappers (``config.wrappers``) wrap
    an env named by ``env`` or by the run; ``env_fn`` is used as given (it builds the env the policy plays).

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
        env_fn = resolve_env(name, env_kwargs, source=None if env is not None else str(path),
                             wrappers=config.wrappers)
    # EnvFn knows its ENV string: a plain callable is the caller's own choice and is only checked by shape
    name = env_fn.name if isinstance(env_fn, EnvFn) else config.env
    emulate_kwargs = {"max_agents": config.max_agents} if config.max_agents is not None else None
    vec = vector.make(env_fn, 1, backend="serial", seed=0, emulate_kwargs=emulate_kwargs)
    try:
        check_signature(payload["env_signature"], env_signature(vec), str(path), name)
        if name != config.env:
            log.warning("%s was trained on %r, not %r; the spaces of both match, so it plays %r", path, config.env,
                        name, name)
        policy = rebuild_policy(payload.get("policy_class"), dict(payload["policy_config"]), vec, str(path),
                                device)
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
    video: str | Path | None = None,
    render: bool = False,
    fps: float = 30.0,
    target_return: float | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` the policy of a checkpoint or run directory.

    ``env``/``env_kwargs`` evaluate it on another env than the run's (see :func:`load_policy_from_checkpoint`);
    ``video``, ``render`` and ``fps`` record or show the episodes; ``target_return`` conditions a Decision
    Transformer (see :func:`evaluate`).
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
        video=video,
        render=render,
        fps=fps,
        target_return=target_return,
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
