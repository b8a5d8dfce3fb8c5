"""MAPPO: PPO with a centralized critic and value normalization, as a small addition to the PPO trainer.

    shoal train mpe2.simple_spread_v3 --algo mappo          # MAPPO
    shoal train mpe2.simple_spread_v3                       # IPPO: parameter-shared PPO, every live slot a row

    shoal.train.train(env="mpe2.simple_spread_v3", algo="mappo", total_steps=2_000_000)

What MAPPO changes (Yu et al., "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games", 2022)
    * **What the critic sees** (:func:`critic_input`, built by :mod:`shoal.train.core.centralized`, which SAC's
      centralized critics share): for slot ``j`` of env ``e``, a float32 row
      ``[global | own | slot one-hot | type one-hot]`` where ``global`` is the env's ``state()`` when the
      PettingZoo env provides a small flat one (``critic_input="state"``), otherwise every slot of the *same* env
      concatenated, dead and padded slots zeroed, plus the slot mask (``"concat"``); ``own`` is slot ``j``'s
      observation features (the "agent-specific global state" of the paper), then the slot id and the agent-type
      id. Rows are env-major, so env ``e``'s slots are rows ``e * A .. e * A + A - 1`` of every batch: the input
      is built per env from that env's rows only. The actor sees only its own observation (plus the slot id
      embedding with ``agent_ids``). Observation features are each slot's :func:`agent_summary`: leaves of at
      most :data:`SUMMARY_ELEMENTS` numbers as the vector encoders scale them, larger ones (images)
      average-pooled down to at most that many, so a row's width grows with the number of slots only.
    * **Memory** is stated and bounded: the trainer logs the size of the buffer of critic inputs at start
      (:func:`critic_buffer_bytes`) and refuses, before allocating anything, one larger than
      ``critic_memory_limit`` GiB (``--critic-memory-limit``). With MAPPO's default minibatch, envs with large
      observations get minibatches of at most :data:`MINIBATCH_OBS_BYTES` of float32 observations.
    * **How the critic reads it** (``critic_residual``, on by default): a
      :class:`~shoal.policies.policy.ResidualCritic`, a local critic over the row's ``own`` part and one-hots plus
      an MLP over the whole row whose output weights start at zero, so training starts from a local critic and
      the global part joins as it helps (on simple_spread one MLP over the whole row trailed IPPO by 1.7 per
      agent at 2M steps, the residual critic by 0.2: README); ``critic_residual=False``: one MLP over the row.
    * **How values are normalized** (:mod:`shoal.train.core.normalize`): the critic predicts normalized values
      (running mean/std by default, or PopArt); the buffer stores them in return units.
    * **Defaults** (``ALGO_DEFAULTS["mappo"]`` in :mod:`shoal.train.config`, for the API and the command line
      alike): parameter sharing with agent ids, at most 10 epochs over large minibatches (two per
      update), an entropy bonus.
    * Death masking is the trainer's slot semantics: dead and padded slots never act, so they never reach the
      buffer, the losses, the advantage normalization or the value statistics; in the critic input they are
      zeroed and flagged by the mask.

Global state
    PettingZoo parallel envs expose ``state()``; the vector layer carries only observations, so MAPPO wraps the
    env constructor (:class:`WithGlobalState`): the wrapped env puts ``state()`` into every agent's info under
    ``"global_state"`` after each reset and step (no change to the emulator or the vector layer; works on every
    backend). Once an episode's agents are all gone some envs cannot answer ``state()`` (multiwalker's walkers
    are destroyed): after such a last step the state before it is reported. The trainer's
    :class:`~shoal.train.core.centralized.CentralizedInputs` keeps the latest state of each env, and the state
    after the final step for bootstrapping truncated episodes.

Heterogeneous agents (e.g. predators and prey in ``simple_tag_v3``) train in one run with one shared network
over the emulator's padded layout: agents of different groups sit in fixed slots (slot ``i`` holds
``possible_agents[i]``), so the slot-id embedding (``agent_ids``) tells the actor which agent it drives and the
critic gets slot and agent-type one-hots.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shoal.errors import APIUsageError
from shoal.policies.policy import ResidualCritic
from shoal.train.config import TrainConfig
from shoal.train.core.centralized import (
    GLOBAL_STATE_KEY,
    SUMMARY_ELEMENTS,
    CentralizedInputs,
    EnvInfo,
    GlobalStateEnv,
    WithGlobalState,
    agent_summary,
    centralized_env,
    critic_input,
    critic_input_size,
    probe_env,
    summary_size,
)
from shoal.train.core.normalize import ValueNormalizer, make_value_normalizer
from shoal.train.core.rollout import RolloutBuffer, RolloutData
from shoal.train.loop.trainer import Trainer
from shoal.train.runs.checkpoint import load_checkpoint
from shoal.train.runs.resolve import resolve_env

__all__ = [
    "GLOBAL_STATE_KEY",
    "CriticBuffer",
    "EnvInfo",
    "GlobalStateEnv",
    "MAPPOTrainer",
    "WithGlobalState",
    "SUMMARY_ELEMENTS",
    "agent_summary",
    "critic_buffer_bytes",
    "critic_input",
    "critic_input_size",
    "probe_env",
    "resolve_value_norm",
    "summary_size",
]

log = logging.getLogger(__name__)

#: Largest float32 observation input (bytes) of one learner minibatch when ``minibatch_size`` is MAPPO's default:
#: 1200 rows of cooperative_pong's 280x480x3 frames are 1.9 GB as floats, and the CNN's activations several times
#: that (the run was killed at 23 GB), so envs with large observations get smaller minibatches.
MINIBATCH_OBS_BYTES = 256 * 2**20
_GIB = 2**30


def resolve_value_norm(config: TrainConfig) -> str:
    """``config.value_norm`` with ``"auto"`` resolved: ``"running"`` for MAPPO, ``"none"`` for PPO."""
    if config.value_norm == "auto":
        return "running" if config.algo == "mappo" else "none"
    return config.value_norm


def critic_buffer_bytes(num_rows: int, horizon: int, batch_size: int, critic_size: int) -> int:
    """Bytes of :class:`CriticBuffer`'s critic inputs: float32 ``[segments, horizon, C]`` (segments as
    :meth:`RolloutBuffer.segments`) plus one staged row per vector row."""
    rows = RolloutBuffer.segments(num_rows, horizon, batch_size) * horizon + num_rows
    return rows * critic_size * 4



# --------------------------------------------------------------------------------------------------------------
# The buffer: critic inputs beside each transition
# --------------------------------------------------------------------------------------------------------------


class CriticBuffer(RolloutBuffer):
    """A :class:`RolloutBuffer` that also stores each transition's critic input and values in return units.

    Before the trainer records actions with :meth:`act`, it :meth:`stage`-s the critic inputs of the rows of the
    env result it acts on; :meth:`act` stores the staged inputs of the rows that acted beside their transitions.
    Values from a critic that predicts normalized values are denormalized (``value_norm``) before they are stored,
    so advantages and bootstrapping work in return units.

    Args:
        *args: as :class:`RolloutBuffer`.
        critic_size: width ``C`` of a critic input row (0: none stored).
        value_norm: the critic's :class:`~shoal.train.core.normalize.ValueNormalizer`, or None.
    """

    def __init__(
        self, *args: Any, critic_size: int = 0, value_norm: ValueNormalizer | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.critic_size = critic_size
        self.value_norm = value_norm
        self.critic_obs = np.zeros((self.capacity, self.horizon, critic_size), np.float32) if critic_size else None
        self.staged = np.zeros((self.num_rows, critic_size), np.float32) if critic_size else None

    @classmethod
    def like(
        cls, buffer: RolloutBuffer, critic_size: int = 0, value_norm: ValueNormalizer | None = None
    ) -> CriticBuffer:
        """An empty :class:`CriticBuffer` with the same shapes and dtypes as ``buffer``."""
        return cls(
            buffer.num_rows,
            buffer.horizon,
            buffer.target,
            buffer.obs.shape[2:],
            buffer.obs.dtype,
            buffer.actions.shape[2:],
            buffer.actions.dtype,
            0 if buffer.action_masks is None else buffer.action_masks.shape[-1],
            0 if buffer.states is None else buffer.states[0].shape[-1],
            critic_size=critic_size,
            value_norm=value_norm,
        )

    def stage(self, rows: np.ndarray, critic_obs: np.ndarray) -> None:
        """Remember the critic inputs float32 ``[B, C]`` of vector ``rows`` ``[B]`` for the next :meth:`act`."""
        if self.staged is not None:
            self.staged[rows] = critic_obs

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        """Critic outputs float32 ``[B]`` -> return units (unchanged without a normalizer)."""
        if self.value_norm is None:
            return values
        mean, std = self.value_norm.affine()  # float32 arithmetic, as ValueNormalizer.denormalize does
        return np.asarray(values, np.float32) * np.float32(std) + np.float32(mean)

    def act(
        self,
        rows: np.ndarray,
        obs: np.ndarray,
        actions: np.ndarray,
        log_probs: np.ndarray,
        values: np.ndarray,
        action_masks: np.ndarray | None = None,
        agent_ids: np.ndarray | None = None,
        states: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """:meth:`RolloutBuffer.act`, with ``values`` (critic outputs) denormalized and the staged critic inputs
        of ``rows`` stored."""
        super().act(rows, obs, actions, log_probs, self.denormalize(values), action_masks, agent_ids, states)
        if self.critic_obs is not None:
            self.critic_obs[self.segment[rows], self.position[rows]] = self.staged[rows]

    def begin(self) -> None:
        rows = np.flatnonzero(self.pending)
        carried = None
        if self.critic_obs is not None and len(rows):
            carried = self.critic_obs[self.segment[rows], self.position[rows]]
        super().begin()
        if carried is not None:  # pending actions moved to position 0 of fresh segments
            self.critic_obs[self.segment[rows], 0] = carried

    def data(self) -> RolloutData:
        index = np.flatnonzero(self.valid[: self.used].any(1))  # the segments RolloutBuffer.data() keeps
        base = super().data()
        critic = None
        if self.critic_obs is not None:
            critic = self.critic_obs[index]
            critic[~base.valid] = 0.0
        return dataclasses.replace(base, critic_obs=critic)

    def carry_state(self) -> dict[str, Any]:
        state = super().carry_state()
        if self.critic_obs is not None:
            rows = state["rows"]
            state["critic_obs"] = self.critic_obs[self.segment[rows], self.position[rows]].copy()
        return state

    def load_carry_state(self, state: dict[str, Any]) -> None:
        super().load_carry_state(state)
        if self.critic_obs is not None and state.get("critic_obs") is not None:
            rows = np.asarray(state["rows"], np.int64)
            if len(rows):
                self.critic_obs[self.segment[rows], 0] = state["critic_obs"]


# --------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------


def _critic_output(policy: nn.Module, centralized: bool) -> nn.Linear | None:
    """The last linear layer of ``policy``'s critic (for PopArt), or None."""
    if centralized:
        critic = getattr(policy, "critic", None)
        layer = critic[-1] if isinstance(critic, nn.Sequential) else getattr(critic, "output", None)
    else:
        layer = getattr(policy, "value_head", None)
    return layer if isinstance(layer, nn.Linear) else None


