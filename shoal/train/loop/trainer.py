"""The training loop: rollout -> PPO update -> logging -> checkpoint, until the step budget is spent.

    result = shoal.train.train(TrainConfig(env="CartPole-v1", total_steps=150_000, run_dir="runs/cartpole"))

One :class:`Trainer` owns the vector env, the policy, the optimizer and the :class:`RolloutBuffer`.

Rollout (per env result)
    1. *act*: the live rows (``masks``) of the last result run the policy (LSTM state per row, zeroed where an
       episode starts); their pending transitions go to the buffer; actions are sent.
    2. *finish*: the next result's rewards/terminals/truncations complete each row's pending transition; a
       truncated episode gets the value of ``infos[r]["final_observation"]`` as its bootstrap.
    3. the rollout ends once the buffer holds ``batch_size`` transitions; rows still waiting for a next value
       get it from the current observation. With an asynchronous backend the next actions are sent before
       learning, so the envs step while the learner updates (those transitions belong to the next rollout).

Resume (:mod:`shoal.train.loop.checkpoints`)
    Checkpoints hold the model, optimizer, RNG states, the rollout carry-over and, for the serial backend with
    picklable envs, a snapshot of the envs: ``resume`` then continues exactly as an uninterrupted run would.
    Otherwise the envs restart from a fresh reset (logged as a warning).

Extending (MAPPO): :meth:`Trainer.critic_inputs` is the single place where a centralized critic input is built
from the env result; PPO returns None (the critic reads the actor's features).
:class:`shoal.train.mappo.trainer.MAPPOTrainer`
overrides it, :meth:`Trainer._values` (``final=True``: final observations) and sets :attr:`value_norm`.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shoal import vector
from shoal.datasets.minari_io import check_output_path, read_metadata, save_dataset
from shoal.datasets.recorder import EpisodeRecorder
from shoal.emulation.base import action_mask_width
from shoal.errors import APIUsageError, DatasetError
from shoal.interrupts import deferred_signals
from shoal.policies import Policy
from shoal.policies.policy import check_saved_config
from shoal.train.acting import RowActor
from shoal.train.config import ENV_PRESETS, LEAGUE_POOL_SIZE, TrainConfig
from shoal.train.core.device import resolve_device
from shoal.train.core.learner import InProcessLearner, Learner
from shoal.train.core.ppo import SINGLE_LEARNER, Reducer, make_optimizer
from shoal.train.core.reward_norm import RewardNormalizer
from shoal.train.core.rollout import RolloutBuffer
from shoal.train.loop.checkpoints import CheckpointMixin
from shoal.train.loop.env_result import EnvResult
from shoal.train.loop.result import TrainResult
from shoal.train.runs.agent_stats import AgentStats, GameTracker
from shoal.train.runs.checkpoint import (
    checkpoint_path,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
)
from shoal.train.runs.evaluate import evaluate_after_training
from shoal.train.runs.logger import CSVSink, LogRecord, RunLogger, TensorBoardSink, WandbSink
from shoal.train.runs.resolve import EnvFn, resolve_env
from shoal.train.selfplay.league import League
from shoal.train.speed.learner_process import LearnerProcess
from shoal.train.speed.traced_loss import loss_fn_for
from shoal.vector.ray import connect_ray

__all__ = ["Trainer"]

log = logging.getLogger(__name__)

Callback = Callable[[LogRecord], None]


def _backend_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Extra keywords of :func:`shoal.vector.make` for ``config``'s backend: for Ray, connect first (to
    ``config.ray_address``, or a local instance) and spread the env actors over the cluster's nodes."""
    if config.backend != "ray":
        return {}
    connect_ray(config.ray_address)
    return {"actor_options": {"scheduling_strategy": "SPREAD"}}


