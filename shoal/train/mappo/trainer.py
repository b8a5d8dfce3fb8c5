"""MAPPO: PPO with a centralized critic and value normalization, as a small addition to the PPO trainer.

    shoal train mpe2.simple_spread_v3 --algo mappo          # MAPPO
    shoal train mpe2.simple_spread_v3                       # IPPO: parameter-shared PPO, every live slot a row

    shoal.train.train(env="mpe2.simple_spread_v3", algo="mappo", total_steps=2_000_000)

What MAPPO changes (Yu et al., "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games", 2022)
    * **What the critic sees** (:func:`critic_input`): for slot ``j`` of env ``e``, a float32 row
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
    are destroyed): after such a last step the state before it is reported. The trainer keeps the latest state of
    each env, and the state after the final step for bootstrapping truncated episodes.

Heterogeneous agents (e.g. predators and prey in ``simple_tag_v3``) train in one run with one shared network
over the emulator's padded layout: agents of different groups sit in fixed slots (slot ``i`` holds
``possible_agents[i]``), so the slot-id embedding (``agent_ids``) tells the actor which agent it drives and the
critic gets slot and agent-type one-hots.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from torch import Tensor, nn

from shoal.emulation.layout import Layout
from shoal.emulation.pettingzoo import group_of
from shoal.errors import APIUsageError
from shoal.policies.encoders import scale_leaf
from shoal.policies.unflatten import check_rows, leaf_tensors
from shoal.train.config import TrainConfig
from shoal.train.core.normalize import ValueNormalizer, make_value_normalizer
from shoal.train.core.rollout import RolloutBuffer, RolloutData
from shoal.train.loop.trainer import Trainer
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

#: Info key under which :class:`GlobalStateEnv` reports ``env.state()``.
GLOBAL_STATE_KEY = "global_state"
#: Largest ``state()`` (in elements) used as critic input by ``critic_input="auto"``; larger states (e.g.
#: rendered screens) fall back to the concatenated observations.
MAX_STATE_SIZE = 4096
#: Most numbers one observation leaf contributes to a slot's :func:`agent_summary`; larger leaves are pooled.
SUMMARY_ELEMENTS = 256
#: Largest float32 observation input (bytes) of one learner minibatch when ``minibatch_size`` is MAPPO's default:
#: 1200 rows of cooperative_pong's 280x480x3 frames are 1.9 GB as floats, and the CNN's activations several times
#: that (the run was killed at 23 GB), so envs with large observations get smaller minibatches.
MINIBATCH_OBS_BYTES = 256 * 2**20
_GIB = 2**30
_STATE_WARNED: set[str] = set()  # env modules whose state() failed after their agents were gone

def resolve_value_norm(config: TrainConfig) -> str:
    """``config.value_norm`` with ``"auto"`` resolved: ``"running"`` for MAPPO, ``"none"`` for PPO."""
    if config.value_norm == "auto":
        return "running" if config.algo == "mappo" else "none"
    return config.value_norm


# --------------------------------------------------------------------------------------------------------------
# The env's global state
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvInfo:
    """What MAPPO needs to know about an env, read once from a probe instance (:func:`probe_env`).

    Attributes:
        possible_agents: the PettingZoo env's ``possible_agents`` (empty for other envs).
        groups: agent-type names in the emulator's order (``agent_types`` indexes them).
        state_space: the env's ``state_space`` when it is a parallel env whose ``state()`` is a ``Box`` of at most
            :data:`MAX_STATE_SIZE` elements (usable as critic input), else None.
        state_note: why ``state_space`` is None (for error messages).
    """

    possible_agents: tuple[str, ...]
    groups: tuple[str, ...]
    state_space: spaces.Box | None
    state_note: str = ""


def probe_env(env_fn: Callable[[], Any]) -> EnvInfo:
    """Build one env with ``env_fn`` and describe its agents and global state (the env is closed again)."""
    while isinstance(env_fn, WithGlobalState):
        env_fn = env_fn.env_fn
    env = env_fn()
    try:
        inner = getattr(env, "env", None) if not isinstance(env, ParallelEnv) else env
        possible = tuple(str(a) for a in (getattr(env, "possible_agents", None) or ()))
        groups: list[str] = []
        for agent in possible:
            if group_of(agent) not in groups:
                groups.append(group_of(agent))
        state_space, note = None, ""
        if not isinstance(env, ParallelEnv):
            note = f"{type(env).__name__} is not a PettingZoo ParallelEnv"
            if inner is not None and isinstance(inner, ParallelEnv):
                note += " (it wraps one: pass the ParallelEnv itself)"
        else:
            space = getattr(env, "state_space", None)
            if not isinstance(space, spaces.Box):
                note = f"{type(env.unwrapped).__name__} has no Box state_space"
            elif int(np.prod(space.shape)) > MAX_STATE_SIZE:
                note = (
                    f"its state() has {int(np.prod(space.shape))} elements (shape {space.shape}), more than "
                    f"{MAX_STATE_SIZE}"
                )
            else:
                state_space = space
        return EnvInfo(possible, tuple(groups), state_space, note)
    finally:
        try:
            env.close()
        except Exception:  # a probe that cannot close cleanly must not stop training
            log.debug("closing the probe env failed", exc_info=True)


class GlobalStateEnv(ParallelEnv):
    """A PettingZoo ``ParallelEnv`` that also reports ``env.state()`` in every agent's info.

    After ``reset`` and after every ``step``, each agent with an observation, reward or info gets
    ``infos[agent]["global_state"]``: a float32 copy of ``env.state()`` (flattened), shared by the agents of that
    call. Everything else is forwarded unchanged.
    """

    def __init__(self, env: ParallelEnv) -> None:
        self.env = env
        self.metadata = getattr(env, "metadata", {})

    @property
    def agents(self) -> list[str]:  # type: ignore[override]
        return self.env.agents

    @property
    def possible_agents(self) -> list[str]:  # type: ignore[override]
        return self.env.possible_agents

    @property
    def state_space(self) -> spaces.Space:
        return self.env.state_space

    @property
    def unwrapped(self) -> ParallelEnv:
        return self.env.unwrapped

    def observation_space(self, agent: str) -> spaces.Space:
        return self.env.observation_space(agent)

    def action_space(self, agent: str) -> spaces.Space:
        return self.env.action_space(agent)

    def state(self) -> np.ndarray:
        return self.env.state()

    def _with_state(self, infos: dict[str, Any] | None, *keyed: dict[str, Any]) -> dict[str, Any]:
        state = self._state()
        infos = dict(infos or {})
        for agent in set().union(infos, *keyed):
            infos[agent] = {**(infos.get(agent) or {}), GLOBAL_STATE_KEY: state}
        return infos

    def _state(self) -> np.ndarray:
        """float32 ``[S]``: ``env.state()``; after the last step of an episode whose agents are all gone, the
        state before that step when the env cannot answer (multiwalker destroys its walkers)."""
        last = getattr(self, "_last_state", None)
        if not self.env.agents and last is not None:
            try:
                state = self.env.state()
            except Exception as exc:  # the env's objects are gone: only a truncated episode's bootstrap reads it
                name = type(self.env.unwrapped).__module__
                if name not in _STATE_WARNED:  # once per env type and process, not per env copy
                    _STATE_WARNED.add(name)
                    log.warning("%s: state() failed once its agents were gone (%s: %s); the critic uses the state "
                                "before an episode's last step there", name, type(exc).__name__, exc)
                return last
        else:
            state = self.env.state()
        self._last_state = np.asarray(state, np.float32).reshape(-1).copy()
        return self._last_state

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        obs, infos = self.env.reset(seed=seed, options=options)
        return obs, self._with_state(infos, obs)

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        return obs, rewards, terminations, truncations, self._with_state(infos, obs, rewards)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


@dataclass(frozen=True)
class WithGlobalState:
    """Picklable env constructor: ``GlobalStateEnv(env_fn())`` (for every vector backend)."""

    env_fn: Callable[[], Any]

    def __call__(self) -> GlobalStateEnv:
        env = self.env_fn()
        if not isinstance(env, ParallelEnv):
            raise APIUsageError(f"critic_input='state' needs a PettingZoo ParallelEnv, got {type(env).__name__}")
        return GlobalStateEnv(env)


def _state_scaling(space: spaces.Box) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scale, shift)`` mapping a bounded state into ``[-1, 1]`` (as the observation encoders do), or None
    (symlog) when any element is unbounded or spans more than 1e4."""
    low = np.asarray(space.low, np.float64).reshape(-1)
    high = np.asarray(space.high, np.float64).reshape(-1)
    span = high - low
    if not (np.isfinite(low).all() and np.isfinite(high).all() and ((span >= 0) & (span <= 1e4)).all()):
        return None
    half = span / 2
    scale = np.divide(1.0, half, out=np.zeros_like(half), where=half > 0)
    return scale.astype(np.float32), (-(low + half) * scale).astype(np.float32)