class MAPPOTrainer(Trainer):
    """:class:`~shoal.train.loop.trainer.Trainer` with a centralized critic (``algo="mappo"``) and value normalization.

    With ``algo="ppo"`` and ``value_norm`` on, it trains IPPO (local critic) with value normalization.

    Args:
        config: the configuration; ``critic_input`` chooses the critic's global part (``"auto"``: the env's
            ``state()`` when usable, else the concatenated slots), ``value_norm`` the value normalization.
        env_fn, policy, callbacks: as :class:`~shoal.train.loop.trainer.Trainer`. A given ``policy`` must have been
            built with ``critic_input_size=`` the width this trainer computes (:attr:`critic_size`).

    Attributes:
        critic_mode: ``"state"``, ``"concat"`` or ``"local"`` (IPPO).
        critic_size: width of a critic input row (0 for a local critic).
        central: the :class:`~shoal.train.core.centralized.CentralizedInputs` that builds those rows (None for a
            local critic).
        value_norm: the :class:`~shoal.train.core.normalize.ValueNormalizer`, or None.
        env_info: the probed :class:`EnvInfo`.
    """

    def __init__(
        self,
        config: TrainConfig,
        env_fn: Callable[[], Any] | None = None,
        policy: nn.Module | None = None,
        callbacks: Sequence[Callable[..., None]] = (),
    ) -> None:
        self._default_minibatch = config.minibatch_size is None
        self._default_critic = config.critic_residual is None  # a resumed run then keeps its own design
        preset = config.preset_fields()
        pool_unset = config.league_pool_size is None  # Trainer then takes a resumed league's own size
        config = config.resolved()
        if pool_unset:
            config = dataclasses.replace(config, league_pool_size=None)
        self.centralized = config.algo == "mappo"
        base_fn = env_fn if env_fn is not None else resolve_env(config.env, config.env_kwargs,
                                                                 wrappers=config.wrappers)
        self.critic_mode = "local"
        if self.centralized:
            self.critic_mode, self.env_info, base_fn = centralized_env(config.critic_input, base_fn, config.env,
                                                                       "MAPPO")
        else:
            self.env_info = probe_env(base_fn)
        self._value_norm_kind = resolve_value_norm(config)
        super().__init__(config, env_fn=base_fn, policy=policy, callbacks=callbacks)
        self.preset = preset  # read before the config was resolved here

    # ---- setup ---------------------------------------------------------------------------------------------

    def _setup(self, policy: nn.Module | None, policy_cls: Any) -> None:
        vec = self.vecenv
        agents = vec.agents_per_env
        #: the builder of the centralized critic's inputs (None for a local critic)
        self.central: CentralizedInputs | None = None
        self.critic_size = 0
        if self.centralized:
            self._bound_minibatch()
            self.central = CentralizedInputs(self.critic_mode, self.env_info, vec.obs_layout, vec.num_envs, agents,
                                             self.device)
            self.critic_size = self.central.size
            if policy is None:
                self._keep_resumed_critic()
            else:
                self._check_given_critic(policy)
            self._check_memory(self.config.resolved(agents))  # (its log line names the design settled above)
            if policy is None:
                local = {"critic_local_size": self.central.local_size} if self.config.critic_residual else {}
                policy = self._default_policy(policy_cls, critic_input_size=self.critic_size, **local)
        super()._setup(policy, policy_cls)
        norm = make_value_normalizer(self._value_norm_kind, _critic_output(self.policy, self.centralized))
        self.value_norm = None if norm is None else norm.to(self.device)
        self.buffer = CriticBuffer.like(self.buffer, self.critic_size, self.value_norm)
        self.all_rows = self.buffer.all_rows

    def _keep_resumed_critic(self) -> None:
        """A resumed run whose caller left ``critic_residual`` unset keeps the critic it was saved with (runs saved
        before the residual critic existed, or by another default, rebuild one MLP instead of being refused)."""
        if not self._default_critic or self._resume_from is None:
            return
        saved = TrainConfig.from_dict(load_checkpoint(self._resume_from, map_location="cpu")["config"])
        if saved.algo == "mappo" and saved.critic_residual is not None \
                and saved.critic_residual != self.config.critic_residual:
            log.info("resuming with critic_residual=%s, as the run was saved", saved.critic_residual)
            self.config = dataclasses.replace(self.config, critic_residual=saved.critic_residual)

    def _check_given_critic(self, policy: nn.Module) -> None:
        """Check a given policy's critic against the input this trainer builds; the config then records its
        design (``critic_residual``), so the run resumes with the same network."""
        assert self.central is not None
        critic = getattr(policy, "critic", None)
        residual = isinstance(critic, ResidualCritic)
        local = critic.local_size if isinstance(critic, ResidualCritic) else None
        hint = (f"build the policy with Policy.from_env(vecenv, critic_input_size={self.critic_size}, "
                f"critic_local_size={self.central.local_size}) (a residual critic; leave critic_local_size out "
                "for one MLP over the whole input)")
        if getattr(policy, "critic_input_size", None) != self.critic_size or local not in (None,
                                                                                            self.central.local_size):
            raise APIUsageError(
                f"MAPPO feeds the critic rows of {self.critic_size} floats ({self.critic_mode} input for "
                f"{self.vecenv.agents_per_env} slots, the last {self.central.local_size} the slot's own); {hint} "
                f"(it has critic_input_size={getattr(policy, 'critic_input_size', None)}, critic_local_size="
                f"{local})")
        if not self._default_critic and self.config.critic_residual != residual:
            raise APIUsageError(f"critic_residual={self.config.critic_residual}, but the given policy's critic is "
                                f"{'a ResidualCritic' if residual else 'one MLP'}; drop critic_residual or {hint}")
        self.config = dataclasses.replace(self.config, critic_residual=residual)

    def _bound_minibatch(self) -> None:
        """Shrink MAPPO's default minibatch so its float32 observations take at most :data:`MINIBATCH_OBS_BYTES`."""
        row = 4 * sum(leaf.size for leaf in self.vecenv.obs_layout.leaves)
        cap = max(1, MINIBATCH_OBS_BYTES // row)
        if self._default_minibatch and self.config.minibatch_size > cap:  # type: ignore[operator]
            log.warning("MAPPO: minibatches of %d rows instead of %d: an observation row is %s float32 bytes "
                        "(set --minibatch-size to choose)", cap, self.config.minibatch_size, f"{row:,}")
            self.config = dataclasses.replace(self.config, minibatch_size=cap)

    def _check_memory(self, cfg: TrainConfig) -> None:
        """Log the size of the buffer of critic inputs; refuse one above ``critic_memory_limit`` GiB."""
        rows = self.vecenv.num_agents
        need = critic_buffer_bytes(rows, cfg.horizon, cfg.batch_size, self.critic_size)  # type: ignore[arg-type]
        assert self.central is not None
        what = (
            f"MAPPO critic input ({self.central.describe()}) is {self.critic_size:,} floats per row (the last "
            f"{self.central.local_size} the slot's own; critic_residual={cfg.critic_residual}); its buffer "
            f"({rows} rows, horizon {cfg.horizon}, batch {cfg.batch_size:,}) takes {need / _GIB:.3f} GiB"
        )
        if need > cfg.critic_memory_limit * _GIB:
            raise APIUsageError(
                f"{what}, more than critic_memory_limit={cfg.critic_memory_limit:g} GiB; lower --num-envs, "
                "--horizon or --batch-size, or raise --critic-memory-limit"
            )
        log.warning("%s (limit %g GiB, --critic-memory-limit)", what, cfg.critic_memory_limit)

    # ---- critic inputs -------------------------------------------------------------------------------------

    def critic_inputs(self, carry: Any, live: np.ndarray | slice) -> Tensor | None:
        """The centralized critic's inputs of ``carry``'s rows ``live`` (None for a local critic).

        Also stages them in the buffer, which stores those of the rows that act beside their transitions.
        """
        if self.central is None:
            return None
        x = self.central.rows(carry)
        self.buffer.stage(carry.rows, x.cpu().numpy())
        return x[live] if isinstance(live, slice) else x[torch.from_numpy(np.asarray(live)).to(x.device)]

    # ---- values --------------------------------------------------------------------------------------------

    def _values(self, rows: np.ndarray, obs: np.ndarray, carry: Any, final: bool = False) -> np.ndarray:
        """Critic values (return units) of ``rows``: of their final observations when ``final``."""
        if self.central is None:
            values = super()._values(rows, obs, carry, final)
        else:
            positions = np.searchsorted(carry.rows, rows)
            if final:
                critic = self.central.final_rows(carry, positions)
            else:
                critic = self.central.rows(carry)[torch.from_numpy(positions).to(self.device)]
            kwargs: dict[str, Any] = {}
            if self.num_agent_ids:
                kwargs["agent_ids"] = self._tensor(rows % self.agents_per_env)
            with torch.inference_mode():
                values = self.policy.value(None, critic_obs=critic, **kwargs).float().cpu().numpy()
        return self.buffer.denormalize(values)

    def _finish(self, carry: Any) -> None:
        if self.central is not None:
            self.central.track(carry)
        super()._finish(carry)

    # ---- logging and checkpoints ---------------------------------------------------------------------------

    def _scalars(self, stats: dict[str, float], steps_here: int, seconds_here: float) -> dict[str, float]:
        out = super()._scalars(stats, steps_here, seconds_here)
        if self.value_norm is not None:
            out["charts/value_norm_mean"] = self.value_norm.mean
            out["charts/value_norm_std"] = self.value_norm.std
        return out

    def checkpoint_payload(self) -> dict[str, Any]:
        payload = super().checkpoint_payload()
        payload["mappo"] = {
            "value_norm": None if self.value_norm is None else self.value_norm.state_dict(),
            **({} if self.central is None else self.central.state_dict()),
        }
        return payload

    def _restore_algorithm(self, payload: dict[str, Any]) -> None:
        extra = payload.get("mappo") or {}
        if self.value_norm is not None and extra.get("value_norm") is not None:
            self.value_norm.load_state_dict(extra["value_norm"])
        if self.central is not None:
            self.central.load_state_dict(extra)
