"""Offline training on the shared loop: gradient steps on a recorded dataset, online evaluation on the vector env.

    result = shoal.train.train(TrainConfig(env="CartPole-v1", algo="bc", total_steps=5_000), dataset=dataset)

:class:`OfflineTrainer` is a :class:`~shoal.train.loop.trainer.Trainer` that collects nothing. It keeps the loop's
vector env, policy construction, logging, checkpoints, Ctrl-C handling, the final evaluation and the command line,
and replaces the algorithm's parts:

* **data**: the dataset (:func:`~shoal.train.offline.data.resolve_dataset`), checked against the env's layouts
  before anything is learned, sampled by a :class:`~shoal.train.core.transitions.TransitionSampler`;
* **learning**: one *update* is ``horizon`` gradient steps (:meth:`OfflineTrainer.gradient_step` on
  ``minibatch_size`` transitions each); ``total_steps`` counts gradient steps, so ``global_step`` does too;
* **evaluation**: every ``eval_interval`` updates and after the last one, the policy plays one episode in each of
  the vector env's ``num_envs`` envs with its most likely actions
  (:func:`~shoal.train.runs.evaluate.evaluate_vecenv`); those returns are the logged ``charts/episode_return``.

An algorithm subclasses it: :meth:`OfflineTrainer.setup_algorithm` (optimizer, extra networks) and
:meth:`OfflineTrainer.gradient_step`, :meth:`OfflineTrainer.make_sampler` when it learns from something other than
single transitions, plus :meth:`checkpoint_payload` / :meth:`_restore_algorithm` for state kept
outside the policy and the optimizer (:class:`~shoal.train.offline.bc.BCTrainer`,
:class:`~shoal.train.offline.iql.IQLTrainer`).

Resume is exact: every evaluation starts from a reset with a fixed seed and deterministic actions, so nothing
about the envs needs saving; the minibatches come from the trainer's generator, saved with the checkpoint. A
checkpoint records the dataset's fingerprint: resuming on other data is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from shoal.datasets import OfflineDataset
from shoal.errors import APIUsageError, CheckpointError, EpisodeLimitError
from shoal.policies import Policy
from shoal.train.config import OFFLINE_ALGOS, TrainConfig
from shoal.train.core.ppo import SINGLE_LEARNER, make_optimizer
from shoal.train.core.transitions import TransitionSampler
from shoal.train.loop.trainer import Trainer
from shoal.train.offline.data import check_dataset, dataset_fingerprint, resolve_dataset
from shoal.train.runs.evaluate import evaluate_vecenv
from shoal.train.runs.logger import LogRecord

__all__ = ["OfflineTrainer"]

log = logging.getLogger(__name__)

#: The seed offset of online evaluations (the same as the evaluation after training).
_EVAL_SEED_OFFSET = 10_007
#: Steps per env an online evaluation during training plays at most: bounded well below the final evaluation's
#: limit, as an env whose episodes never end would otherwise hold up training (with Ctrl-C deferred) for long.
ONLINE_EVAL_MAX_STEPS = 5_000


class OfflineTrainer(Trainer):
    """The base of the offline algorithms (see the module docstring).

    Args:
        config: the configuration (an offline ``algo``).
        env_fn: env constructor of the evaluation envs, as for :class:`~shoal.train.loop.trainer.Trainer`.
        policy: the policy to train (default: built from the env and the config).
        callbacks: called with every :class:`~shoal.train.runs.logger.LogRecord`.
        dataset: the recorded data; None reads the file ``config.dataset``.

    Raises:
        APIUsageError: no dataset given.
        DatasetError: a dataset file that cannot be read, or a dataset that does not fit the env (the message names
            the difference).
    """

    updates_observation_stats = False  # no PPO update: running observation statistics would stay empty

    #: The ``algo`` values this trainer runs.
    algos: tuple[str, ...] = OFFLINE_ALGOS
    loss_names = ("policy_loss", "entropy")

    def __init__(self, config: TrainConfig, env_fn: Callable[[], Any] | None = None,
                 policy: nn.Module | None = None, callbacks: Sequence[Callable[[LogRecord], None]] = (), *,
                 dataset: OfflineDataset | None = None) -> None:
        if config.algo not in self.algos:
            raise APIUsageError(f"{type(self).__name__} trains algo in {list(self.algos)}, got algo={config.algo!r}")
        # read before any env is built: a missing file fails fast
        self.dataset, self.dataset_source = resolve_dataset(config.resolved(), dataset)
        super().__init__(config, env_fn=env_fn, policy=policy, callbacks=callbacks)

    # ---- setup ---------------------------------------------------------------------------------------------

    def _setup_learning(self) -> None:
        cfg, dataset = self.config, self.dataset
        name = getattr(self.env_fn, "name", None)  # an env named by the config (an EnvFn), else a given env_fn
        check_dataset(dataset, self.vecenv, self.dataset_source, repr(name) if isinstance(name, str) else "the env")
        self.fingerprint = dataset_fingerprint(dataset)
        self.loss_fn = None
        self.reducer = SINGLE_LEARNER
        self.buffer = None  # nothing collected: no rollout storage
        self.all_rows = np.arange(self.num_rows, dtype=np.int64)
        self.sampler = self.make_sampler()
        self.setup_algorithm()
        log.info("%s", self.describe()[0])
        if cfg.eval_interval == 0:
            log.info("eval_interval=0: no online evaluation during training")

    def make_sampler(self) -> Any:
        """What the minibatches are drawn from: single transitions (:class:`TransitionSampler`, rewards scaled by
        ``reward_scale`` / ``reward_clip``) unless an algorithm learns from something else, e.g. windows of
        episodes."""
        return TransitionSampler(self.dataset, self.device, rewards=self._scaled_rewards(self.dataset.rewards),
                                 agent_ids=bool(self.num_agent_ids))

    def sample_batch(self) -> Any:
        """The next minibatch: ``minibatch_size`` draws of :attr:`sampler` by the trainer's generator (saved with
        every checkpoint, so a resumed run draws the same ones)."""
        return self.sampler.sample(self.config.minibatch_size, self.generator)

    def setup_algorithm(self) -> None:
        """The algorithm's part of the setup: ``self.optimizer`` (saved with every checkpoint) and any network
        besides the policy. The default: Adam over the policy's parameters."""
        self.optimizer = make_optimizer(self.policy, self.config)

    def _require_policy(self, what: str) -> Policy:
        """The policy as a :class:`~shoal.policies.Policy` (the default network), or a clear error."""
        if not isinstance(self.policy, Policy):
            raise APIUsageError(f"algo={self.config.algo!r} trains {what} of the default shoal.policies.Policy, got "
                                f"{type(self.policy).__name__}; leave policy=None or build it with "
                                "Policy.from_env(vecenv)")
        return self.policy

    def describe(self) -> list[str]:
        d = self.dataset
        returns = d.episode_returns()
        return [f"dataset: {d.num_episodes:,} episodes, {d.num_steps:,} steps, episode return {returns.mean():.2f} "
                f"(min {returns.min():.2f}, max {returns.max():.2f}) from {self.dataset_source}"]

    def _start_learner(self) -> None:
        """Offline algorithms learn in this process, in :meth:`learn`."""

    # ---- the loop's parts ----------------------------------------------------------------------------------

    def collect(self) -> None:
        """Nothing to collect: the data is recorded."""

    def gradient_step(self, batch: Any) -> dict[str, Tensor]:
        """One gradient step on ``batch`` (a :meth:`sample_batch`); returns detached scalar statistics (averaged over
        the update)."""
        raise NotImplementedError

    def learn(self) -> dict[str, float]:
        """One update: ``horizon`` gradient steps (fewer if the budget ends sooner), then an online evaluation when
        one is due. Returns the mean statistics of the gradient steps and the learning rate."""
        cfg = self.config
        steps = min(cfg.horizon, cfg.total_steps - self.global_step)
        lr = self.learning_rate()
        self.set_learning_rate(lr)
        t = time.perf_counter()
        sums: dict[str, Tensor] = {}
        for _ in range(steps):
            stats = self.gradient_step(self.sample_batch())
            for name, value in stats.items():
                sums[name] = sums[name] + value if name in sums else value
        self.global_step += steps
        self.update += 1
        self._times["learn"] += time.perf_counter() - t
        out = {name: float(value) / max(steps, 1) for name, value in sums.items()}
        out["learning_rate"] = lr
        if cfg.eval_interval and (self.update % cfg.eval_interval == 0 or self.global_step >= cfg.total_steps):
            self.evaluate_online()
        return out

    def set_learning_rate(self, learning_rate: float) -> None:
        """Set the learning rate of every optimizer (``anneal_lr`` decays it over the gradient steps)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate

    def evaluate_online(self) -> dict[str, Any]:
        """Play one episode in each env of the vector env with the most likely actions (at most
        :data:`ONLINE_EVAL_MAX_STEPS` steps per env); their returns and lengths replace the logged episode
        statistics. Returns the :func:`~shoal.train.runs.evaluate.evaluate_vecenv` result.

        When no episode ends within the bound, the evaluation is skipped with a warning (training goes on, the
        logged statistics keep their last values) and the result is ``{"error": message, "episodes": 0}``."""
        cfg = self.config
        t = time.perf_counter()
        try:
            result = evaluate_vecenv(self.policy, self.vecenv, self.vecenv.num_envs, seed=cfg.seed + _EVAL_SEED_OFFSET,
                                     deterministic=True, device=self.device, max_steps=ONLINE_EVAL_MAX_STEPS)
        except EpisodeLimitError as exc:  # no episode ended: the env's doing, not the training's
            env = getattr(self.env_fn, "name", cfg.env)
            log.warning("skipped the online evaluation at step %d (training goes on): no episode of %s ended within "
                        "%s steps per env with the most likely actions; give the env a time limit (e.g. --env-kwargs "
                        "'{\"max_episode_steps\": 1000}' for a Gymnasium id, or a TimeLimit wrapper in env_fn) to "
                        "evaluate it during training", self.global_step, env, f"{ONLINE_EVAL_MAX_STEPS:,}")
            return {"error": str(exc), "episodes": 0}
        finally:
            self._times["env"] += time.perf_counter() - t
        self.episode_returns.clear()
        self.episode_lengths.clear()
        self.episode_returns.extend(result["returns"])
        self.episode_lengths.extend(float(n) for n in result["lengths"])
        self.episodes += result["episodes"]
        return result

    # ---- checkpoints ---------------------------------------------------------------------------------------

    def checkpoint_payload(self) -> dict[str, Any]:
        payload = super().checkpoint_payload()
        payload["offline"] = {"dataset": self.fingerprint, "episodes": self.dataset.num_episodes,
                              "steps": self.dataset.num_steps, "source": self.dataset_source}
        return payload

    def _restore_algorithm(self, payload: dict[str, Any]) -> None:
        saved = payload.get("offline") or {}
        if saved.get("dataset") != self.fingerprint:
            raise CheckpointError(
                f"cannot resume: the run was trained on another dataset ({saved.get('source')}: "
                f"{saved.get('episodes')} episodes, {saved.get('steps')} steps) than {self.dataset_source} "
                f"({self.dataset.num_episodes} episodes, {self.dataset.num_steps} steps); resume with the run's own "
                "dataset, or start a new run directory"
            )

    def _restore_envs(self, payload: dict[str, Any], path: Path) -> None:
        """Nothing to restore: every online evaluation starts from a fresh, seeded reset."""
        self.exact_resume = True
