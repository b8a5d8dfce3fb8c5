"""Soft actor-critic on the shared training loop: acts like PPO, stores into a replay buffer, learns per step.

    result = shoal.train.train(TrainConfig(env="Pendulum-v1", algo="sac", total_steps=20_000))

:class:`SACTrainer` is a :class:`~shoal.train.loop.trainer.Trainer` that replaces the algorithm's three parts and
keeps the rest (vector env, acting through :class:`~shoal.train.acting.RowActor`, logging, checkpoints, resume,
evaluation, the command line):

* **acting**: uniformly random actions for the first ``learning_starts`` agent steps, then the policy's samples;
* **storage**: a :class:`~shoal.train.core.replay.ReplayBuffer`: every live slot's decision becomes a transition
  once the slot acts again or its episode ends (truncated episodes bootstrap from their final observation;
  padded and dead slots store nothing);
* **learning**: after every vector step, ``utd_ratio`` gradient steps per agent step collected
  (:func:`~shoal.train.core.sac.sac_update` on ``minibatch_size`` sampled transitions). One *update* of the loop
  is ``horizon`` such vector steps: the unit of logging and of ``checkpoint_interval``.

With an asynchronous backend the actions of a step are sent before its gradient steps run, so the envs step
while the learner works. Multi-agent envs train one parameter-shared policy over every agent slot (with
``agent_ids``, a one-hot slot id tells slots apart).

Centralized critics (``critic_input`` set: ``"auto"``, ``"state"`` or ``"concat"``, as for MAPPO; unset, the
critics are decentralized): the twin critics and their targets read MAPPO's centralized input of the slot
(:mod:`shoal.train.core.centralized`: the env's ``state()`` or every slot of the env, plus the slot's own
observation, slot and type) together with the slot's *own* action; the actor still reads only its observation.
Own action rather than every agent's: a joint-action critic's target needs the other agents' next actions drawn
from the current policy at their next observations, which exist only when every slot decides at the same steps
(not in turn-based games, nor once an agent is gone); with its own action each live slot stays one transition,
and the other agents' behaviour is part of what the critic averages over. The replay stores each transition's
critic input and the next one (at the episode's final step when truncated); their memory is in the printed
replay size and bounded by ``critic_memory_limit``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shoal.emulation.base import action_mask_width
from shoal.errors import APIUsageError
from shoal.interrupts import deferred_signals
from shoal.policies.sac import SACPolicy
from shoal.train.config import TrainConfig
from shoal.train.core.centralized import CentralizedInputs, centralized_env
from shoal.train.core.ppo import SINGLE_LEARNER
from shoal.train.core.replay import ReplayBuffer
from shoal.train.core.sac import SACOptimizers, sac_update
from shoal.train.loop.env_result import EnvResult
from shoal.train.loop.trainer import Trainer
from shoal.train.runs.logger import LogRecord
from shoal.train.runs.resolve import resolve_env

__all__ = ["SACTrainer"]

log = logging.getLogger(__name__)

#: Refuse a replay buffer larger than this fraction of the machine's memory (numpy reserves it lazily, so an
#: oversized buffer would otherwise fail hours later, when it fills).
_MAX_MEMORY_FRACTION = 0.8
_GIB = 2**30


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class SACTrainer(Trainer):
    """Soft actor-critic (Box or Discrete actions; single-agent, or parameter-shared over agent slots).

    Args:
        config: the configuration (``algo="sac"``); ``critic_input`` set gives the critics a centralized input
            (PettingZoo envs only).
        env_fn: env constructor, as for :class:`~shoal.train.loop.trainer.Trainer`.
        policy: a :class:`~shoal.policies.sac.SACPolicy` (default: built from the env and the config; with
            ``critic_input``, built with ``critic_input_size=`` the width of :attr:`central`).
        callbacks: called with every :class:`~shoal.train.runs.logger.LogRecord`.

    Attributes:
        critic_mode: ``"state"``, ``"concat"`` (centralized critics) or ``"local"``.
        central: the :class:`~shoal.train.core.centralized.CentralizedInputs` builder, or None (``"local"``).

    Raises:
        APIUsageError: ``critic_input`` for an env that is not a PettingZoo env (a single agent has no other agents
            to centralize over), or ``"state"`` for an env without a usable ``state()``.
    """

    updates_observation_stats = False  # no PPO update: running observation statistics would stay empty

    loss_names = ("q_loss", "actor_loss", "alpha", "entropy", "q_mean", "gradient_steps")

    def __init__(self, config: TrainConfig, env_fn: Callable[[], Any] | None = None,
                 policy: nn.Module | None = None, callbacks: Sequence[Callable[[LogRecord], None]] = ()) -> None:
        if config.algo != "sac":
            raise APIUsageError(f"SACTrainer trains algo='sac', got algo={config.algo!r}")
        self.critic_mode = "local"
        self.central: CentralizedInputs | None = None
        resolved = config.resolved()
        if resolved.critic_input is not None:
            if env_fn is None:
                env_fn = resolve_env(resolved.env, resolved.env_kwargs, wrappers=resolved.wrappers)
            self.critic_mode, self._env_info, env_fn = centralized_env(resolved.critic_input, env_fn, resolved.env,
                                                                       "SAC")
            if not self._env_info.possible_agents:
                raise APIUsageError(
                    f"critic_input={resolved.critic_input!r} gives SAC's critics an input built from every agent of a "
                    f"PettingZoo env, but {resolved.env!r} is a single-agent env ({self._env_info.state_note}); "
                    "leave critic_input unset (drop --critic-input) for a single agent"
                )
        super().__init__(config, env_fn=env_fn, policy=policy, callbacks=callbacks)

    def _setup(self, policy: nn.Module | None, policy_cls: Any) -> None:
        vec = self.vecenv
        if self.critic_mode != "local":
            self.central = CentralizedInputs(self.critic_mode, self._env_info, vec.obs_layout, vec.num_envs,
                                             vec.agents_per_env, self.device)
        width = 0 if self.central is None else self.central.size
        if policy is not None and isinstance(policy, SACPolicy) and policy.critic_input_size != width:
            raise APIUsageError(
                f"SAC feeds the critics rows of {width} floats ({self.describe_critic()}); build the policy with "
                f"SACPolicy.from_env(vecenv, critic_input_size={width}) (it has "
                f"critic_input_size={policy.critic_input_size})"
            )
        super()._setup(policy, policy_cls)

    def describe_critic(self) -> str:
        """What the critics read, e.g. ``"centralized, concat: 3 slots"`` or ``"the slot's own observation"``."""
        return "the slot's own observation" if self.central is None else f"centralized, {self.central.describe()}"

    def _default_policy(self, policy_cls: Any, **extra: Any) -> nn.Module:
        cfg = self.config
        return SACPolicy.from_env(self.vecenv, hidden_size=cfg.hidden_size,
                                  num_agent_ids=self.vecenv.agents_per_env if cfg.agent_ids else 0,
                                  critic_input_size=0 if self.central is None else self.central.size,
                                  init_alpha=cfg.sac_alpha if cfg.sac_alpha is not None else 1.0)

    def _setup_learning(self) -> None:
        cfg, vec = self.config, self.vecenv
        if not isinstance(self.policy, SACPolicy):
            raise APIUsageError(f"algo='sac' trains a shoal.policies.sac.SACPolicy, got {type(self.policy).__name__}; "
                                "build it with SACPolicy.from_env(vecenv) or leave policy=None")
        policy = self.policy
        self.loss_fn = None
        self.reducer = SINGLE_LEARNER
        self.optimizer = SACOptimizers.for_policy(policy, cfg.learning_rate, tune_alpha=cfg.sac_alpha is None,
                                                  eps=cfg.adam_eps)
        #: None: sac_update's per-kind default (-action_dim; Discrete: 0.89 log(legal actions) per state)
        self.target_entropy = cfg.target_entropy
        layout = vec.action_layout
        mask_width = action_mask_width(layout) if layout.kind == "discrete" else 0
        critic_width = 0 if self.central is None else self.central.size
        critic_bytes = 2 * cfg.replay_size * critic_width * 4  # float32, at the decision and at the next one
        if critic_bytes > cfg.critic_memory_limit * _GIB:
            raise APIUsageError(
                f"SAC's critic inputs ({self.describe_critic()}: {critic_width:,} floats, two per transition) take "
                f"{critic_bytes / _GIB:.2f} GiB in a replay buffer of {cfg.replay_size:,} transitions, more than "
                f"critic_memory_limit={cfg.critic_memory_limit:g} GiB; lower --replay-size or raise "
                "--critic-memory-limit"
            )
        self.buffer = ReplayBuffer(cfg.replay_size, self.num_rows, self.agents_per_env, vec.obs_layout.flat_size,
                                   vec.obs_layout.flat_dtype, tuple(layout.flat_shape), layout.flat_dtype,
                                   mask_width, gamma=cfg.gamma, n_step=cfg.n_step, critic_width=critic_width)
        memory, limit = self.buffer.nbytes, _physical_memory()
        # writing a checkpoint with the replay copies the filled ring once more
        peak = memory * (2 if cfg.save_replay else 1)
        if limit is not None and peak > _MAX_MEMORY_FRACTION * limit:
            raise APIUsageError(
                f"a replay buffer of {cfg.replay_size:,} transitions needs {memory / 2**30:.1f} GiB"
                + (" (twice that while a checkpoint holding it is written)" if cfg.save_replay else "")
                + f", more than {_MAX_MEMORY_FRACTION:.0%} of this machine's {limit / 2**30:.1f} GiB; lower "
                "--replay-size" + (" or pass --no-save-replay" if cfg.save_replay else "")
            )
        row_bytes = vec.obs_layout.flat_size * vec.obs_layout.flat_dtype.itemsize
        critic = "" if self.central is None else (f" and {4 * critic_width:,}-byte critic inputs "
                                                  f"({self.describe_critic()})")
        self._replay_summary = (f"replay buffer: {cfg.replay_size:,} transitions of {row_bytes:,}-byte observations"
                                f"{critic}, {memory / 2**20:,.1f} MiB")
        log.info("%s", self._replay_summary)
        self.all_rows = np.arange(self.num_rows, dtype=np.int64)
        self._low = torch.as_tensor(np.asarray(layout.low, np.float32)) if layout.kind == "continuous" else None
        self._high = torch.as_tensor(np.asarray(layout.high, np.float32)) if layout.kind == "continuous" else None
        self._acted = 0  # agent steps acted since the last update
        self._owed = 0.0  # gradient steps owed to the data collected (utd_ratio), the fraction carried over
        self._stat_sums: dict[str, Tensor] = {}
        self._stat_steps = 0

    def describe(self) -> list[str]:
        return [*super().describe(), self._replay_summary]

    def _start_learner(self) -> None:
        """SAC learns in this process, step by step inside :meth:`collect`; there is no separate learner."""

    def critic_inputs(self, carry: EnvResult, live: np.ndarray | slice) -> Tensor | None:
        """The centralized critic inputs float32 ``[len(live), C]`` of ``carry``'s rows ``live`` (None for
        decentralized critics); stored in the replay beside the decisions and as their next inputs."""
        if self.central is None:
            return None
        x = self.central.rows(carry)
        return x[live] if isinstance(live, slice) else x[torch.from_numpy(np.asarray(live)).to(x.device)]

    def _critic_array(self, carry: EnvResult, live: np.ndarray | slice) -> np.ndarray | None:
        x = self.critic_inputs(carry, live)
        return None if x is None else x.cpu().numpy()

    # ---- acting and storage ------------------------------------------------------------------------------------

    def _random_actions(self, carry: EnvResult) -> np.ndarray:
        """Uniform actions over the action space (Box) or the legal actions (Discrete), drawn by
        :attr:`generator` so a resumed run draws the same ones."""
        n = len(carry.rows)
        if self._low is not None:
            u = torch.rand((n, len(self._low)), generator=self.generator)
            return (self._low + (self._high - self._low) * u).numpy()
        width = self.policy.action_size
        legal = torch.ones((n, width)) if carry.action_masks is None else torch.from_numpy(
            np.asarray(carry.action_masks, np.float32))
        legal[legal.sum(-1) == 0] = 1.0  # a row with no legal action (not live) still needs a placeholder
        return torch.multinomial(legal, 1, generator=self.generator).squeeze(-1).numpy()

    def _act(self, carry: EnvResult) -> None:
        t = time.perf_counter()
        rows, masks = carry.rows, carry.masks
        if self.global_step + self._acted < self.config.learning_starts:
            actions = self._random_actions(carry)
        else:
            actions = self.acting.act(carry.obs, rows, masks, action_masks=carry.action_masks).env_actions
        self._record_decisions(carry, masks, actions)
        if masks.all():
            self.buffer.act(rows, carry.obs, actions, carry.action_masks, self._critic_array(carry, slice(None)))
            self._acted += len(rows)
        elif masks.any():
            live = np.flatnonzero(masks)
            self.buffer.act(rows[live], carry.obs[live], actions[live],
                            None if carry.action_masks is None else carry.action_masks[live],
                            self._critic_array(carry, live))
            self._acted += len(live)
        self._times["inference"] += time.perf_counter() - t
        t = time.perf_counter()
        self.vecenv.send(actions)
        self._times["env"] += time.perf_counter() - t
        carry.acted = True

    def _finish(self, carry: EnvResult) -> None:
        """Complete the pending decisions answered by ``carry`` into transitions; record finished episodes."""
        t = time.perf_counter()
        rows, terminals, truncations = carry.rows, carry.terminals, carry.truncations
        ended = terminals | truncations
        final_obs: dict[int, np.ndarray] = {}
        final_critic: dict[int, np.ndarray] = {}
        if self.central is not None:
            self.central.track(carry)  # the global states of this result, before its inputs are built
        if ended.any():
            truncated = np.flatnonzero(truncations & ~terminals & self.buffer.pending[rows])
            for k in truncated:
                final_obs[int(k)] = carry.infos[k]["final_observation"]
            if self.central is not None and len(truncated):
                finals = self.central.final_rows(carry, truncated).cpu().numpy()
                final_critic = {int(k): finals[j] for j, k in enumerate(truncated)}
            self._record_episodes(carry, ended, ended)
        critic = None
        if self.central is not None and self.buffer.pending[rows].any():
            critic = self._critic_array(carry, slice(None))
        self.buffer.finish(rows, self._scaled_rewards(carry.rewards), terminals, truncations, carry.masks, carry.obs,
                           carry.action_masks, final_obs, critic, final_critic)
        self._record_results(carry)
        self._times["inference"] += time.perf_counter() - t

    def collect(self) -> None:
        """``horizon`` vector steps, each followed by the gradient steps its data pays for (``utd_ratio``)."""
        if self._carry is None:
            self._start()
        carry = self._carry
        acted_before = self._acted
        for _ in range(self.config.horizon):
            # a step and its gradient steps are never cut in half by Ctrl-C/SIGTERM (a second one stops at once):
            # the replay ring and the weights stay consistent for the checkpoint an interrupt writes
            with deferred_signals():
                if not carry.acted:
                    self._act(carry)
                self._gradient_steps(self._acted - acted_before)
                acted_before = self._acted
                carry = self._recv()
                self._finish(carry)
                self._carry = carry

    # ---- learning ----------------------------------------------------------------------------------------------

    def _gradient_steps(self, new_steps: int) -> None:
        """The gradient steps owed to ``new_steps`` agent steps (none before ``learning_starts``)."""
        cfg = self.config
        # the buffer's fill counts too: a run resumed without its replay refills learning_starts transitions first
        # (less the decisions still pending or in n-step chains, at most n_step per row)
        if self.global_step + self._acted < cfg.learning_starts or self.buffer.size < max(
                1, min(cfg.learning_starts, cfg.replay_size) - self.num_rows * cfg.n_step):
            return
        self._owed += cfg.utd_ratio * new_steps
        n = int(self._owed)
        if n == 0:
            return
        self._owed -= n
        t = time.perf_counter()
        sums = self._stat_sums
        for _ in range(n):
            batch = self.buffer.sample(cfg.minibatch_size, self.generator, self.device)
            stats = sac_update(self.policy, self.optimizer, batch, tau=cfg.tau, target_entropy=self.target_entropy)
            for name, value in stats.items():
                sums[name] = sums[name] + value if name in sums else value
        self._stat_steps += n
        self._times["learn"] += time.perf_counter() - t

    def learn(self) -> dict[str, float]:
        """Close one update (``horizon`` vector steps and their gradient steps): count its agent steps and return
        the mean statistics of its gradient steps (``{}`` before learning starts) plus the learning rate."""
        stats = {name: float(value) / self._stat_steps for name, value in self._stat_sums.items()}
        if self._stat_steps:
            stats["gradient_steps"] = float(self._stat_steps)
        self._stat_sums, self._stat_steps = {}, 0
        self.global_step += self._acted
        self._acted = 0
        self.update += 1
        lr = self.learning_rate()
        self.optimizer.set_learning_rate(lr)
        stats["learning_rate"] = lr
        return stats

    # ---- checkpoints -------------------------------------------------------------------------------------------

    def save_interrupted(self) -> Path | None:
        """After Ctrl-C or SIGTERM. SAC learns during :meth:`collect`, so the weights, optimizers and replay are
        already past the last completed update: close the partial update (its agent steps counted) and save it
        like any other update; the envs restart from a fresh reset on resume."""
        if self._acted:
            self.global_step += self._acted
            self._acted = 0
            self.update += 1
        return super().save_interrupted()

    def checkpoint_payload(self) -> dict[str, Any]:
        payload = super().checkpoint_payload()
        payload["sac"] = {"replay": self.buffer.state_dict() if self.config.save_replay else None,
                          "owed": self._owed,
                          "central": None if self.central is None else self.central.state_dict()}
        return payload

    def _restore_algorithm(self, payload: dict[str, Any]) -> None:
        saved = payload.get("sac") or {}
        self._owed = float(saved.get("owed", 0.0))
        if self.central is not None and saved.get("central") is not None:
            self.central.load_state_dict(saved["central"])
        if saved.get("replay") is not None:
            self.buffer.load_state_dict(saved["replay"])
        else:
            log.warning("resume: the checkpoint holds no replay buffer (save_replay=False), so it refills from "
                        "scratch; training continues, but not exactly as an uninterrupted run")

    def restore(self, path: Any) -> None:
        super().restore(path)
        if not self.config.save_replay:
            self.exact_resume = False
