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
from shoal.train.core.ppo import SINGLE_LEARNER
from shoal.train.core.replay import ReplayBuffer
from shoal.train.core.sac import SACOptimizers, sac_update
from shoal.train.loop.env_result import Carry
from shoal.train.loop.trainer import Trainer
from shoal.train.runs.logger import LogRecord

__all__ = ["SACTrainer"]

log = logging.getLogger(__name__)

#: Refuse a replay buffer larger than this fraction of the machine's memory (numpy reserves it lazily, so an
#: oversized buffer would otherwise fail hours later, when it fills).
_MAX_MEMORY_FRACTION = 0.8


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class SACTrainer(Trainer):
    """Soft actor-critic (Box or Discrete actions; single-agent, or parameter-shared over agent slots).

    Args:
        config: the configuration (``algo="sac"``).
        env_fn: env constructor, as for :class:`~shoal.train.loop.trainer.Trainer`.
        policy: a :class:`~shoal.policies.sac.SACPolicy` (default: built from the env and the config).
        callbacks: called with every :class:`~shoal.train.runs.logger.LogRecord`.
    """

    loss_names = ("q_loss", "actor_loss", "alpha", "entropy", "q_mean", "gradient_steps")

    def __init__(self, config: TrainConfig, env_fn: Callable[[], Any] | None = None,
                 policy: nn.Module | None = None, callbacks: Sequence[Callable[[LogRecord], None]] = ()) -> None:
        if config.algo != "sac":
            raise APIUsageError(f"SACTrainer trains algo='sac', got algo={config.algo!r}")
        super().__init__(config, env_fn=env_fn, policy=policy, callbacks=callbacks)

    def _default_policy(self, policy_cls: Any, **extra: Any) -> nn.Module:
        cfg = self.config
        return SACPolicy.from_env(self.vecenv, hidden_size=cfg.hidden_size,
                                  num_agent_ids=self.vecenv.agents_per_env if cfg.agent_ids else 0,
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
        self.buffer = ReplayBuffer(cfg.replay_size, self.num_rows, self.agents_per_env, vec.obs_layout.flat_size,
                                   vec.obs_layout.flat_dtype, tuple(layout.flat_shape), layout.flat_dtype,
                                   mask_width, gamma=cfg.gamma, n_step=cfg.n_step)
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
        self._replay_summary = (f"replay buffer: {cfg.replay_size:,} transitions of {row_bytes:,}-byte observations, "
                                f"{memory / 2**20:,.1f} MiB")
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

    # ---- acting and storage ------------------------------------------------------------------------------------

    def _random_actions(self, carry: Carry) -> np.ndarray:
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

    def _act(self, carry: Carry) -> None:
        t = time.perf_counter()
        rows, masks = carry.rows, carry.masks
        if self.global_step + self._acted < self.config.learning_starts:
            actions = self._random_actions(carry)
        else:
            actions = self.acting.act(carry.obs, rows, masks, action_masks=carry.action_masks).env_actions
        self._record_decisions(carry, masks, actions)
        if masks.all():
            self.buffer.act(rows, carry.obs, actions, carry.action_masks)
            self._acted += len(rows)
        elif masks.any():
            live = np.flatnonzero(masks)
            self.buffer.act(rows[live], carry.obs[live], actions[live],
                            None if carry.action_masks is None else carry.action_masks[live])
            self._acted += len(live)
        self._times["inference"] += time.perf_counter() - t
        t = time.perf_counter()
        self.vecenv.send(actions)
        self._times["env"] += time.perf_counter() - t
        carry.acted = True

    def _finish(self, carry: Carry) -> None:
        """Complete the pending decisions answered by ``carry`` into transitions; record finished episodes."""
        t = time.perf_counter()
        rows, terminals, truncations = carry.rows, carry.terminals, carry.truncations
        ended = terminals | truncations
        final_obs: dict[int, np.ndarray] = {}
        if ended.any():
            for k in np.flatnonzero(truncations & ~terminals & self.buffer.pending[rows]):
                final_obs[int(k)] = carry.infos[k]["final_observation"]
            self._record_episodes(carry, ended, ended)
        self.buffer.finish(rows, self._scaled_rewards(carry.rewards), terminals, truncations, carry.masks, carry.obs,
                           carry.action_masks, final_obs)
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
                          "owed": self._owed}
        return payload

    def _restore_algorithm(self, payload: dict[str, Any]) -> None:
        saved = payload.get("sac") or {}
        self._owed = float(saved.get("owed", 0.0))
        if saved.get("replay") is not None:
            self.buffer.load_state_dict(saved["replay"])
        else:
            log.warning("resume: the checkpoint holds no replay buffer (save_replay=False), so it refills from "
                        "scratch; training continues, but not exactly as an uninterrupted run")

    def restore(self, path: Any) -> None:
        super().restore(path)
        if not self.config.save_replay:
            self.exact_resume = False