def scale_state(state: np.ndarray, scaling: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """float32 ``[..., S]``: ``state`` scaled affinely into ``[-1, 1]`` (``scaling``) or by symlog (None)."""
    state = np.asarray(state, np.float32)
    if scaling is None:
        return np.sign(state) * np.log1p(np.abs(state))
    return state * scaling[0] + scaling[1]


# --------------------------------------------------------------------------------------------------------------
# The critic's input
# --------------------------------------------------------------------------------------------------------------


def _pooled_shape(leaf: Any) -> tuple[str, tuple[int, ...]]:
    """How :func:`agent_summary` reduces a leaf: ``("keep", ())``, ``("hwc" | "chw", (g, g))`` (spatial
    average pooling of a 3-D leaf, channels last or first as the image encoder guesses) or ``("flat", (n,))``
    (average pooling of the flattened leaf into ``n`` bins)."""
    if leaf.size <= SUMMARY_ELEMENTS:
        return "keep", ()
    if len(leaf.shape) == 3:
        order = "hwc" if leaf.shape[2] <= leaf.shape[0] else "chw"
        h, w, c = leaf.shape if order == "hwc" else (*leaf.shape[1:], leaf.shape[0])
        side = min(math.isqrt(SUMMARY_ELEMENTS // c) if c <= SUMMARY_ELEMENTS else 0, h, w)
        if side >= 1:
            return order, (side, side)
    return "flat", (SUMMARY_ELEMENTS,)


def summary_size(layout: Layout) -> int:
    """Width ``F`` of :func:`agent_summary`: per leaf its elements, or at most :data:`SUMMARY_ELEMENTS`."""
    total = 0
    for leaf in layout.leaves:
        kind, shape = _pooled_shape(leaf)
        if kind == "keep":
            total += leaf.size
        elif kind == "flat":
            total += shape[0]
        else:
            total += shape[0] * shape[1] * (leaf.shape[2] if kind == "hwc" else leaf.shape[0])
    return total


def agent_summary(layout: Layout, obs: Tensor) -> Tensor:
    """float32 ``[*batch, F]`` (``F`` = :func:`summary_size`): each slot's observation as the critic sees it.

    Every leaf of the flat rows ``obs [*batch, flat_size]`` is scaled as the vector encoders scale it
    (:func:`~shoal.policies.encoders.scale_leaf`); a leaf of more than :data:`SUMMARY_ELEMENTS` numbers (an
    image: pistonball's 457x120x3) is then average-pooled, spatially for 3-D leaves (``g x g`` cells per channel),
    else into that many bins of its flattened values, so the centralized input stays a few thousand floats.
    """
    check_rows(layout, obs, "observation")
    lead = tuple(obs.shape[:-1])
    n = math.prod(lead)
    parts = []
    for leaf, x in zip(layout.leaves, leaf_tensors(layout, obs), strict=True):
        x = scale_leaf(leaf, x).reshape(n, leaf.size)
        kind, shape = _pooled_shape(leaf)
        if kind in ("hwc", "chw"):
            x = x.reshape(n, *leaf.shape)
            if kind == "hwc":
                x = x.permute(0, 3, 1, 2)
            x = torch.nn.functional.adaptive_avg_pool2d(x, shape).reshape(n, -1)
        elif kind == "flat":
            x = torch.nn.functional.adaptive_avg_pool1d(x.unsqueeze(1), shape[0]).reshape(n, -1)
        parts.append(x)
    out = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
    return out.reshape(*lead, out.shape[-1])


def critic_input_size(layout: Layout, agents_per_env: int, num_types: int, state_size: int | None = None) -> int:
    """Width ``C`` of :func:`critic_input`: ``G + F + A + T`` with ``F`` = :func:`summary_size`,
    ``G = state_size`` (global state) or ``A * (F + 1)`` (concatenated slots and mask)."""
    features = summary_size(layout)
    joint = state_size if state_size is not None else agents_per_env * (features + 1)
    return joint + features + agents_per_env + num_types


def critic_buffer_bytes(num_rows: int, horizon: int, batch_size: int, critic_size: int) -> int:
    """Bytes of :class:`CriticBuffer`'s critic inputs: float32 ``[segments, horizon, C]`` (segments as
    :meth:`RolloutBuffer.segments`) plus one staged row per vector row."""
    rows = RolloutBuffer.segments(num_rows, horizon, batch_size) * horizon + num_rows
    return rows * critic_size * 4


def critic_input(
    layout: Layout, obs: Tensor, masks: Tensor, agent_types: Tensor, num_types: int, states: Tensor | None = None
) -> Tensor:
    """The centralized critic's input of every slot of ``E`` envs, each built from its own env's slots only.

    Args:
        layout: the observation layout of one row.
        obs: flat observation rows ``[E, A, flat_size]`` (the layout's flat dtype): env ``e``'s ``A`` slots.
        masks: bool ``[E, A]``, True for live slots. Other rows may hold anything (they are zeroed).
        agent_types: int ``[E, A]`` agent-type id of each slot (``-1`` or ``>= num_types``: no type).
        num_types: number of agent types ``T``.
        states: float32 ``[E, S]`` each env's (scaled) global state, or None to use the concatenated slots.

    Returns:
        float32 ``[E, A, C]`` (``C`` = :func:`critic_input_size`): for slot ``j`` of env ``e``
        ``[global_e | features_ej | onehot(j) | onehot(type_ej)]``, where ``global_e`` is ``states[e]`` or the
        features of env ``e``'s ``A`` slots (masked slots zero) followed by ``masks[e]``, and ``features_ej`` are
        slot ``j``'s own features (features: :func:`agent_summary`).
    """
    if obs.dim() != 3 or tuple(masks.shape) != tuple(obs.shape[:2]) or tuple(agent_types.shape) != tuple(obs.shape[:2]):
        raise APIUsageError(
            f"critic_input takes obs [E, A, flat], masks [E, A] and agent_types [E, A]; got "
            f"{list(obs.shape)}, {list(masks.shape)} and {list(agent_types.shape)}"
        )
    envs, slots = obs.shape[:2]
    live = masks.to(torch.bool)
    feats = agent_summary(layout, obs)
    feats = torch.where(live.unsqueeze(-1), feats, torch.zeros((), dtype=feats.dtype, device=feats.device))
    if states is None:
        joint = torch.cat([feats.reshape(envs, -1), live.to(torch.float32)], -1)
    else:
        if states.dim() != 2 or states.shape[0] != envs:
            raise APIUsageError(f"states have shape {list(states.shape)}; expected [{envs}, state_size]")
        joint = states.to(torch.float32)
    slot_ids = torch.eye(slots, dtype=torch.float32, device=obs.device).expand(envs, slots, slots)
    types = agent_types.to(torch.int64)
    known = (types >= 0) & (types < num_types)
    type_ids = torch.nn.functional.one_hot(torch.where(known, types, 0), max(num_types, 1)).to(torch.float32)
    type_ids = type_ids[..., :num_types] * known.unsqueeze(-1)
    return torch.cat([joint.unsqueeze(1).expand(envs, slots, joint.shape[-1]), feats, slot_ids, type_ids], -1)


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
        return self.value_norm.denormalize(torch.from_numpy(np.asarray(values, np.float32))).numpy()

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
        layer = critic[-1] if isinstance(critic, nn.Sequential) else None
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
        preset = config.preset_fields()
        config = config.resolved()
        self.centralized = config.algo == "mappo"
        base_fn = env_fn if env_fn is not None else resolve_env(config.env, config.env_kwargs,
                                                                 wrappers=config.wrappers)
        self.env_info = probe_env(base_fn)
        self.critic_mode = "local"
        if self.centralized:
            usable = self.env_info.state_space is not None
            if config.critic_input == "state" and not usable:
                raise APIUsageError(
                    f"critic_input='state' but {config.env!r} has no usable global state ({self.env_info.state_note});"
                    " use critic_input='concat' (every slot of the env concatenated) or 'auto'"
                )
            self.critic_mode = (
                "state" if config.critic_input == "state" or (config.critic_input == "auto" and usable) else "concat"
            )
            if self.critic_mode == "state" and not isinstance(base_fn, WithGlobalState):
                base_fn = WithGlobalState(base_fn)
        self._value_norm_kind = resolve_value_norm(config)
        super().__init__(config, env_fn=base_fn, policy=policy, callbacks=callbacks)
        self.preset = preset  # read before the config was resolved here

    # ---- setup ---------------------------------------------------------------------------------------------

    def _setup(self, policy: nn.Module | None, policy_cls: Any) -> None:
        vec = self.vecenv
        agents = vec.agents_per_env
        self.num_types = len(self.env_info.groups)
        state_space = self.env_info.state_space if self.critic_mode == "state" else None
        self.state_size = None if state_space is None else int(np.prod(state_space.shape))
        self._state_scaling = None if state_space is None else _state_scaling(state_space)
        self.critic_size = 0
        if self.centralized:
            self._bound_minibatch()
            self.critic_size = critic_input_size(vec.obs_layout, agents, self.num_types, self.state_size)
            self._check_memory(self.config.resolved(agents))
            if policy is None:
                policy = self._default_policy(policy_cls, critic_input_size=self.critic_size)
            elif getattr(policy, "critic_input_size", None) != self.critic_size:
                raise APIUsageError(
                    f"MAPPO feeds the critic rows of {self.critic_size} floats ({self.critic_mode} input for "
                    f"{agents} slots); build the policy with Policy.from_env(vecenv, critic_input_size="
                    f"{self.critic_size}) (it has critic_input_size={getattr(policy, 'critic_input_size', None)})"
                )
        super()._setup(policy, policy_cls)
        norm = make_value_normalizer(self._value_norm_kind, _critic_output(self.policy, self.centralized))
        self.value_norm = None if norm is None else norm.to(self.device)
        self.buffer = CriticBuffer.like(self.buffer, self.critic_size, self.value_norm)
        self.all_rows = self.buffer.all_rows
        size = self.state_size or 0
        self._states = np.zeros((vec.num_envs, size), np.float32)  # latest scaled state() of each env
        self._final_states = np.zeros((vec.num_envs, size), np.float32)  # state after an episode's last step
        self._critic_cache: tuple[Any, Tensor] | None = None

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
        source = f"{self.vecenv.agents_per_env} slots" if self.critic_mode == "concat" else "the env's state()"
        what = (
            f"MAPPO critic input ({self.critic_mode}: {source}) is {self.critic_size:,} floats per row; its buffer "
            f"({rows} rows, horizon {cfg.horizon}, batch {cfg.batch_size:,}) takes {need / _GIB:.3f} GiB"
        )
        if need > cfg.critic_memory_limit * _GIB:
            raise APIUsageError(
                f"{what}, more than critic_memory_limit={cfg.critic_memory_limit:g} GiB; lower --num-envs, "
                "--horizon or --batch-size, or raise --critic-memory-limit"
            )
        log.warning("%s (limit %g GiB, --critic-memory-limit)", what, cfg.critic_memory_limit)

    # ---- critic inputs -------------------------------------------------------------------------------------

    def _track_states(self, carry: Any) -> None:
        """Read each env's global state from ``carry``'s infos (new episodes: from their ``reset_info``)."""
        a = self.agents_per_env
        infos = carry.infos
        ended = carry.terminals | carry.truncations
        for local, env in enumerate(carry.env_ids.tolist()):
            current = final = None
            for k in range(local * a, (local + 1) * a):
                info = infos[k]
                if not info:
                    continue
                reset = info.get("reset_info")
                if reset is not None and GLOBAL_STATE_KEY in reset:
                    current = reset[GLOBAL_STATE_KEY]
                elif current is None and GLOBAL_STATE_KEY in info and carry.masks[k]:
                    current = info[GLOBAL_STATE_KEY]
                if final is None and ended[k] and GLOBAL_STATE_KEY in info:
                    final = info[GLOBAL_STATE_KEY]
            if current is not None:
                self._states[env] = scale_state(current, self._state_scaling)
            if final is not None:
                self._final_states[env] = scale_state(final, self._state_scaling)

    def _build(
        self, obs: np.ndarray, masks: np.ndarray, agent_types: np.ndarray | None, states: np.ndarray | None
    ) -> Tensor:
        """:func:`critic_input` of env-major numpy rows ``obs [E * A, flat]``, ``masks [E * A]``,
        ``agent_types [E * A]`` and ``states [E, S]``: float32 ``[E * A, C]`` on the device."""
        a = self.agents_per_env
        envs = len(masks) // a
        if agent_types is None:
            agent_types = np.full(len(masks), -1, np.int32)
        x = critic_input(
            self.vecenv.obs_layout,
            self._tensor(np.ascontiguousarray(obs)).reshape(envs, a, -1),
            self._tensor(np.ascontiguousarray(masks)).reshape(envs, a),
            self._tensor(np.ascontiguousarray(agent_types)).reshape(envs, a),
            self.num_types,
            None if states is None else self._tensor(np.ascontiguousarray(states)),
        )
        return x.reshape(envs * a, -1)

    def _critic_rows(self, carry: Any) -> Tensor:
        """Critic inputs float32 ``[R, C]`` of every row of ``carry`` (computed once per env result)."""
        cached = self._critic_cache
        if cached is not None and cached[0] is carry:
            return cached[1]
        states = self._states[carry.env_ids] if self.critic_mode == "state" else None
        x = self._build(carry.obs, carry.masks, carry.agent_types, states)
        self._critic_cache = (carry, x)
        return x

    def critic_inputs(self, carry: Any, live: np.ndarray | slice) -> Tensor | None:
        """The centralized critic's inputs of ``carry``'s rows ``live`` (None for a local critic).

        Also stages them in the buffer, which stores those of the rows that act beside their transitions.
        """
        if not self.centralized:
            return None
        x = self._critic_rows(carry)
        self.buffer.stage(carry.rows, x.cpu().numpy())
        return x[live] if isinstance(live, slice) else x[torch.from_numpy(np.asarray(live)).to(x.device)]

    def _final_critic_rows(self, carry: Any, positions: np.ndarray) -> Tensor:
        """Critic inputs ``[len(positions), C]`` at the final step of the episodes that ended in ``carry``.

        For each env of the rows at ``positions``: slots whose agent ended in ``carry`` contribute their
        ``final_observation``; slots still live in an episode that goes on contribute their current observation;
        others are masked. The global state is the state after the final step.
        """
        a = self.agents_per_env
        envs = np.unique(positions // a)
        index = (envs[:, None] * a + np.arange(a)).reshape(-1)
        obs = carry.obs[index].copy()
        masks = carry.masks[index].copy()
        ended = (carry.terminals | carry.truncations)[index]
        for i, k in enumerate(index.tolist()):
            if i % a == 0:
                block = index[i : i + a].tolist()
                reset = any("reset_info" in carry.infos[j] for j in block)
            final = carry.infos[k].get("final_observation") if ended[i] else None
            if final is not None:
                obs[i] = final
                masks[i] = True
            elif ended[i] or reset:
                masks[i] = False
        states = self._final_states[carry.env_ids[envs]] if self.critic_mode == "state" else None
        agent_types = None if carry.agent_types is None else carry.agent_types[index]
        x = self._build(obs, masks, agent_types, states)
        where = np.searchsorted(index, positions)
        return x[torch.from_numpy(where).to(x.device)]

    # ---- values --------------------------------------------------------------------------------------------

    def _values(self, rows: np.ndarray, obs: np.ndarray, carry: Any, final: bool = False) -> np.ndarray:
        """Critic values (return units) of ``rows``: of their final observations when ``final``."""
        if not self.centralized:
            values = super()._values(rows, obs, carry, final)
        else:
            positions = np.searchsorted(carry.rows, rows)
            if final:
                critic = self._final_critic_rows(carry, positions)
            else:
                critic = self._critic_rows(carry)[torch.from_numpy(positions).to(self.device)]
            kwargs: dict[str, Any] = {}
            if self.num_agent_ids:
                kwargs["agent_ids"] = self._tensor(rows % self.agents_per_env)
            with torch.inference_mode():
                values = self.policy.value(None, critic_obs=critic, **kwargs).float().cpu().numpy()
        return self.buffer.denormalize(values)

    def _finish(self, carry: Any) -> None:
        if self.critic_mode == "state":
            self._track_states(carry)
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
            "states": self._states.copy(),
            "final_states": self._final_states.copy(),
        }
        return payload

    def _restore_algorithm(self, payload: dict[str, Any]) -> None:
        extra = payload.get("mappo") or {}
        if self.value_norm is not None and extra.get("value_norm") is not None:
            self.value_norm.load_state_dict(extra["value_norm"])
        for name in ("states", "final_states"):
            saved = extra.get(name)
            if saved is not None and saved.shape == getattr(self, f"_{name}").shape:
                getattr(self, f"_{name}")[...] = saved
