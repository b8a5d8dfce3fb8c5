"""Agent spaces: fit the observation and action spaces of heterogeneous agents into one flat row per slot.

A multi-agent env may give its agents different spaces; its emulator needs one observation row and one flat
action shared by every slot. This module decides those common forms once per env and fits each agent into them.

Observations
    Spaces (after removing the ``action_mask`` entry) must be equal, or all 1-D ``Box`` of one dtype, which are
    zero-padded to the widest. The padded space is the union of every agent's bounds and contains the zero
    padding; integer bounds are clipped to the dtype's range.

Actions (the *mode* of the plan)
    * ``"same"``: every agent has the same action space; its flat form is used as is.
    * ``"discrete_pad"``: all ``Discrete``; padded to ``Discrete(max n)``.
    * ``"multi_pad"``: all discrete, some ``MultiDiscrete`` (or other multi-entry discrete spaces); padded to a
      ``MultiDiscrete`` of the elementwise largest ``nvec`` (missing entries count one choice).
    * ``"box_pad"``: all 1-D float ``Box``; padded to the widest, bounds the union; extra entries are ignored.

    In the discrete padded modes the choices beyond an agent's own are illegal: its :class:`AgentSpec` carries
    the exclusive upper bound per entry (``limit``) and a static legal-action row (``static_mask``), and places
    the env's own legal-action mask inside the padded row (``mask_base``, ``mask_index``).

Groups
    Agents are grouped by name without a trailing ``_<digits>`` (:func:`group_of`); a group's id is its index in
    order of first appearance.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import ACTION_MASK_KEY, split_action_mask
from shoal.emulation.layout import Layout, compile_layout
from shoal.errors import SpaceError

__all__ = ["AgentSpaces", "AgentSpec", "group_of", "plan_actions", "plan_observations"]

_GROUP_SUFFIX = re.compile(r"_\d+$")


def group_of(agent: str) -> str:
    """Agent group: the name without a trailing ``_<digits>`` (``"adversary_0"`` -> ``"adversary"``)."""
    return _GROUP_SUFFIX.sub("", str(agent))


@dataclass
class AgentSpec:
    """Everything needed to read and drive one agent, computed once per agent."""

    name: str
    group: int
    obs_space: spaces.Space  # as declared, action mask included (for the first-observation check)
    obs_layout: Layout  # without the action mask; may be narrower than the padded row
    layout_index: int  # index into AgentSpaces.layouts (one Flattener per slot and layout)
    mask_in_obs: bool
    action_space: spaces.Space
    to_native: Callable[[np.ndarray], Any]  # flat action row -> native action of this agent
    limit: int | np.ndarray | None  # padded discrete actions: exclusive upper bound per entry
    mask_base: np.ndarray | None  # padded: static legal row with the agent's own entries False
    mask_index: np.ndarray | None  # padded: positions of the agent's own mask entries in the row
    static_mask: np.ndarray | None  # padded: legal row when the env gives no mask (None = all True)
    discrete_n: int  # own Discrete(n, start): n (0 when the action space is not a single Discrete)
    discrete_start: int


def plan_observations(stripped: dict[str, spaces.Space]) -> tuple[Layout, bool]:
    """The common observation layout of agents with observation spaces ``stripped`` (action masks removed).

    Returns:
        ``(layout, padded)``: the first agent's layout when every space is equal (``padded`` False), otherwise
        the layout of the padded ``Box`` (``padded`` True).

    Raises:
        SpaceError: the spaces differ and are not all 1-D ``Box`` of one dtype.
    """
    agents = list(stripped)
    first = stripped[agents[0]]
    if all(stripped[a] == first for a in agents):
        return compile_layout(first), False

    def paddable(space: spaces.Space) -> bool:
        return isinstance(space, spaces.Box) and len(space.shape) == 1 and space.dtype == first.dtype

    for agent in agents:
        space = stripped[agent]
        if not (paddable(first) and paddable(space)):
            raise SpaceError(
                f"agents {agents[0]!r} and {agent!r} have different observation spaces ({first!r} vs "
                f"{space!r}); shoal only pads 1-D Box spaces of one dtype to a common width. Wrap the env so "
                "every agent has the same observation space (e.g. supersuit.pad_observations_v0) or emulate "
                "the groups separately."
            )
    width = max(stripped[a].shape[0] for a in agents)
    low = np.full(width, np.inf)
    high = np.full(width, -np.inf)
    for agent in agents:
        space = stripped[agent]
        w = space.shape[0]
        low[:w] = np.minimum(low[:w], np.asarray(space.low, np.float64))
        high[:w] = np.maximum(high[:w], np.asarray(space.high, np.float64))
        low[w:] = np.minimum(low[w:], 0.0)  # the zero padding must lie inside the padded space
        high[w:] = np.maximum(high[w:], 0.0)
    dtype = first.dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = np.clip(low, info.min, info.max), np.clip(high, info.min, info.max)
    return compile_layout(spaces.Box(low.astype(dtype), high.astype(dtype), (width,), dtype)), True


def plan_actions(layouts: dict[str, ActionLayout]) -> tuple[ActionLayout, str]:
    """The common flat action of agents with action layouts ``layouts``.

    Returns:
        ``(action_layout, mode)`` with ``mode`` one of ``"same"``, ``"discrete_pad"``, ``"multi_pad"``,
        ``"box_pad"`` (see the module docstring). In mode ``"same"`` the first agent's layout is returned.

    Raises:
        SpaceError: the spaces differ and are neither all discrete nor all 1-D float ``Box``.
    """
    agents = list(layouts)
    first = layouts[agents[0]]
    if all(layouts[a].space == first.space for a in agents):
        return first, "same"
    kinds = {layouts[a].kind for a in agents}
    if kinds == {"discrete"}:
        return ActionLayout(spaces.Discrete(max(int(layouts[a].flat_space.n) for a in agents))), "discrete_pad"
    if kinds <= {"discrete", "multi_discrete"}:
        width = max(layouts[a].num_discrete for a in agents)
        nvec = np.ones(width, np.int64)
        for agent in agents:
            own = layouts[agent].nvec
            nvec[: own.size] = np.maximum(nvec[: own.size], own)
        return ActionLayout(spaces.MultiDiscrete(nvec)), "multi_pad"
    if kinds == {"continuous"}:
        width = max(layouts[a].num_continuous for a in agents)
        low, high = np.full(width, np.inf), np.full(width, -np.inf)
        for agent in agents:
            own = layouts[agent]
            w = own.num_continuous
            low[:w] = np.minimum(low[:w], own.low)
            high[:w] = np.maximum(high[:w], own.high)
        dtype = np.result_type(*[layouts[a].flat_dtype for a in agents])
        return ActionLayout(spaces.Box(low.astype(dtype), high.astype(dtype), (width,), dtype)), "box_pad"
    other = next(a for a in agents if layouts[a].kind != first.kind)
    raise SpaceError(
        f"agents {agents[0]!r} and {other!r} have action spaces shoal cannot pad to one flat action "
        f"({first.space!r} vs {layouts[other].space!r}): agents must share one action space, or all be "
        "discrete, or all be 1-D float Box. Wrap the env so every agent has the same action space (e.g. "
        "supersuit.pad_action_space_v0) or emulate the groups separately."
    )


class AgentSpaces:
    """The common flat forms of an env's agents, and every agent's fit into them.

    Args:
        observation_spaces: agent -> declared observation space (action mask included), for every possible
            agent, in ``possible_agents`` order.
        action_spaces: agent -> action space, same agents.
        action_mask_key: key of the legal-action mask in Dict observations; ``None`` disables it.

    Attributes:
        obs_layout: layout of the common observation row.
        obs_padded: True when agents' observations are zero-padded to ``obs_layout``.
        action_layout: layout of the common flat action.
        action_mode: ``"same" | "discrete_pad" | "multi_pad" | "box_pad"``.
        agent_groups: group names by first appearance (possible agents first, then agents fitted later).
        obs_layouts: group name -> the (unpadded) observation layout of its first agent.
        layouts: every distinct (unpadded) observation layout; ``AgentSpec.layout_index`` indexes it.
        specs: agent -> :class:`AgentSpec` for every possible agent.
    """

    def __init__(self, observation_spaces: dict[str, spaces.Space], action_spaces: dict[str, spaces.Space],
                 action_mask_key: str | None = ACTION_MASK_KEY) -> None:
        self.action_mask_key = action_mask_key
        self.agent_groups: list[str] = []
        self._group_ids: dict[str, int] = {}
        for agent in observation_spaces:
            self.group_id(agent)
        self.layouts: list[Layout] = []
        stripped = {a: split_action_mask(space, action_mask_key)[0] for a, space in observation_spaces.items()}
        self.obs_layout, self.obs_padded = plan_observations(stripped)
        if not self.obs_padded:
            self.layouts.append(self.obs_layout)
        acts = {a: ActionLayout(space) for a, space in action_spaces.items()}
        self.action_layout, self.action_mode = plan_actions(acts)
        self.obs_layouts: dict[str, Layout] = {}
        self.specs = {a: self.fit(a, space, acts[a]) for a, space in observation_spaces.items()}

    def group_id(self, agent: str) -> int:
        """Id of ``agent``'s group (see :func:`group_of`), registering a new group on first sight."""
        group = group_of(agent)
        gid = self._group_ids.get(group)
        if gid is None:
            gid = self._group_ids[group] = len(self.agent_groups)
            self.agent_groups.append(group)
        return gid

    def layout_index(self, space: spaces.Space) -> int:
        """Index into ``layouts`` of the layout of ``space``, compiling and adding it on first sight."""
        for i, layout in enumerate(self.layouts):
            if layout.space == space:
                return i
        self.layouts.append(compile_layout(space))
        return len(self.layouts) - 1

    def slot_limits(self, num_slots: int) -> np.ndarray | None:
        """Exclusive upper bounds of each slot's padded discrete actions before any agent is seated.

        Returns:
            ``int64[num_slots]`` (mode ``"discrete_pad"``), ``int64[num_slots, len(nvec)]`` (``"multi_pad"``)
            holding the padded space's own bounds, or ``None`` when actions are not padded discrete.
        """
        if self.action_mode == "discrete_pad":
            return np.full(num_slots, int(self.action_layout.flat_space.n), np.int64)
        if self.action_mode == "multi_pad":
            return np.tile(self.action_layout.nvec, (num_slots, 1))
        return None

    def fit(self, agent: str, obs_space: spaces.Space, own: ActionLayout) -> AgentSpec:
        """Fit one agent's spaces into the common flat forms.

        Args:
            agent: the agent's name.
            obs_space: its declared observation space (action mask included).
            own: the layout of its action space.

        Raises:
            SpaceError: a space does not fit (e.g. an agent that appears after planning with a wider space).
        """
        stripped, mask_in_obs = split_action_mask(obs_space, self.action_mask_key)
        index = self.layout_index(stripped)
        layout = self.layouts[index]
        if layout is not self.obs_layout:
            row = self.obs_layout
            if not (self.obs_padded and isinstance(stripped, spaces.Box) and len(stripped.shape) == 1
                    and layout.flat_dtype == row.flat_dtype and layout.flat_size <= row.flat_size):
                raise SpaceError(
                    f"agent {agent!r} has observation space {stripped!r}, which does not fit the emulator's "
                    f"observation row {row.flat_space!r}; give every agent the same observation space")
        group = self.group_id(agent)
        self.obs_layouts.setdefault(self.agent_groups[group], layout)
        to_native, limit, static, mask_index = self._fit_action(agent, own)
        mask_base = None
        if static is not None:
            mask_base = static.copy()
            mask_base[mask_index] = False
        root = own.space if isinstance(own.space, spaces.Discrete) else None
        return AgentSpec(agent, group, obs_space, layout, index, mask_in_obs, own.space, to_native, limit,
                         mask_base, mask_index, static, int(root.n) if root else 0, int(root.start) if root else 0)

    def _fit_action(self, agent: str, own: ActionLayout) -> tuple[
            Callable[[np.ndarray], Any], int | np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``(to_native, limit, static_mask, mask_index)`` of one agent's action layout ``own``."""
        mode = self.action_mode
        flat = self.action_layout
        if mode == "same":
            if own.space != flat.space:
                raise SpaceError(f"agent {agent!r} has action space {own.space!r}; the emulator's agents share "
                                 f"{flat.space!r}")
            return flat.to_native, None, None, None
        if mode == "discrete_pad" and own.kind == "discrete":
            n = int(own.flat_space.n)
            return own.to_native, n, np.arange(int(flat.flat_space.n)) < n, np.arange(n)
        if mode == "multi_pad" and own.kind in ("discrete", "multi_discrete") and _fits(own.nvec, flat.nvec):
            k = own.num_discrete
            limit = np.ones(flat.nvec.size, np.int64)
            limit[:k] = own.nvec
            offsets = np.concatenate([[0], np.cumsum(flat.nvec)[:-1]])
            static = np.zeros(int(flat.nvec.sum()), bool)
            mask_index = np.concatenate([offsets[j] + np.arange(limit[j]) for j in range(k)])
            for j in range(flat.nvec.size):
                static[offsets[j] : offsets[j] + limit[j]] = True
            to_native = _first_entry(own.to_native) if own.kind == "discrete" else _leading(own.to_native, k)
            return to_native, limit, static, mask_index
        if mode == "box_pad" and own.kind == "continuous" and own.num_continuous <= flat.num_continuous:
            return _leading(own.to_native, own.num_continuous), None, None, None
        raise SpaceError(f"agent {agent!r} has action space {own.space!r}, which does not fit the emulator's "
                         f"flat action space {flat.flat_space!r}")


def _first_entry(fn: Callable[[Any], Any]) -> Callable[[np.ndarray], Any]:
    return lambda row: fn(row[0])


def _leading(fn: Callable[[np.ndarray], Any], k: int) -> Callable[[np.ndarray], Any]:
    return lambda row: fn(row[:k])


def _fits(own: np.ndarray, padded: np.ndarray) -> bool:
    return own.size <= padded.size and bool((own <= padded[: own.size]).all())