class Trainer(CheckpointMixin):
    """PPO on any emulated env (single-agent, or parameter-shared over every agent slot).

    Args:
        config: the configuration (validated here).
        env_fn: env constructor for the vector env, used as given; default ``resolve_env(config.env,
            config.env_kwargs, wrappers=config.wrappers)`` (:func:`shoal.train.make_trainer` applies
            ``config.wrappers`` to a given one).
        policy: a policy to train; default ``Policy.from_env(vecenv, ...)`` from the config.
        callbacks: called with every :class:`LogRecord` (e.g. the command line's dashboard).
    """

    #: Whether this trainer trains sequence policies (``is_sequence``: the Decision Transformer), which act from a
    #: window of past steps conditioned on a target return; the online algorithms train one-step policies.
    trains_sequences: bool = False
    #: Whether this trainer's updates fold rollouts into a policy's running observation statistics (``obs_norm``;
    #: :func:`~shoal.train.core.ppo.ppo_update` does): others refuse a policy that normalizes by them.
    updates_observation_stats: bool = True

    #: Statistics of an update logged as ``losses/<name>``.
    loss_names: tuple[str, ...] = ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "clipfrac",
                                   "explained_variance", "grad_norm")

    def __init__(
        self,
        config: TrainConfig,
        env_fn: Callable[[], Any] | None = None,
        policy: nn.Module | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.preset = config.preset_fields()  # what the env's preset sets (printed by describe)
        self.config = cfg = config.resolved()  # the env's preset and the algorithm's defaults filled in
        self.device = resolve_device(cfg.device)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self._seed_everything(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.env_fn = env_fn if env_fn is not None else resolve_env(cfg.env, cfg.env_kwargs,
                                                                      wrappers=cfg.wrappers)
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir is not None else None
        self._resume_from: Path | None = None
        if cfg.resume:
            if self.run_dir is None:
                raise APIUsageError("resume=True needs run_dir (the run to continue); give --run-dir")
            self._resume_from = self._find_resume_checkpoint()
            if cfg.league and config.league_pool_size is None and self._resume_from is not None:
                saved = TrainConfig.from_dict(load_checkpoint(self._resume_from, map_location="cpu")["config"])
                size = LEAGUE_POOL_SIZE if saved.league_pool_size is None else saved.league_pool_size
                self.config = cfg = cfg.replace(league_pool_size=size)

        emulate_kwargs = {"max_agents": cfg.max_agents} if cfg.max_agents is not None else None
        self.vecenv = vector.make(
            self.env_fn,
            cfg.num_envs,
            backend=cfg.backend,
            num_workers=cfg.num_workers,
            batch_size=cfg.env_batch_size,
            seed=self.env_seed,
            emulate_kwargs=emulate_kwargs,
            timeout=cfg.env_timeout,
            check_finite=cfg.check_finite,
            **_backend_kwargs(cfg),
        )
        try:
            self._setup(policy, Policy)
        except BaseException:
            self.vecenv.close()
            raise
        self.callbacks = list(callbacks)
        self.logger: RunLogger | None = None

    # ---- setup ---------------------------------------------------------------------------------------------

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _setup(self, policy: nn.Module | None, policy_cls: Any) -> None:
        cfg, vec = self.config, self.vecenv
        self.num_rows = vec.num_agents
        self.agents_per_env = vec.agents_per_env
        self.config = cfg = cfg.resolved(self.agents_per_env)  # batch_size derived (or checked)
        self.batch_size: int = cfg.batch_size  # type: ignore[assignment]
        if policy is None:
            policy = self._default_policy(policy_cls)
        else:
            layout = getattr(policy, "obs_layout", None)
            if layout is not None and (
                layout.flat_size != vec.obs_layout.flat_size or layout.flat_dtype != vec.obs_layout.flat_dtype
            ):
                raise APIUsageError(
                    f"the policy was built for observations {layout} but the env gives "
                    f"{vec.obs_layout}; build it with Policy.from_env(vecenv)"
                )
        normalizes = getattr(getattr(policy, "encoder", None), "normalizes", False)
        if cfg.obs_norm and not (normalizes and callable(getattr(policy, "update_observation_stats", None))):
            source = (f"the preset for {cfg.env} turns it on; pass obs_norm=False (--no-obs-norm) or preset='none'"
                      if "obs_norm" in self.preset else "drop --obs-norm")
            raise APIUsageError(
                f"obs_norm=True, but the policy normalizes no observation leaf: the observations of {cfg.env} "
                f"({vec.obs_layout}) have no float Box leaf, or the given policy was built without it (or has no "
                f"update_observation_stats); {source}, or build the policy with Policy.from_env(vecenv, "
                "obs_norm=True)")
        if normalizes and not self.updates_observation_stats:
            raise APIUsageError(
                f"the policy normalizes observations by running statistics (obs_norm), which algo={cfg.algo!r} never "
                "updates (only PPO and MAPPO updates do); build the policy without obs_norm")
        if getattr(policy, "is_sequence", False) and not self.trains_sequences:
            raise APIUsageError(f"algo={cfg.algo!r} trains policies that act from one step; a "
                                f"{type(policy).__name__} acts from a window of past steps towards a target return "
                                "and learns offline from recorded episodes (shoal.train.core.dt)")
        self.policy = policy.to(self.device)
        self.recurrent = bool(getattr(policy, "is_recurrent", False))
        self.num_agent_ids = int(getattr(policy, "num_agent_ids", 0))
        action_layout = vec.action_layout
        self.continuous = action_layout.kind in ("continuous", "hybrid")
        self.acting = RowActor(self.policy, self.num_rows, self.agents_per_env, self.device,
                               continuous=self.continuous, trace=cfg.trace_actor)
        self._setup_learning()
        #: ``reward_norm``: the running statistics the rewards are divided by (in this process, before the buffer)
        self.reward_norm = RewardNormalizer(self.num_rows, cfg.gamma) if cfg.reward_norm else None
        self.overlap = cfg.backend != "serial"
        self.global_step = 0
        self.update = 0
        self.episode_returns: deque[float] = deque(maxlen=cfg.stats_window)
        self.episode_lengths: deque[float] = deque(maxlen=cfg.stats_window)
        self.episodes = 0
        self._carry: EnvResult | None = None
        self._elapsed_before = 0.0
        self._times = {"env": 0.0, "inference": 0.0, "learn": 0.0}
        self.exact_resume = True
        #: async_learner: the learner process (started by train()), its starting weights when resuming, and
        #: whether it holds weights the acting policy has not loaded yet
        self.learner: Learner | None = None  # started by train() (or the first learn())
        self._learner_weights: dict[str, Tensor] | None = None  # a resumed learner process's own weights
        self._learner_norm: dict[str, Tensor] | None = None
        self._learner_ahead = False  # ... and whether they are newer than the acting policy's
        self.last_checkpoint: Path | None = None
        self.last_stats: dict[str, float] = {}
        #: MAPPO: a ValueNormalizer when the critic predicts normalized values (shoal.train.core.normalize), else None
        self.value_norm: Any = None
        #: per-agent and per-team episode returns (multi-agent envs), or None
        self.agent_stats = AgentStats.for_env(self.env_fn, vec.num_envs, self.agents_per_env, cfg.stats_window)
        #: whole env episodes (games), counted in ``episodes``, ``episode_returns`` and ``episode_lengths``
        self.games = GameTracker(vec.num_envs, self.agents_per_env)
        # Self-play (shoal.train.selfplay.league): which live rows the learner drives, and actions for the others.
        self.league: Any = None
        if cfg.league:
            self.league = League(self)
        #: ``record_dataset``: every decision of the learner's rows as per-slot episodes, written when training ends
        self.recorder: EpisodeRecorder | None = None
        self.dataset_path: Path | None = None
        if cfg.record_dataset is not None:
            self._check_resumed_dataset_path()
            check_output_path(cfg.record_dataset, cfg.overwrite)  # now, not after the whole run
            self.recorder = EpisodeRecorder(vec.obs_layout, vec.action_layout, self.num_rows, self.agents_per_env)

    def _setup_learning(self) -> None:
        """The algorithm's part of the setup: its optimizer, its storage (``self.buffer``) and its loss.

        PPO keeps rollout segments; an off-policy algorithm overrides this with a replay buffer
        (:class:`shoal.train.sac.trainer.SACTrainer`)."""
        cfg, vec = self.config, self.vecenv
        action_layout = vec.action_layout
        self.loss_fn = loss_fn_for(cfg)
        self.reducer: Reducer = SINGLE_LEARNER  # data-parallel learners replace it
        self.optimizer = make_optimizer(self.policy, cfg)
        state = self.acting.state
        state_size = int(state[0].shape[-1]) if state is not None else 0
        mask_width = action_mask_width(action_layout) if action_layout.kind != "continuous" else 0
        self.buffer = RolloutBuffer(
            self.num_rows,
            cfg.horizon,
            self.batch_size,
            (vec.obs_layout.flat_size,),
            vec.obs_layout.flat_dtype,
            tuple(action_layout.flat_shape),
            action_layout.flat_dtype,
            mask_width,
            state_size,
        )
        self.all_rows = self.buffer.all_rows  # the identity of this array marks "every row" (fast paths)

    def describe(self) -> list[str]:
        """Lines about the run's setup worth printing before it starts (the command line prints them): the env
        preset's settings this run takes, and those its own settings replace (e.g. ``--no-obs-norm`` replaces
        MountainCar-v0's observation normalization)."""
        cfg = self.config
        entry = {} if cfg.preset == "none" else ENV_PRESETS.get(cfg.algo, {}).get(cfg.env, {})
        replaced = {name: value for name, value in entry.items()
                    if name not in self.preset and getattr(cfg, name) != value}
        if not entry or not (self.preset or replaced):
            return []
        settings = ", ".join(f"{name} {value}" for name, value in self.preset.items()) or "nothing"
        line = f"preset for {cfg.env} ({cfg.algo}): {settings} (flags override; --preset none for the plain defaults)"
        if replaced:
            line += "; this run's settings replace its " + ", ".join(f"{k} {v}" for k, v in replaced.items())
        return [line]

    def _default_policy(self, policy_cls: Any, **extra: Any) -> nn.Module:
        """``policy_cls.from_env`` with the config's sizes (``extra``: further keywords, e.g. a critic input); a
        resumed run's network choices that the config does not hold come from its checkpoint."""
        cfg = self.config
        return policy_cls.from_env(
            self.vecenv,
            hidden_size=cfg.hidden_size,
            activation=cfg.activation,
            recurrent=cfg.recurrent,
            lstm_size=cfg.lstm_size,
            num_agent_ids=self.vecenv.agents_per_env if cfg.agent_ids else 0,
            **({"obs_norm": True} if cfg.obs_norm else {}),  # (only PPO's and MAPPO's policies take it)
            **{**self._resumed_network(policy_cls), **extra},
        )

    def _resumed_network(self, policy_cls: Any) -> dict[str, Any]:
        """The resumed checkpoint's ``separate_critic`` and ``board_encoder`` (for a :class:`Policy`; else none).

        Defaults the config does not carry can change between versions (board policies share their CNN with the
        critic since connect four trained faster that way): a run saved before keeps the network it was built
        with, so it resumes instead of being refused for a policy config that differs.
        """
        if self._resume_from is None or not (isinstance(policy_cls, type) and issubclass(policy_cls, Policy)):
            return {}
        saved = check_saved_config(load_checkpoint(self._resume_from, map_location="cpu").get("policy_config") or {},
                                   str(self._resume_from))
        return {name: saved[name] for name in ("separate_critic", "board_encoder") if name in saved}

    @property
    def env_seed(self) -> int:
        """Seed of env 0 of this trainer's vector env (env ``i`` gets ``env_seed + i``): ``config.seed``.

        Data-parallel learners offset it per rank (:class:`shoal.train.loop.distributed_trainer.DistributedTrainer`).
        """
        return self.config.seed

    def _check_resumed_dataset_path(self) -> None:
        """``record_dataset`` on resume: refuse a dataset this run recorded before (its first part, or the part of
        an earlier resume), even with ``overwrite``: replacing it would lose those decisions."""
        cfg = self.config
        if self._resume_from is None or self.run_dir is None or cfg.record_dataset is None:
            return
        path = Path(cfg.record_dataset)
        if not path.exists():
            return
        try:
            recorded_by = read_metadata(path).get("run_dir")
        except DatasetError:
            return  # not a dataset this run wrote: check_output_path says what is there
        if recorded_by is not None and Path(recorded_by).resolve() == self.run_dir.resolve():
            raise APIUsageError(
                f"record_dataset={cfg.record_dataset!r} holds a dataset this run recorded before the resume point; "
                "give the resumed run a new path (--record-dataset NEW_PATH): it records from the resume point on, "
                "and both parts can be loaded and trained on"
            )

    def _find_resume_checkpoint(self) -> Path | None:
        assert self.run_dir is not None
        if not list_checkpoints(self.run_dir):
            if (self.run_dir / "config.json").exists():
                log.warning("resume: %s has no checkpoint yet; starting from scratch", self.run_dir)
            return None
        return find_checkpoint(self.run_dir)

    # ---- env plumbing --------------------------------------------------------------------------------------

    def _rows(self, env_ids: np.ndarray) -> np.ndarray:
        if len(env_ids) == self.vecenv.num_envs:
            return self.all_rows
        a = self.agents_per_env
        return (np.asarray(env_ids, np.int64)[:, None] * a + np.arange(a)).reshape(-1)

    def _recv(self) -> EnvResult:
        t = time.perf_counter()
        batch = self.vecenv.recv()
        self._times["env"] += time.perf_counter() - t
        return EnvResult(batch, self._rows(batch.env_ids))

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    def critic_inputs(self, carry: EnvResult, live: np.ndarray | slice) -> Tensor | None:
        """Centralized critic input for the live rows of ``carry`` (None for PPO; MAPPO overrides this)."""
        return None

    # ---- rollout -------------------------------------------------------------------------------------------

    @property
    def rnn_state(self) -> tuple[Tensor, Tensor] | None:
        """The LSTM state of every row, ``(h, c)`` float32 ``[1, num_rows, lstm_size]`` each (None without)."""
        return self.acting.state

    @rnn_state.setter
    def rnn_state(self, state: tuple[Tensor, Tensor] | None) -> None:
        self.acting.state = state

    def _act(self, carry: EnvResult) -> None:
        """Run the policy on ``carry``'s rows, record the live rows' pending transitions, send the actions.

        Every row of the result goes through the policy (a fixed batch shape, so traces are reused); only live
        rows are recorded and advance their LSTM state. Other rows' actions are ignored by the env.
        """
        t = time.perf_counter()
        buffer = self.buffer
        rows, masks = carry.rows, carry.masks if self.league is None else self.league.learner_masks(carry)
        agent_ids = rows % self.agents_per_env if self.num_agent_ids else None
        acted = self.acting.act(carry.obs, rows, masks, starts=buffer.starts[rows] if self.recurrent else None,
                                action_masks=carry.action_masks, critic_obs=self.critic_inputs(carry, slice(None)))
        if masks.all():
            buffer.act(rows, carry.obs, acted.actions, acted.log_probs, acted.values, carry.action_masks, agent_ids,
                       acted.state_before)
        elif masks.any():
            live = np.flatnonzero(masks)
            buffer.act(rows[live], carry.obs[live], acted.actions[live], acted.log_probs[live], acted.values[live],
                       None if carry.action_masks is None else carry.action_masks[live],
                       None if agent_ids is None else agent_ids[live],
                       None if acted.state_before is None else (acted.state_before[0][live],
                                                               acted.state_before[1][live]))
        self._record_decisions(carry, masks, acted.env_actions)
        if self.league is not None:  # the opponents' rows: their actions replace the learner's
            self.league.act(carry, acted.env_actions)
        self._times["inference"] += time.perf_counter() - t
        t = time.perf_counter()
        self.vecenv.send(acted.env_actions)
        self._times["env"] += time.perf_counter() - t
        carry.acted = True

    def _values(self, rows: np.ndarray, obs: np.ndarray, carry: EnvResult | None, final: bool = False) -> np.ndarray:
        """Critic values of ``obs`` for ``rows`` with their current LSTM state (no state update).

        ``final``: ``obs`` are the final observations of episodes that ended in ``carry`` (a centralized critic
        builds its input from them, see :mod:`shoal.train.mappo.trainer`).
        """
        state = None
        done = None
        if self.rnn_state is not None:
            index = torch.from_numpy(rows).to(self.device)
            state = (self.rnn_state[0][:, index], self.rnn_state[1][:, index])
            done = self._tensor(self.buffer.starts[rows])
        with torch.inference_mode():
            kwargs: dict[str, Any] = {}
            if self.num_agent_ids:
                kwargs["agent_ids"] = self._tensor(rows % self.agents_per_env)
            values = self.policy.value(self._tensor(np.ascontiguousarray(obs)), state, done=done, **kwargs)
        return values.float().cpu().numpy()

    def _finish(self, carry: EnvResult) -> None:
        """Complete the pending transitions answered by ``carry``; record finished episodes."""
        t = time.perf_counter()
        buffer = self.buffer
        rows = carry.rows
        terminals, truncations = carry.terminals, carry.truncations
        ended = terminals | truncations
        rewards = carry.rewards
        if self.reward_norm is not None:
            # the rows with a transition waiting for this outcome: not a reset's zeros, padded or dead slots
            rewards = self.reward_norm(rows, rewards, ended, buffer.pending[rows])
        rewards = self._scaled_rewards(rewards)
        final_values = None
        counted = ended if self.league is None else self.league.finish(carry)  # league: the learner's episodes
        if ended.any():
            truncated = np.flatnonzero(truncations & ~terminals & buffer.pending[rows])
            if len(truncated):
                final_obs = np.stack([carry.infos[k]["final_observation"] for k in truncated])
                final_values = np.zeros(len(rows), np.float32)
                final_values[truncated] = self._values(rows[truncated], final_obs, carry, final=True)
            self._record_episodes(carry, ended, counted)
        buffer.finish(rows, rewards, terminals, truncations, carry.masks, final_values)
        self._record_results(carry)
        self._times["inference"] += time.perf_counter() - t

    def _scaled_rewards(self, rewards: np.ndarray) -> np.ndarray:
        """Rewards as the learner sees them (``reward_scale``, ``reward_clip``); statistics keep the raw ones."""
        cfg = self.config
        if cfg.reward_scale != 1.0 or cfg.reward_clip is not None:
            rewards = rewards * np.float32(cfg.reward_scale)
            if cfg.reward_clip is not None:
                rewards = np.clip(rewards, -cfg.reward_clip, cfg.reward_clip).astype(np.float32)
        return rewards

    def _record_episodes(self, carry: EnvResult, ended: np.ndarray, counted: np.ndarray) -> None:
        """Add what ended in ``carry`` to the statistics: whole env episodes (games) to the episode returns and
        lengths, the agents' own episodes at the ``counted`` positions (a league: the learner's) to
        :attr:`agent_stats`."""
        games = self.games.record(carry.rows, carry.env_ids, carry.infos, ended, counted, carry.agent_types)
        for game in games:
            self.episode_returns.append(game.mean_return)
            self.episode_lengths.append(float(game.length))
            self.episodes += 1
        if self.agent_stats is not None:
            self.agent_stats.record(carry.rows, carry.env_ids, carry.infos, counted, carry.agent_types, games)

    def _record_decisions(self, carry: EnvResult, live: np.ndarray, env_actions: np.ndarray) -> None:
        """``record_dataset``: record the decisions of ``carry``'s ``live`` rows (bool ``[len(rows)]``, the rows
        the learner drives) with the actions the env receives."""
        if self.recorder is None or not live.any():
            return
        picked = np.flatnonzero(live)
        self.recorder.act(carry.rows[picked], carry.obs[picked], env_actions[picked],
                          None if carry.action_masks is None else carry.action_masks[picked],
                          None if carry.agent_types is None else carry.agent_types[picked])

    def _record_results(self, carry: EnvResult) -> None:
        """``record_dataset``: apply an env result (raw rewards) to the recorded decisions."""
        if self.recorder is not None:
            self.recorder.finish(carry.rows, carry.rewards, carry.terminals, carry.truncations, carry.masks, carry.obs,
                                 carry.infos)

    def save_recorded_dataset(self) -> Path | None:
        """``record_dataset``: write every decision recorded so far as a dataset (running episodes end truncated,
        see :class:`~shoal.datasets.EpisodeRecorder`); returns its path (None when nothing was recorded)."""
        cfg = self.config
        if self.recorder is None or self.recorder.num_steps == 0 or cfg.record_dataset is None:
            return None
        self.recorder.stop()
        env = getattr(self.env_fn, "name", cfg.env)
        env_kwargs = self.env_fn.kwargs if isinstance(self.env_fn, EnvFn) else cfg.env_kwargs  # as it was built
        dataset = self.recorder.dataset({
            "env": env, "env_kwargs": dict(env_kwargs), "wrappers": cfg.wrappers,
            "source": f"training run ({cfg.algo})", "algo": cfg.algo,
            "run_dir": None if self.run_dir is None else str(self.run_dir), "seed": cfg.seed,
            "global_step": self.global_step, "max_agents": cfg.max_agents,
        })
        self.dataset_path = save_dataset(dataset, cfg.record_dataset, overwrite=cfg.overwrite)
        log.info("wrote the %d recorded steps (%d episodes) to %s", dataset.num_steps, dataset.num_episodes,
                 self.dataset_path)
        return self.dataset_path

    def _start(self) -> None:
        t = time.perf_counter()
        self.vecenv.async_reset(self.env_seed)
        self._times["env"] += time.perf_counter() - t
        self._carry = self._recv()
        self._finish(self._carry)

    def collect(self) -> None:
        """Fill the buffer with one rollout (see the module docstring)."""
        buffer = self.buffer
        if self._carry is None:
            self._start()
        buffer.begin()
        carry = self._carry
        handover = self.config.async_handover * buffer.target
        while True:
            if self.learner is not None and self.learner.ahead and buffer.stored >= handover:
                self._take_learner_weights()  # a learner process's update is done: act with its weights
            if not carry.acted:
                self._act(carry)
            carry = self._recv()
            self._finish(carry)
            self._carry = carry
            if buffer.full:
                break
        if self.overlap:  # act now: the envs step while the learner updates
            self._act(carry)
        else:
            self._bootstrap(carry)

    def _bootstrap(self, carry: EnvResult) -> None:
        waiting = self.buffer.waiting_rows()
        if not len(waiting):
            return
        position = np.searchsorted(carry.rows, waiting)
        if (position >= len(carry.rows)).any() or (
            carry.rows[np.minimum(position, len(carry.rows) - 1)] != waiting
        ).any():
            raise RuntimeError(
                "internal error: rows waiting for a bootstrap value are not in the last env result"
            )
        t = time.perf_counter()
        self.buffer.bootstrap(waiting, self._values(waiting, carry.obs[position], carry))
        self._times["inference"] += time.perf_counter() - t

    # ---- learning ------------------------------------------------------------------------------------------

    def learning_rate(self) -> float:
        """The learning rate for the next update (linear decay over the step budget when ``anneal_lr``)."""
        cfg = self.config
        if not cfg.anneal_lr:
            return cfg.learning_rate
        return cfg.learning_rate * max(0.0, 1.0 - self.global_step / cfg.total_steps)

    def learn(self) -> dict[str, float]:
        """One PPO update on the buffer's rollout, by the :class:`~shoal.train.core.learner.Learner`.

        Returns the statistics of the newest finished update: this one's in-process; the previous one's with a
        learner process (``{}`` at first), whose weights the acting policy takes during the next rollout (see
        ``TrainConfig.async_handover``).
        """
        if self.learner is None:
            self._start_learner()
        assert self.learner is not None
        t = time.perf_counter()
        data = self.buffer.data()
        lr = self.learning_rate()
        if self.learner.ahead:  # async_handover=1: the hand-over point is the end of the rollout
            self._take_learner_weights()
        stats = self.learner.update(data, lr, progress=self.global_step / self.config.total_steps)
        self.global_step += self._steps_done(data.num_transitions)
        self.update += 1
        stats["learning_rate"] = lr
        self._times["learn"] += time.perf_counter() - t
        return stats

    def _steps_done(self, transitions: int) -> int:
        """Agent steps this update adds to ``global_step`` (data-parallel learners add every learner's)."""
        return transitions

    def _take_learner_weights(self) -> None:
        """Wait for the learner's running update and act with its weights from now on."""
        assert self.learner is not None
        t = time.perf_counter()
        self.learner.copy_weights_to(self.policy, self.value_norm)
        self._times["learn"] += time.perf_counter() - t

    def _start_learner(self) -> None:
        """The learner: a learner process with ``async_learner`` (from a resumed run's own weights, if any), else
        the trainer's policy updated in this process. (TrainConfig.validate refuses a league with async_learner.)"""
        if not self.config.async_learner:
            self.learner = InProcessLearner(self.policy, self.optimizer, self.generator, self.config, self.device,
                                            value_norm=self.value_norm, loss_fn=self.loss_fn, reducer=self.reducer)
            return
        self.learner = LearnerProcess(
            self.policy,
            self._learner_weights,
            self.config,
            self.device,
            self.optimizer.state_dict(),
            self.generator.get_state(),
            value_norm=self.value_norm,
            value_norm_state=self._learner_norm,
            ahead=self._learner_ahead,
        )
        self._learner_weights = self._learner_norm = None

    # ---- main loop -----------------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self._elapsed_before + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0)

    def _open_run_dir(self) -> None:
        cfg = self.config
        sinks: list[Callback] = []
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.run_dir)  # left by a run killed while writing a checkpoint
            config_file = self.run_dir / "config.json"
            if cfg.resume and config_file.exists():
                pass  # keep the run's original config file
            else:
                existing = list_checkpoints(self.run_dir)
                if existing and not cfg.overwrite:
                    raise APIUsageError(
                        f"{self.run_dir} already holds checkpoints of another run; pass --resume to continue "
                        "it, --overwrite to start afresh there, or choose a new --run-dir"
                    )
                for path in existing:
                    path.unlink()
                for stale in (self.run_dir / "scalars.csv", self.run_dir / "curves.png"):
                    stale.unlink(missing_ok=True)
                if (self.run_dir / "tensorboard").is_dir():
                    shutil.rmtree(self.run_dir / "tensorboard")
                cfg.save(config_file)
            resume_step = self.global_step if self._resume_from is not None else None
            sinks.append(CSVSink(self.run_dir, resume_step))
            if cfg.tensorboard:
                sinks.append(TensorBoardSink(self.run_dir, cfg.to_dict(), resume_step))
            if cfg.wandb:
                sinks.append(
                    WandbSink(self.run_dir, cfg.wandb_project, cfg.to_dict(), name=self.run_dir.name,
                              mode=cfg.wandb_mode)
                )
        self.logger = RunLogger([*sinks, *self.callbacks])

    def _scalars(self, stats: dict[str, float], steps_here: int, seconds_here: float) -> dict[str, float]:
        times = self._times
        busy = sum(times.values()) or 1.0
        out = {
            "charts/update": float(self.update),
            "charts/episodes": float(self.episodes),
            "charts/learning_rate": stats.get("learning_rate", math.nan),
            "perf/sps": steps_here / seconds_here if seconds_here > 0 else 0.0,
            "perf/env_fraction": times["env"] / busy,
            "perf/inference_fraction": times["inference"] / busy,
            "perf/learn_fraction": times["learn"] / busy,
        }
        if self.episode_returns:
            out["charts/episode_return"] = float(np.mean(self.episode_returns))
            out["charts/episode_length"] = float(np.mean(self.episode_lengths))
        if self.reward_norm is not None:
            out["charts/reward_norm_std"] = self.reward_norm.std
        if self.agent_stats is not None:
            out.update(self.agent_stats.scalars())
        if self.league is not None:
            out.update(self.league.scalars())
        for name in self.loss_names:
            if name in stats:
                out[f"losses/{name}"] = float(stats[name])
        return out

    def train(self) -> TrainResult:
        """Run until ``total_steps`` agent steps were collected; returns a :class:`TrainResult`.

        On ``KeyboardInterrupt`` (Ctrl-C; SIGTERM too under :func:`shoal.interrupts.terminate_as_interrupt`, as
        the command line sets it) the last completed update is saved (:meth:`save_interrupted`, named by
        :attr:`last_checkpoint`) and the interrupt raised again. An update and its checkpoint are never cut in
        half: a signal arriving during them takes effect once they are done (a second one at once).
        """
        cfg = self.config
        start_update: int | None = None  # set once the run is restored and open: an interrupt before saves nothing
        try:
            if self._resume_from is not None:
                self.restore(self._resume_from)
            self._open_run_dir()
            assert self.logger is not None
            if self.learner is None:
                self._start_learner()
            self._t0 = time.perf_counter()
            start_step = self.global_step
            start_update = self.update
            last_log = -math.inf
            stats: dict[str, float] = {}
            while self.global_step < cfg.total_steps:
                self.collect()
                with deferred_signals():  # Ctrl-C/SIGTERM wait for the update and its checkpoint to complete
                    stats = self.learn()
                    self.last_stats = stats
                    if self.league is not None:  # snapshots into the opponent pool
                        self.league.after_update()
                    done = self.global_step >= cfg.total_steps
                    if self.run_dir is not None and (
                        done or (cfg.checkpoint_interval and self.update % cfg.checkpoint_interval == 0)
                    ):
                        self.save()
                now = time.perf_counter()
                if done or now - last_log >= cfg.log_interval:
                    last_log = now
                    record = LogRecord(
                        self.global_step,
                        self._scalars(stats, self.global_step - start_step, now - self._t0),
                        cfg.total_steps,
                        self._elapsed(),
                        final=done,
                    )
                    self.logger.log(record)
            if self.run_dir is not None and (
                self.last_checkpoint is None
                or self.last_checkpoint != checkpoint_path(self.run_dir, self.update)
            ):
                self.save()
            if self.learner is not None and self.learner.ahead:  # a learner process's last update
                self.last_stats = self.learner.result() or self.last_stats
                self.learner.copy_weights_to(self.policy, self.value_norm)
                learner = self.learner.state_dict()
                self.optimizer.load_state_dict(learner["optimizer"])
                self.generator.set_state(learner["generator"])
            seconds = time.perf_counter() - self._t0
            with deferred_signals():  # a dataset is never left half-written
                self.save_recorded_dataset()
            evaluation = None
            if cfg.eval_episodes:
                evaluation = evaluate_after_training(self.policy, self.env_fn, cfg, self.device)
                scalars = {f"eval/{prefix}mean_return": result["mean_return"]
                           for prefix, result in (("", evaluation), ("stochastic_", evaluation["stochastic"]))
                           if "error" not in result}
                if self.run_dir is not None and scalars:
                    record = LogRecord(
                        self.global_step,
                        scalars,
                        cfg.total_steps,
                        self._elapsed(),
                        final=True,
                    )
                    for sink in self.logger.sinks[: len(self.logger.sinks) - len(self.callbacks)]:
                        sink(record)
            steps_here = self.global_step - start_step
            return TrainResult(
                config=cfg,
                policy=self.policy,
                run_dir=self.run_dir,
                global_step=self.global_step,
                updates=self.update,
                seconds=seconds,
                sps=steps_here / seconds if seconds > 0 else 0.0,
                episode_return=float(np.mean(self.episode_returns)) if self.episode_returns else None,
                episode_length=float(np.mean(self.episode_lengths)) if self.episode_lengths else None,
                episodes=self.episodes,
                checkpoint=self.last_checkpoint,
                evaluation=evaluation,
                resumed_from=self._resume_from,
                exact_resume=self.exact_resume,
                dataset=self.dataset_path,
            )
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM under the command line: keep the last completed update
            if start_update is not None and self.update > start_update:
                self.save_interrupted()
            if self.dataset_path is None:  # and what the run collected (unless it was written already)
                with deferred_signals():
                    self.save_recorded_dataset()
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Close the vector env, the learner process and the log sinks."""
        if self.learner is not None:
            self.learner.close()
            self.learner = None
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        self.vecenv.close()

