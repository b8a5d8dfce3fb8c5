"""The centralized critic's input: what a critic that sees the whole env reads, and its construction per env result.

Used by MAPPO's critic (:mod:`shoal.train.mappo.trainer`) and SAC's twin critics with ``critic_input`` set
(:mod:`shoal.train.sac.trainer`); both build it here, the same way.

For slot ``j`` of env ``e`` the input (:func:`critic_input`) is a float32 row ``[global | own | slot one-hot |
type one-hot]``: ``global`` is the env's ``state()`` when the PettingZoo env provides a small flat one
(``"state"``), otherwise every slot of the *same* env concatenated, dead and padded slots zeroed, plus the slot
mask (``"concat"``); ``own`` is slot ``j``'s observation features (:func:`agent_summary`). Rows are env-major, so
env ``e``'s slots are rows ``e * A .. e * A + A - 1`` of every batch: the input is built per env from that env's
rows only.

PettingZoo parallel envs expose ``state()``; the vector layer carries only observations, so the env constructor is
wrapped (:class:`WithGlobalState`): the wrapped env puts ``state()`` into every agent's info under
``"global_state"`` after each reset and step. :class:`CentralizedInputs` keeps the latest state of each env (and
the state after an episode's final step, for bootstrapping truncated episodes) and builds the rows of each env
result once.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from torch import Tensor

from shoal.emulation.layout import Layout
from shoal.emulation.parallel_step import direct_parallel_step
from shoal.emulation.pettingzoo import group_of
from shoal.errors import APIUsageError
from shoal.policies.encoders import scale_leaf
from shoal.policies.unflatten import check_rows, leaf_tensors

__all__ = [
    "GLOBAL_STATE_KEY",
    "MAX_STATE_SIZE",
    "SUMMARY_ELEMENTS",
    "CentralizedInputs",
    "EnvInfo",
    "GlobalStateEnv",
    "WithGlobalState",
    "agent_summary",
    "centralized_env",
    "critic_input",
    "critic_input_size",
    "probe_env",
    "scale_state",
    "state_is_joint_observation",
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
_STATE_WARNED: set[str] = set()  # env modules whose state() failed after their agents were gone


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
    call. Everything else is forwarded unchanged. Where ``state()`` is by definition the agents' observations
    concatenated (MPE, :func:`state_is_joint_observation`) it is built from the observations just returned, the
    same numbers without computing every observation twice.

    An AEC env behind PettingZoo's ``aec_to_parallel`` (MPE, butterfly, SISL) is stepped as the emulator steps it
    without this wrapper (:func:`~shoal.emulation.parallel_step.direct_parallel_step`: the same results without
    the observations the conversion computes and discards), with the action-bounds checks kept in :meth:`step`;
    :meth:`step_checked`, which the emulator uses (it checks every action itself), skips them.
    """

    #: the inner env's step; None (an env snapshot saved before it existed): ``env.step``
    _step: Callable[[dict[str, Any]], tuple[dict, dict, dict, dict, dict]] | None = None
    #: the inner env's step for actions already checked against their spaces (None: as ``_step``)
    _checked_step: Callable[[dict[str, Any]], tuple[dict, dict, dict, dict, dict]] | None = None
    #: ``state()`` is by definition the observations of ``possible_agents`` concatenated, and the observations
    #: this wrapper sees are the env's own: the state is built from them instead of recomputing every observation
    _joint: bool = False

    def __init__(self, env: ParallelEnv) -> None:
        self.env = env
        self.metadata = getattr(env, "metadata", {})
        # hidden behind this wrapper, the inner env would lose the emulator's direct step (simple_spread MAPPO
        # trained 15% slower)
        self._step = direct_parallel_step(env, actions_checked=False)
        self._checked_step = direct_parallel_step(env, actions_checked=True)
        self._joint = self._step is not None and state_is_joint_observation(env.unwrapped)

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

    def _with_state(self, infos: dict[str, Any] | None, obs: dict[str, Any], *keyed: dict[str, Any]) -> dict[str, Any]:
        state = self._state(obs)
        infos = dict(infos or {})
        for agent in set().union(infos, obs, *keyed):
            infos[agent] = {**(infos.get(agent) or {}), GLOBAL_STATE_KEY: state}
        return infos

    def _state(self, obs: dict[str, Any]) -> np.ndarray:
        """float32 ``[S]``: ``env.state()``; after the last step of an episode whose agents are all gone, the
        state before that step when the env cannot answer (multiwalker destroys its walkers). ``obs``: the
        observations of the reset or step just taken."""
        last = getattr(self, "_last_state", None)
        if self._joint and obs.keys() == set(self.env.possible_agents):
            # what the env's state() computes, from the observations it already computed
            self._last_state = np.concatenate([obs[agent] for agent in self.env.possible_agents], axis=None)
            return self._last_state
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
        obs, rewards, terminations, truncations, infos = (self._step or self.env.step)(actions)
        return obs, rewards, terminations, truncations, self._with_state(infos, obs, rewards)

    def step_checked(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """:meth:`step` for actions the caller has checked against their Discrete/MultiDiscrete spaces (the
        emulator checks every action): PettingZoo's reset-order and bounds-checking wrappers are skipped.

        Nothing here checks the actions: an action out of its space's range is not refused (MPE would apply it
        modulo the number of moves). Call :meth:`step` with unchecked actions."""
        inner = self._checked_step or self._step or self.env.step
        obs, rewards, terminations, truncations, infos = inner(actions)
        return obs, rewards, terminations, truncations, self._with_state(infos, obs, rewards)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


def state_is_joint_observation(env: Any) -> bool:
    """True when ``env`` (an unwrapped PettingZoo env) defines ``state()`` as the float32 observations of its
    ``possible_agents`` concatenated, with its own ``observe`` (MPE's ``SimpleEnv`` without overrides: the state is
    then exactly what ``observe`` returned for every agent, in that order)."""
    module = sys.modules.get("mpe2._mpe_utils.simple_env")  # loaded by every MPE env; not imported for others
    base = getattr(module, "SimpleEnv", None)
    if base is None:
        return False
    kind = type(env)
    return issubclass(kind, base) and kind.state is base.state and kind.observe is base.observe


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
# Building it per env result
# --------------------------------------------------------------------------------------------------------------


def centralized_env(critic_input: str, env_fn: Callable[[], Any], env_name: str,
                    algo: str) -> tuple[str, EnvInfo, Callable[[], Any]]:
    """Resolve ``critic_input`` for the env of ``env_fn`` before its vector env is built.

    Args:
        critic_input: ``"auto"``, ``"state"`` or ``"concat"`` (``TrainConfig.critic_input``).
        env_fn: the env constructor.
        env_name: the env's name, for error messages.
        algo: the algorithm, for error messages.

    Returns:
        ``(mode, env_info, env_fn)``: ``mode`` ``"state"`` or ``"concat"`` (``"auto"``: the state when usable),
        the probed :class:`EnvInfo`, and the constructor to build the vector env with (wrapped in
        :class:`WithGlobalState` for ``"state"``).

    Raises:
        APIUsageError: ``"state"`` for an env without a usable ``state()``.
    """
    env_info = probe_env(env_fn)
    usable = env_info.state_space is not None
    if critic_input == "state" and not usable:
        raise APIUsageError(
            f"{algo}: critic_input='state' but {env_name!r} has no usable global state ({env_info.state_note}); use "
            "critic_input='concat' (every slot of the env concatenated) or 'auto'"
        )
    mode = "state" if critic_input == "state" or (critic_input == "auto" and usable) else "concat"
    if mode == "state" and not isinstance(env_fn, WithGlobalState):
        env_fn = WithGlobalState(env_fn)
    return mode, env_info, env_fn


class CentralizedInputs:
    """The centralized critic input of the rows of each env result (see the module docstring).

    Args:
        mode: ``"state"`` (the env's ``state()``, its constructor wrapped in :class:`WithGlobalState`) or
            ``"concat"`` (every slot of the env concatenated); see :func:`centralized_env`.
        env_info: the probed :class:`EnvInfo` (agent types; the state space for ``"state"``).
        obs_layout: the observation layout of one row.
        num_envs, agents_per_env: the vector env's envs and slots per env (rows are env-major).
        device: where the built inputs go.

    Attributes:
        size: width ``C`` of an input row (:func:`critic_input_size`).
        local_size: width of its last part, the slot's own features and one-hots (``F + A + T``).
        state_size: elements of the global state (None for ``"concat"``).
    """

    def __init__(self, mode: str, env_info: EnvInfo, obs_layout: Layout, num_envs: int, agents_per_env: int,
                 device: torch.device) -> None:
        if mode not in ("state", "concat"):
            raise APIUsageError(f"a centralized critic input is 'state' or 'concat', got {mode!r}")
        self.mode = mode
        self.obs_layout = obs_layout
        self.agents_per_env = agents_per_env
        self.device = device
        self.num_types = len(env_info.groups)
        state_space = env_info.state_space if mode == "state" else None
        self.state_size = None if state_space is None else int(np.prod(state_space.shape))
        self._scaling = None if state_space is None else _state_scaling(state_space)
        self.size = critic_input_size(obs_layout, agents_per_env, self.num_types, self.state_size)
        #: the last columns of a row that describe its own slot: its features and its slot and type one-hots
        self.local_size = summary_size(obs_layout) + agents_per_env + self.num_types
        size = self.state_size or 0
        self.states = np.zeros((num_envs, size), np.float32)  # latest scaled state() of each env
        self.final_states = np.zeros((num_envs, size), np.float32)  # state after an episode's last step
        self._cache: tuple[Any, Tensor] | None = None

    def describe(self) -> str:
        """Where the global part comes from, e.g. ``"concat: 3 slots"``."""
        return f"{self.mode}: " + (f"{self.agents_per_env} slots" if self.mode == "concat" else "the env's state()")

    def track(self, carry: Any) -> None:
        """Read each env's global state from an env result's infos (new episodes: from their ``reset_info``);
        call it once per env result, before its rows are built. Nothing to read for ``"concat"``."""
        if self.mode != "state":
            return
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
                self.states[env] = scale_state(current, self._scaling)
            if final is not None:
                self.final_states[env] = scale_state(final, self._scaling)

    def build(self, obs: np.ndarray, masks: np.ndarray, agent_types: np.ndarray | None,
              states: np.ndarray | None) -> Tensor:
        """:func:`critic_input` of env-major numpy rows ``obs [E * A, flat]``, ``masks [E * A]``,
        ``agent_types [E * A]`` (None: no types) and ``states [E, S]`` (None for ``"concat"``): float32
        ``[E * A, C]`` on the device."""
        a = self.agents_per_env
        envs = len(masks) // a
        if agent_types is None:
            agent_types = np.full(len(masks), -1, np.int32)

        def tensor(array: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)

        x = critic_input(self.obs_layout, tensor(obs).reshape(envs, a, -1), tensor(masks).reshape(envs, a),
                         tensor(agent_types).reshape(envs, a), self.num_types,
                         None if states is None else tensor(states))
        return x.reshape(envs * a, -1)

    def rows(self, carry: Any) -> Tensor:
        """float32 ``[R, C]``: the inputs of every row of the env result ``carry`` (built once per result)."""
        cached = self._cache
        if cached is not None and cached[0] is carry:
            return cached[1]
        states = self.states[carry.env_ids] if self.mode == "state" else None
        x = self.build(carry.obs, carry.masks, carry.agent_types, states)
        self._cache = (carry, x)
        return x

    def final_rows(self, carry: Any, positions: np.ndarray) -> Tensor:
        """float32 ``[len(positions), C]``: the inputs at the final step of the episodes that ended in ``carry``,
        for its rows at ``positions`` (int ``[P]``).

        For each env of those rows: slots whose agent ended in ``carry`` contribute their ``final_observation``;
        slots still live in an episode that goes on contribute their current observation; others are masked. The
        global state is the state after the final step.
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
        states = self.final_states[carry.env_ids[envs]] if self.mode == "state" else None
        agent_types = None if carry.agent_types is None else carry.agent_types[index]
        x = self.build(obs, masks, agent_types, states)
        where = np.searchsorted(index, positions)
        return x[torch.from_numpy(where).to(x.device)]

    def state_dict(self) -> dict[str, np.ndarray]:
        """The tracked global states (copies), for a checkpoint."""
        return {"states": self.states.copy(), "final_states": self.final_states.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; states of another shape (another env) are ignored."""
        for name in ("states", "final_states"):
            saved = state.get(name)
            if saved is not None and saved.shape == getattr(self, name).shape:
                getattr(self, name)[...] = saved
