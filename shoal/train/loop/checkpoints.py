"""The trainer's checkpoints: what a checkpoint holds, writing it, and continuing a run from one.

:class:`CheckpointMixin` is part of :class:`shoal.train.loop.trainer.Trainer`; it reads and sets the trainer's state
(policy, optimizer, counters, RNG, rollout carry-over, envs). Subclasses extend :meth:`checkpoint_payload` and
:meth:`_restore_algorithm` (MAPPO's value normalization, SAC's replay buffer) or :meth:`_load_payload` (one part per
data-parallel learner).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shoal.errors import CheckpointError
from shoal.interrupts import deferred_signals
from shoal.policies.policy import Policy, check_saved_config
from shoal.train.config import ENV_PRESETS, TrainConfig
from shoal.train.loop.env_result import EnvResult
from shoal.train.runs.checkpoint import (
    FORMAT,
    check_signature,
    checkpoint_path,
    env_signature,
    load_checkpoint,
    restore_env_state,
    save_checkpoint,
    snapshot_env_state,
)

__all__ = ["RESUMABLE_CHANGES", "CheckpointMixin"]

log = logging.getLogger("shoal.train.loop.trainer")

#: Config fields that may differ between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = {
    "total_steps",
    "env_timeout",
    "run_dir",
    "resume",
    "overwrite",
    "log_interval",
    "checkpoint_interval",
    "keep_checkpoints",
    "tensorboard",
    "wandb",
    "wandb_project",
    "wandb_mode",
    "eval_episodes",
    "record_dataset",  # a resumed run records from its resume point, to a new path
    "device",
    "trace_actor",
    "trace_learner",
    "torch_threads",
    "stats_window",
    "ray_address",
    "dataset",  # offline runs: the checkpoint's dataset fingerprint says whether it is the same data
    "eval_interval",
    "league_pool_size",  # the next snapshot trims the pool to the new size
}


def _warn_new_budget(source: Path, saved: TrainConfig, cfg: TrainConfig, step: int) -> None:
    """Say what resuming ``source`` (at agent step ``step``) with another ``total_steps`` changes.

    The new budget is the one that counts: schedules over ``total_steps`` (the learning-rate decay, the
    prioritized-sampling beta) are recomputed over it, so they jump at the resume point. Keeping the old schedule
    instead would train an extended run at a learning rate of 0 once the old budget is spent.
    """
    old, new = saved.total_steps, cfg.total_steps
    if step >= new:
        log.warning("resume from %s: the run is at step %s, which --total-steps %s does not exceed: there is "
                    "nothing left to train", source, f"{step:,}", f"{new:,}")
        return
    changes = []
    if cfg.anneal_lr:
        lr = cfg.learning_rate
        was, now = lr * max(0.0, 1.0 - step / old), lr * max(0.0, 1.0 - step / new)
        changes.append(f"the learning rate, decaying linearly to 0 over total_steps, continues at {now:.3g} where "
                       f"the original schedule was at {was:.3g}")
    if cfg.prio_alpha > 0:
        changes.append("the prioritized-sampling beta is annealed over the new budget")
    if changes:
        log.warning("resume from %s at step %s with total_steps %s instead of the run's %s: %s; training will not "
                    "match an uninterrupted run of either budget. Resume without --total-steps to keep the "
                    "original schedule.", source, f"{step:,}", f"{new:,}", f"{old:,}", "; ".join(changes))


class CheckpointMixin:
    """Checkpoint writing and resuming for :class:`~shoal.train.loop.trainer.Trainer` (see the module docstring)."""

    #: Whether an interrupted ``train()`` saves its last completed update (:meth:`save_interrupted`).
    saves_on_interrupt = True

    # The trainer's state this mixin uses (set by Trainer.__init__).
    config: TrainConfig
    vecenv: Any
    policy: Any
    optimizer: Any
    device: torch.device
    run_dir: Path | None

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (see :mod:`shoal.train.runs.checkpoint`)."""
        from shoal import __version__

        carry = self._carry
        exact_env = None
        if carry is not None and not carry.acted:
            exact_env = snapshot_env_state(self.vecenv)
        payload = {
            "format": FORMAT,
            "shoal_version": __version__,
            "config": self.config.to_dict(),
            "env_signature": env_signature(self.vecenv),
            "policy_class": f"{type(self.policy).__module__}.{type(self.policy).__qualname__}",
            "policy_config": dict(getattr(self.policy, "config", {})),
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "global_step": self.global_step,
            "update": self.update,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "generator": self.generator.get_state(),
            },
            "trainer": {
                "buffer": None if self.buffer is None else self.buffer.carry_state(),
                "rnn_state": None
                if self.rnn_state is None
                else tuple(s.detach().cpu().clone() for s in self.rnn_state),
                "carry": None if carry is None else carry.state(),
                "episode_returns": list(self.episode_returns),
                "episode_lengths": list(self.episode_lengths),
                "episodes": self.episodes,
                "elapsed": self._elapsed(),
                "reward_norm": None if self.reward_norm is None else self.reward_norm.state_dict(),
            },
            "env_state": exact_env,
            "league": None if self.league is None else self.league.state_dict(),
        }
        if self.learner is not None:  # the learner's weights, optimizer and shuffling after its newest update
            learner = self.learner.state_dict()
            payload["model"] = learner["model"]
            payload["optimizer"] = learner["optimizer"]
            payload["rng"]["generator"] = learner["generator"]
            if self.learner.ahead:  # a learner process: the acting policy is one update behind it
                payload["acting_model"] = self.policy.state_dict()
                payload["learner_value_norm"] = learner["value_norm"]  # MAPPO; MAPPOTrainer saves the acting one
                payload["learner_ahead"] = True
        return payload

    def save(self) -> Path | None:
        """Write a checkpoint of the current update into ``run_dir`` (atomically); None without a run_dir."""
        if self.run_dir is None:
            return None
        if self.league is not None:  # snapshots and league.json first: a checkpoint never lacks its pool
            self.league.save(self.run_dir)
        path = save_checkpoint(
            checkpoint_path(self.run_dir, self.update),
            self.checkpoint_payload(),
            keep=self.config.keep_checkpoints,
        )
        if self.league is not None:  # then the files of snapshots no kept checkpoint names
            self.league.prune(self.run_dir)
        self.last_checkpoint = path
        log.debug("checkpoint %s", path)
        return path

    def save_interrupted(self) -> Path | None:
        """After Ctrl-C or SIGTERM: write a checkpoint of the last completed update unless it is written already;
        returns :attr:`last_checkpoint`.

        The rollout under way is left out (its envs, pending transitions and LSTM states are mid-way), so a
        resume from this checkpoint restarts the envs from a fresh reset. A failure to write is logged, not
        raised: the interrupt is what the caller reports, with the previous checkpoint.
        """
        if self.run_dir is None or not self.saves_on_interrupt:
            return self.last_checkpoint
        if self.last_checkpoint == checkpoint_path(self.run_dir, self.update):
            return self.last_checkpoint
        carry, self._carry = self._carry, None  # checkpoint_payload then saves neither the carry nor the envs
        try:
            with deferred_signals():  # a second Ctrl-C still stops at once (the write is atomic)
                self.save()
        except Exception as exc:
            log.warning("interrupted: cannot write a checkpoint of update %d (%s: %s); the last checkpoint is %s",
                        self.update, type(exc).__name__, exc, self.last_checkpoint)
        finally:
            self._carry = carry
        return self.last_checkpoint

    def _check_compatible(self, payload: dict[str, Any], source: Path) -> None:
        # resolved as this run is: a run saved before its algorithm defaults were filled in compares equal
        saved = TrainConfig.from_dict(payload["config"]).resolved(self.agents_per_env)
        cfg = self.config
        check_signature(payload["env_signature"], env_signature(self.vecenv), str(source), cfg.env)
        if saved.total_steps != cfg.total_steps:
            _warn_new_budget(source, saved, cfg, int(payload["global_step"]))
        differing = [
            f
            for f in saved.to_dict()
            if f not in RESUMABLE_CHANGES and saved.to_dict()[f] != cfg.to_dict()[f]
        ]
        if differing:
            detail = ", ".join(f"{f}={saved.to_dict()[f]!r} (now {cfg.to_dict()[f]!r})" for f in differing)
            hint = "Resume with the run's own settings (omit those flags), or start a new run directory."
            preset = {} if cfg.preset == "none" else ENV_PRESETS.get(cfg.algo, {}).get(cfg.env, {})
            from_preset = [f for f in differing if f in preset and cfg.to_dict()[f] == preset[f]]
            if from_preset and saved.preset == "none":
                # the run predates this env's preset: the new values came from it, not from the caller
                hint = (f"{', '.join(from_preset)} now come from this version's preset for {cfg.env}, which the run "
                        "predates: resume with --preset none (preset='none') or with the run's values. " + hint)
            elif from_preset:
                # the run took an earlier version of the preset (MountainCar-v0 scaled its observations by a
                # wrapper before obs_norm), or a preset="auto" run started before the env had one (CartPole-v1):
                # only the run's own values resume it
                values = ", ".join(f"{f}={saved.to_dict()[f]!r}" for f in differing)
                hint = (f"{', '.join(from_preset)} now come from this version's preset for {cfg.env}, which differs "
                        f"from what the run started with: resume with the run's values ({values}). " + hint)
            raise CheckpointError(f"cannot resume {source}: the run was started with {detail}. {hint}")
        mine = dict(getattr(self.policy, "config", {}))
        if mine and isinstance(self.policy, Policy):
            check_saved_config(payload["policy_config"], str(source))
        if payload["policy_config"] != mine:
            raise CheckpointError(
                f"{source} holds a policy built with {payload['policy_config']}, but this run builds {mine}"
            )

    def _restore_algorithm(self, payload: dict[str, Any]) -> None:
        """Restore what an algorithm adds to :meth:`checkpoint_payload` (before the envs restart)."""

    def _load_payload(self, path: Path) -> dict[str, Any]:
        """Read the checkpoint to continue from (data-parallel learners take their rank's part of it)."""
        return load_checkpoint(path, map_location=self.device)

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at ``path`` (model, optimizer, RNG, rollout carry-over, envs)."""
        payload = self._load_payload(path)
        self._check_compatible(payload, path)
        try:
            self.policy.load_state_dict(payload.get("acting_model", payload["model"]))
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: the saved weights do not fit this policy: {exc}") from exc
        if "acting_model" in payload:  # async_learner: the learner continues from its own weights
            self._learner_weights = payload["model"]
            self._learner_norm = payload.get("learner_value_norm")
            self._learner_ahead = bool(payload.get("learner_ahead", True))
        self.optimizer.load_state_dict(payload["optimizer"])
        self._restore_algorithm(payload)
        self.global_step = int(payload["global_step"])
        self.update = int(payload["update"])
        rng = payload["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.generator.set_state(rng["generator"].cpu())
        trainer = payload["trainer"]
        self.episode_returns.extend(trainer["episode_returns"])
        self.episode_lengths.extend(trainer["episode_lengths"])
        self.episodes = int(trainer["episodes"])
        self._elapsed_before = float(trainer["elapsed"])
        if self.reward_norm is not None and trainer.get("reward_norm") is not None:
            self.reward_norm.load_state_dict(trainer["reward_norm"])
        self.last_checkpoint = path
        if self.league is not None:
            self.league.load_state_dict(payload.get("league"))
        self._restore_envs(payload, path)

    def _restore_envs(self, payload: dict[str, Any], path: Path) -> None:
        """Put the envs and the rollout carry-over back: a fresh reset, then (serial backend, picklable envs) the
        snapshot of where they were; without one the envs restart and :attr:`exact_resume` turns False."""
        trainer = payload["trainer"]
        t = time.perf_counter()
        self.vecenv.async_reset(self.env_seed)
        batch = self.vecenv.recv()
        self._times["env"] += time.perf_counter() - t
        saved = trainer["carry"]
        if (
            payload.get("env_state") is not None
            and saved is not None
            and not saved["acted"]
            and restore_env_state(self.vecenv, payload["env_state"])
        ):
            carry = EnvResult(batch, self._rows(batch.env_ids))
            for name in (
                "obs",
                "rewards",
                "terminals",
                "truncations",
                "masks",
                "action_masks",
                "agent_types",
            ):
                if saved[name] is not None:
                    getattr(carry, name)[...] = saved[name]
            carry.infos = [{} for _ in carry.rows]  # outcomes were already applied before the checkpoint
            self._carry = carry
            self.buffer.load_carry_state(trainer["buffer"])
            if self.rnn_state is not None and trainer["rnn_state"] is not None:
                self.rnn_state = tuple(s.to(self.device) for s in trainer["rnn_state"])  # type: ignore[assignment]
            self.exact_resume = True
        else:
            log.warning(
                "resume from %s: the envs could not be restored (backend %r, unpicklable envs, an env snapshot "
                "not signed on this machine or by this Python, or one that no longer loads), so they "
                "restart from a fresh reset; training continues, but not exactly as an uninterrupted run",
                path,
                self.config.backend,
            )
            self.exact_resume = False
            if self.reward_norm is not None:  # fresh episodes: their discounted returns start at 0
                self.reward_norm.restart_episodes()
            self._carry = EnvResult(batch, self._rows(batch.env_ids))
            if self.league is not None:  # fresh envs: every env gets a new seating
                self.league.reset_envs()
            self._finish(self._carry)
