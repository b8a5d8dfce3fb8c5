"""Recording offline datasets: roll out a trained run, a scripted player or random actions and keep every step.

    dataset = record_dataset("runs/cartpole", steps=50_000)                      # a run's policy, sampling
    dataset = record_dataset("random", "CartPole-v1", 10_000)                      # uniform legal actions
    dataset = record_dataset("solver", "pettingzoo.classic.tictactoe_v3", 5_000, epsilon=0.2)
    save_dataset(dataset, "data/tictactoe-solver")                                 # shoal.datasets

Sources
    * a run directory or checkpoint (loaded as ``shoal eval`` loads it, the env defaulting to the run's), or a
      policy module: acts through :class:`~shoal.train.acting.RowActor`, sampling unless ``deterministic``;
    * ``"random"``: uniformly random legal actions of any action space (continuous entries uniform within
      their bounds, standard normal where a bound is infinite);
    * a scripted player of the classic games: ``"heuristic"``, ``"solver"`` (tic-tac-toe), ``"alphabeta@d"``
      (connect four), see :mod:`shoal.train.selfplay.opponents`;
    * with ``epsilon > 0``, each decision is replaced with probability ``epsilon`` by a random legal action.

Episodes are per agent slot and follow :class:`~shoal.datasets.EpisodeRecorder`'s rules (a step is a decision;
rewards received while waiting land on the slot's last decision; dead and padded slots store nothing). ``steps``
decisions are recorded; episodes still running then are kept and end with ``truncations=True``. In a turn-based
game the slots whose last move waits for its outcome get it first: the envs step on (those few moves are not
recorded) until every recorded move is answered, for at most ``64`` vector steps per slot of an env; a move still
unanswered then is left out, so the dataset may hold fewer than ``steps`` steps (``metadata["steps"]`` is the
number stored, ``metadata["unanswered_decisions"]`` the number left out).

Interrupted (Ctrl-C, or SIGTERM under the command line), recording stops as if the budget had been reached there,
without stepping on: :class:`RecordingInterrupted` carries the dataset of the decisions made so far
(``metadata["interrupted"]`` is True), which ``shoal record`` writes before it exits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shoal import vector
from shoal.datasets.episodes import OfflineDataset
from shoal.datasets.recorder import EpisodeRecorder
from shoal.emulation.actions import ActionLayout
from shoal.errors import APIUsageError
from shoal.interrupts import deferred_signals, signal_name
from shoal.train.config import is_baseline
from shoal.train.runs.evaluate import load_policy_from_checkpoint
from shoal.train.runs.resolve import EnvFn, resolve_env
from shoal.train.selfplay.league import make_player
from shoal.train.selfplay.opponents import Player, PolicyPlayer

__all__ = ["RecordingInterrupted", "random_actions", "record_dataset"]

class RecordingInterrupted(KeyboardInterrupt):
    """Recording was interrupted; ``dataset`` holds what was recorded until then (see the module docstring).

    A ``KeyboardInterrupt``, so code that does not look for it stops as it would on Ctrl-C; ``signal_name`` is
    the signal's (``"SIGINT"`` or ``"SIGTERM"``).
    """

    def __init__(self, dataset: OfflineDataset, signal_name: str = "SIGINT") -> None:
        super().__init__(f"recording interrupted after {dataset.num_steps} steps")
        self.dataset = dataset
        self.signal_name = signal_name


#: Vector steps allowed after the budget for the outcomes of turn-based moves still waiting (per slot of an env).
_DRAIN_STEPS_PER_SLOT = 64


def random_actions(action_layout: ActionLayout, action_masks: np.ndarray | None, rng: np.random.Generator,
                   count: int) -> np.ndarray:
    """``count`` uniformly random legal flat actions ``[count, *flat_shape]`` of ``action_layout``.

    Each discrete entry is drawn among its legal choices (``action_masks`` bool ``[count, mask_width]``, None: all
    legal; a row with no legal choice draws among all); continuous entries uniformly within their bounds, or from a
    standard normal where a bound is infinite.
    """
    out = np.zeros((count, *action_layout.flat_shape), action_layout.flat_dtype)
    if action_layout.kind == "discrete":
        return _legal_choice(rng, count, int(action_layout.flat_space.n), action_masks, 0).astype(out.dtype)
    offset = 0
    for entry, n in enumerate(action_layout.nvec):
        out[:, entry] = _legal_choice(rng, count, int(n), action_masks, offset)
        offset += int(n)
    if action_layout.num_continuous:
        low, high = np.asarray(action_layout.low, np.float64), np.asarray(action_layout.high, np.float64)
        finite = np.isfinite(low) & np.isfinite(high)
        values = rng.standard_normal((count, len(low)))
        values[:, finite] = rng.uniform(low[finite], high[finite], (count, int(finite.sum())))
        out[:, action_layout.num_discrete:] = values
    return out


def _legal_choice(rng: np.random.Generator, count: int, n: int, action_masks: np.ndarray | None,
                  offset: int) -> np.ndarray:
    """int64 ``[count]``: a uniformly random legal choice among ``n`` (mask columns ``offset .. offset + n``)."""
    u = rng.random((count, n))
    if action_masks is not None:
        legal = np.asarray(action_masks[:, offset:offset + n], np.bool_)
        u = np.where(legal | ~legal.any(1, keepdims=True), u, -1.0)
    return u.argmax(1).astype(np.int64)


class _RandomPlayer:
    """Uniformly random legal actions (:func:`random_actions`) as a :class:`Player`."""

    player_id = "random"

    def __init__(self, action_layout: ActionLayout, rng: np.random.Generator) -> None:
        self.action_layout, self.rng = action_layout, rng

    def bind(self, num_rows: int, agents_per_env: int) -> None:
        pass

    def act(self, obs: np.ndarray, action_masks: np.ndarray | None, rows: np.ndarray,
            starts: np.ndarray) -> np.ndarray:
        return random_actions(self.action_layout, action_masks, self.rng, len(rows))


def _source(source: str | Path | nn.Module, env: str | Callable[[], Any] | None, env_kwargs: dict[str, Any] | None,
            deterministic: bool, device: Any, seed: int) -> tuple[Any, Callable[[], Any], str, int | None]:
    """``(player or "random", env_fn, env name, max_agents)`` for a source (see :func:`record_dataset`)."""
    if isinstance(source, nn.Module) or source == "random" or (isinstance(source, str) and is_baseline(source)):
        if env is None:
            raise APIUsageError(f"recording from {source if isinstance(source, str) else 'a policy'!r} needs an "
                                "env to play (--env ENV)")
        env_fn = resolve_env(env, env_kwargs) if isinstance(env, str) else env
        name = env if isinstance(env, str) else getattr(env_fn, "name", type(env_fn).__name__)
        if isinstance(source, nn.Module):
            return PolicyPlayer("policy", source, deterministic=deterministic, device=device), env_fn, name, None
        if source == "random":
            return "random", env_fn, name, None
        return make_player(source, env_fn, seed=seed), env_fn, name, None
    if not isinstance(env, str | None):
        raise APIUsageError("recording a run on another env takes the env as an ENV string (--env), not a callable")
    policy, config, env_fn = load_policy_from_checkpoint(source, device=device, env=env, env_kwargs=env_kwargs)
    name = env_fn.name if isinstance(env_fn, EnvFn) else config.env
    player = PolicyPlayer(str(source), policy, deterministic=deterministic, device=device)
    return player, env_fn, name, config.max_agents


def record_dataset(
    source: str | Path | nn.Module,
    env: str | Callable[[], Any] | None = None,
    steps: int = 10_000,
    *,
    epsilon: float = 0.0,
    deterministic: bool = False,
    seed: int = 0,
    num_envs: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    max_agents: int | None = None,
    device: Any = "cpu",
) -> OfflineDataset:
    """Roll ``source`` out on a serial vector env and record ``steps`` decisions as per-slot episodes.

    Args:
        source: a run directory or checkpoint, a policy module, ``"random"``, or a scripted player
            (``"heuristic"``, ``"solver"``, ``"alphabeta@<depth>"``); see the module docstring.
        env: the env to play (an ENV string as for ``shoal train``, or a callable making the env); a run's own
            env when omitted (required for the other sources).
        steps: decisions to record (agent steps of the slots that act).
        epsilon: probability that a decision is replaced by a uniformly random legal action.
        deterministic: policy sources take their most likely action instead of sampling.
        seed: seeds the envs, the random choices and the policy's sampling (the global torch RNG is left as it
            was).
        num_envs: envs played side by side. env_kwargs: keyword arguments of the env (default: a run's own).
        max_agents: slots per PettingZoo env (default: a run's, else every possible agent).
        device: where a policy runs.

    Returns:
        The dataset; its ``metadata`` holds ``steps`` (those stored, see the module docstring), ``env``, the
        ``env_kwargs`` and SuperSuit ``wrappers`` the env was built with (a run's own when it came from the run),
        ``source``, ``seed``, ``epsilon``, ``deterministic``, how many decisions went unanswered
        (``unanswered_decisions``, see :class:`~shoal.datasets.EpisodeRecorder`) and ``interrupted`` (False).

    Raises:
        APIUsageError: bad arguments, a source that needs an env without one, an unknown source.
        CheckpointError: an unreadable checkpoint or one that does not fit the env.
        RecordingInterrupted: Ctrl-C (or SIGTERM under the command line) after at least one whole step; its
            ``dataset`` holds the steps recorded until then (``metadata["interrupted"]`` True). Interrupted
            before any step had its result, the plain ``KeyboardInterrupt`` is raised.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise APIUsageError(f"steps must be a positive int, got {steps!r}")
    if not (isinstance(epsilon, int | float) and 0.0 <= epsilon <= 1.0):
        raise APIUsageError(f"epsilon must be a probability in [0, 1], got {epsilon!r}")
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise APIUsageError(f"num_envs must be a positive int, got {num_envs!r}")
    player, env_fn, env_name, run_max_agents = _source(source, env, env_kwargs, deterministic, device, seed)
    max_agents = max_agents if max_agents is not None else run_max_agents
    emulate_kwargs = {"max_agents": max_agents} if max_agents is not None else None
    vec = vector.make(env_fn, num_envs, backend="serial", seed=seed, emulate_kwargs=emulate_kwargs)
    try:
        rng = np.random.default_rng([seed, 7])
        if player == "random":
            player = _RandomPlayer(vec.action_layout, rng)
        recorder = EpisodeRecorder(vec.obs_layout, vec.action_layout, vec.num_agents, vec.agents_per_env)
        interrupt: KeyboardInterrupt | None = None
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                _roll_out(vec, player, recorder, steps, epsilon, rng, seed)
        except KeyboardInterrupt as exc:  # keep what was recorded (the recorder is consistent between its calls)
            interrupt = exc
    finally:
        vec.close()
    label = source if isinstance(source, str) else ("policy" if isinstance(source, nn.Module) else str(source))
    built = env_fn if isinstance(env_fn, EnvFn) else None  # what the env was built with (a run's own kwargs)
    dataset: OfflineDataset | None = None
    try:
        with deferred_signals():  # an interrupt now is delivered once the dataset is whole
            dataset = recorder.dataset({
                "env": env_name,
                "env_kwargs": dict(built.kwargs if built is not None else env_kwargs or {}),
                "wrappers": None if built is None else built.wrappers,
                "source": label,
                "seed": seed,
                "epsilon": float(epsilon),
                "deterministic": bool(deterministic),
                "num_envs": num_envs,
                "max_agents": max_agents,
                "interrupted": interrupt is not None,
            })
    except APIUsageError:  # no whole step: interrupted before the first step had its result
        if interrupt is None:
            raise
        raise interrupt from None
    except KeyboardInterrupt as exc:  # arrived while the dataset was built: keep it (a second one stops at once)
        if dataset is None:
            raise
        interrupt = interrupt or exc
        dataset.metadata["interrupted"] = True
    assert dataset is not None  # built, or raised above
    if interrupt is not None:
        raise RecordingInterrupted(dataset, signal_name(interrupt)) from interrupt
    return dataset


def _roll_out(vec: Any, player: Player, recorder: EpisodeRecorder, steps: int, epsilon: float,
              rng: np.random.Generator, seed: int) -> None:
    """Act with ``player`` until ``steps`` decisions are recorded, then answer the waiting ones."""
    rows = vec.num_agents
    layout = vec.action_layout
    every_row = np.arange(rows, dtype=np.int64)
    player.bind(rows, vec.agents_per_env)
    starts = np.ones(rows, np.bool_)
    obs, _ = vec.reset(seed)
    drain_left = _DRAIN_STEPS_PER_SLOT * vec.agents_per_env
    while True:
        recording = recorder.num_steps < steps
        if not recording:
            if not recorder.pending.any() or drain_left == 0:
                break
            drain_left -= 1
        live = np.flatnonzero(vec.masks)
        action_masks = vec.action_masks
        actions = np.zeros((rows, *layout.flat_shape), layout.flat_dtype)
        if len(live):
            legal = None if action_masks is None else action_masks[live]
            chosen = np.asarray(player.act(obs[live], legal, live, starts[live]))
            if epsilon > 0.0:
                swap = rng.random(len(live)) < epsilon
                if swap.any():
                    chosen = chosen.copy()
                    chosen[swap] = random_actions(layout, None if legal is None else legal[swap], rng,
                                                  int(swap.sum()))
            actions[live] = chosen
            starts[live] = False
        if recording:
            budget = steps - recorder.num_steps
            if len(live) > budget:  # the last decisions beyond the budget are not recorded
                recorder.stop(live[budget:])
                live = live[:budget]
            recorder.act(live, obs[live], actions[live], None if action_masks is None else action_masks[live],
                         None if vec.agent_types is None else vec.agent_types[live])
            if recorder.num_steps >= steps:
                recorder.stop()
        obs, rewards, terminals, truncations, infos = vec.step(actions)
        recorder.finish(every_row, rewards, terminals, truncations, vec.masks, obs, infos)
        starts |= terminals | truncations
