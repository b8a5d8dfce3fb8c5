"""PettingZooEmulator: a PettingZoo ``ParallelEnv`` or ``AECEnv`` as fixed slots of flat observations and actions.

Slots
    ``num_agents = max_agents or len(env.possible_agents)``. When there are at least as many slots as possible
    agents, agent ``possible_agents[i]`` always sits in slot ``i`` (stable ids). Agents that are not in
    ``possible_agents`` (spawning envs) take the lowest free slot, preferring slots no possible agent owns. An
    agent keeps its slot for the whole episode; slots free up only when the env's episode ends. More live agents
    than slots raises :class:`~shoal.errors.CapacityError`.

Per step, for slot ``i``
    * ``masks[i]``: the slot holds a live agent that must act now (parallel: every live agent; AEC: only the
      agent whose turn it is). Its observation row and action-mask row are valid.
    * ``rewards[i]``, ``terminals[i]``, ``truncations[i]`` belong to the slot's most recent action. In an AEC env
      the reward an agent earns while others move is summed and delivered with its next turn or at its end.
    * An agent that terminates or truncates is reported once (``terminals``/``truncations`` True, its last
      reward, ``masks`` False, zero row, ``infos[i]["final_observation"]`` = its flat final observation and
      ``infos[i]["episode"] = {"return", "length"}``); afterwards its slot is masked, zero-filled, reward 0.
    * When the env's episode ends (``env.agents`` empty) the env is reset in the same step (no seed, its RNG
      continues). That step's rewards/terminals/truncations describe the finished episode, while ``obs`` and
      ``masks`` describe the new one; ``infos[i]["reset_info"]`` holds the new agent's reset info.

Heterogeneous agents
    Observation spaces must be equal or 1-D ``Box`` of one dtype (zero-padded to the widest); action spaces
    equal, all discrete (padded, the extra choices masked out statically) or all 1-D float ``Box`` (padded,
    extra entries ignored). :mod:`shoal.emulation.agent_spaces` plans the padding.

Action masks
    ``action_masks[i]`` is the legal-action mask of the live agent in slot ``i``: taken from the observation Dict
    or its info under ``action_mask_key``, combined with the static mask of padded action spaces; all True when
    the env gives none. Rows of masked (dead, waiting or empty) slots are all True, so a distribution built over
    every row stays valid; those rows never reach the learner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv

from shoal.emulation.actions import ActionLayout
from shoal.emulation.agent_spaces import AgentSpaces, AgentSpec, group_of
from shoal.emulation.base import ACTION_MASK_KEY, Buffers, Emulator, State, add_episode, bad_observation
from shoal.emulation.finite import FiniteCheck, first_nonfinite, nonfinite_error
from shoal.emulation.flatten import Flattener
from shoal.emulation.parallel_step import direct_parallel_step as _direct_step
from shoal.emulation.pettingzoo_aec import AECSteps
from shoal.emulation.pettingzoo_parallel import ParallelSteps, StepResult
from shoal.emulation.stats import EpisodeStats
from shoal.errors import APIUsageError, CapacityError, EnvError, NonFiniteError, SpaceError

__all__ = ["PettingZooEmulator", "group_of"]

class PettingZooEmulator(ParallelSteps, AECSteps, Emulator):
    """Wrap a PettingZoo ``ParallelEnv`` or ``AECEnv`` as ``num_agents`` slots (see the module docstring).

    Shapes for ``N = num_agents``: ``obs`` ``[N, obs_layout.flat_size]`` of ``obs_layout.flat_dtype``; actions
    ``[N, *action_layout.flat_shape]``; ``rewards`` ``float32[N]``; ``terminals``, ``truncations``, ``masks``
    ``bool[N]``; ``action_masks`` ``bool[N, mask_width]`` (None for continuous actions); ``agent_types``
    ``int32[N]`` (index into ``agent_groups``; -1 for an empty slot). The returned arrays are the emulator's
    buffers: they are overwritten by the next call, copy what you keep.

    Args:
        env: a ``pettingzoo.ParallelEnv`` or ``pettingzoo.AECEnv``.
        max_agents: number of slots; default ``len(env.possible_agents)``.
        buffers: arrays to write into (see :class:`Buffers`); allocated when omitted.
        action_mask_key: key of the legal-action mask in Dict observations or infos; ``None`` disables it.
        check_observations: check every agent's first observation against its observation space.
        direct_parallel_step: step a PettingZoo ``aec_to_parallel`` env without the work its wrapper discards
            (same results, see :mod:`shoal.emulation.parallel_step`); turn off for an env whose ``observe()`` has
            side effects.
        check_finite: raise :class:`~shoal.errors.NonFiniteError` when a reward or a float observation entry
            (final observations included) is NaN or infinite, naming the agent, its slot, the field and the step.
            One scan of the reward and observation buffers per step: about 0.2 us with the native module, a few us
            with numpy alone (a multi-agent step costs tens of us). Integer observations are never scanned.

    Attributes:
        env: the wrapped env.
        is_parallel: True for a ``ParallelEnv``, False for an ``AECEnv``.
        slot_agents: name of the agent in each slot for the current episode (None for an empty slot).
        agent_groups: group names (agent name without ``_<digits>``), by first appearance in ``possible_agents``.
        obs_layouts: the (unpadded) observation layout of each group.
        stats: per-slot :class:`EpisodeStats`.
    """

    def __init__(self, env: ParallelEnv | AECEnv, max_agents: int | None = None, buffers: Buffers | None = None,
                 action_mask_key: str | None = ACTION_MASK_KEY, check_observations: bool = True,
                 direct_parallel_step: bool = True, check_finite: bool = True) -> None:
        if isinstance(env, ParallelEnv):
            self.is_parallel = True
        elif isinstance(env, AECEnv):
            self.is_parallel = False
        else:
            raise APIUsageError(f"PettingZooEmulator needs a pettingzoo.ParallelEnv or AECEnv, got "
                                f"{type(env).__name__}; use GymnasiumEmulator for gymnasium envs")
        self.env = env
        possible = list(env.possible_agents)
        if not possible:
            raise APIUsageError(f"{type(env).__name__}.possible_agents is empty: list the agents the env can have")
        if max_agents is not None and (not isinstance(max_agents, int | np.integer) or max_agents < 1):
            raise APIUsageError(f"max_agents must be a positive int or None, got {max_agents!r}")
        self.num_agents = int(max_agents) if max_agents is not None else len(possible)
        self.possible_agents = possible
        self._mask_key = action_mask_key
        self._check = check_observations
        self._steps = 0  # step() calls since the last reset(), for error messages
        # Stable ids: possible agent i owns slot i when every possible agent fits.
        self._reserved = {a: i for i, a in enumerate(possible)} if self.num_agents >= len(possible) else {}

        # The common (padded) flat forms of every possible agent's spaces.
        self._plan = plan = AgentSpaces({a: env.observation_space(a) for a in possible},
                                        {a: env.action_space(a) for a in possible}, action_mask_key)
        self.obs_layout = plan.obs_layout
        self._finite = FiniteCheck(self.obs_layout) if check_finite else None
        self.action_layout = plan.action_layout
        self.agent_groups = plan.agent_groups
        self.obs_layouts = plan.obs_layouts
        self._layouts = plan.layouts
        self._specs: dict[str, AgentSpec] = plan.specs
        self._spawned_specs: dict[str, AgentSpec] = {}
        # Discrete agents take a fast path in _convert; cleared by any non-Discrete agent.
        self._discrete_fast = plan.action_mode in ("same", "discrete_pad") and all(
            spec.discrete_n for spec in self._specs.values())
        self._parallel_step = env.step if self.is_parallel else None
        if self.is_parallel and direct_parallel_step:
            checked = all(isinstance(spec.action_space, spaces.Discrete | spaces.MultiDiscrete)
                          for spec in self._specs.values())
            self._parallel_step = _direct_step(env, actions_checked=checked) or env.step

        n = self.num_agents
        self.slot_agents: list[str | None] = [None] * n
        self._slot_of: dict[str, int] = {}
        self._slot_spec: list[AgentSpec | None] = [None] * n
        self._names = [f"empty slot {i}" for i in range(n)]
        self._ended = [False] * n  # the slot's agent was reported terminated/truncated this episode
        self._mask_dirty = [False] * n  # the action-mask row differs from all True
        self._acting: list[int] = []  # parallel: slots with masks True
        self._selected = -1  # AEC: slot whose turn it is
        self._pending = [0.0] * n  # AEC: reward earned since the slot's last action
        self.stats = EpisodeStats(n)
        self._limits = plan.slot_limits(n)
        self._default_limit = None if self._limits is None else self._limits[0].copy()
        self.buffers = Buffers.allocate(self.buffer_spec())
        if buffers is not None:
            self.attach(buffers)
        else:
            self._bind()

    # ----------------------------------------------------------------------------------------------------------
    # Spaces
    # ----------------------------------------------------------------------------------------------------------

    def _spec(self, agent: str) -> AgentSpec:
        spec = self._specs.get(agent) or self._spawned_specs.get(agent)
        if spec is None:
            env = self.env
            spec = self._plan.fit(agent, env.observation_space(agent), ActionLayout(env.action_space(agent)))
            if not spec.discrete_n:
                self._discrete_fast = False
            self._spawned_specs[agent] = spec
        return spec

    # ----------------------------------------------------------------------------------------------------------
    # Buffers and slots
    # ----------------------------------------------------------------------------------------------------------

    def _bind(self) -> None:
        self._make_writers()
        self.buffers.agent_types[:] = -1
        if self.buffers.action_masks is not None:
            self.buffers.action_masks[:] = True

    def _make_writers(self) -> None:
        obs = self.buffers.obs
        self._rows: list[dict[int, Flattener]] = [
            {i: Flattener(layout, obs[slot, : layout.flat_size]) for i, layout in enumerate(self._layouts)}
            for slot in range(self.num_agents)
        ]

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickling copies each array on its own: point the row writers at the restored buffers again.
        if "_finite" not in state:  # a snapshot from before the option: checked, the default
            state["_finite"], state["_steps"] = FiniteCheck(state["obs_layout"]), 0
        self.__dict__.update(state)
        self._make_writers()

    def _agent_who(self, slot: int) -> str:
        """The agent in ``slot`` and its env, for error messages."""
        metadata = getattr(self.env, "metadata", None)
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return f"agent {self.slot_agents[slot]!r} (slot {slot}) of {name or type(self.env.unwrapped).__name__}"

    def _writer(self, slot: int, spec: AgentSpec) -> Flattener:
        writers = self._rows[slot]
        writer = writers.get(spec.layout_index)
        if writer is None:  # a spawned agent brought a new (narrower) layout
            writer = writers[spec.layout_index] = Flattener(
                spec.obs_layout, self.buffers.obs[slot, : spec.obs_layout.flat_size])
        return writer

    def _clear_slots(self) -> None:
        """Forget the episode's slot assignment: every slot empty, masked and zero-filled."""
        b = self.buffers
        b.obs[...] = 0
        b.masks[:] = False
        b.agent_types[:] = -1
        if b.action_masks is not None:
            b.action_masks[:] = True
        n = self.num_agents
        self.slot_agents[:] = [None] * n
        self._slot_of.clear()
        self._slot_spec[:] = [None] * n
        self._names[:] = [f"empty slot {i}" for i in range(n)]
        self._ended[:] = [False] * n
        self._mask_dirty[:] = [False] * n
        self._pending[:] = [0.0] * n
        self._acting = []
        self._selected = -1
        self._spawned_specs.clear()
        if self._limits is not None:
            self._limits[:] = self._default_limit
        self.stats.reset()

    def _assign(self, agent: str) -> int:
        """Give ``agent`` a slot for the rest of the episode."""
        slots = self.slot_agents
        slot = self._reserved.get(agent, -1)
        if slot < 0 or slots[slot] is not None:
            first = len(self._reserved)  # prefer slots no possible agent owns
            order = [*range(first, self.num_agents), *range(first)]
            slot = next((i for i in order if slots[i] is None), -1)
            if slot < 0:
                raise CapacityError(
                    f"agent {agent!r} appeared but all {self.num_agents} slots are taken (max_agents="
                    f"{self.num_agents}, held by {slots}); raise max_agents to the largest number of agents an "
                    f"episode can have, e.g. PettingZooEmulator(env, max_agents={2 * self.num_agents})")
        spec = self._spec(agent)
        slots[slot] = agent
        self._slot_of[agent] = slot
        self._slot_spec[slot] = spec
        self._names[slot] = f"agent {agent!r} (slot {slot})"
        self.buffers.agent_types[slot] = spec.group
        if self._limits is not None:
            self._limits[slot] = spec.limit
        return slot

    def _write_action_mask(self, slot: int, spec: AgentSpec, mask: Any) -> None:
        row = self.buffers.action_masks
        if row is None:
            return
        row = row[slot]
        if mask is not None:
            mask = np.asarray(mask).reshape(-1)
            try:
                if spec.mask_index is None:
                    row[:] = mask
                else:
                    row[:] = spec.mask_base
                    row[spec.mask_index] = mask
            except ValueError:
                width = row.size if spec.mask_index is None else spec.mask_index.size
                raise EnvError(
                    f"agent {spec.name!r}: its {self._mask_key!r} has {mask.size} entries, but its action space "
                    f"{spec.action_space!r} needs {width} (one per choice of each discrete entry)") from None
            self._mask_dirty[slot] = True
        elif spec.static_mask is not None:
            row[:] = spec.static_mask
            self._mask_dirty[slot] = True
        elif self._mask_dirty[slot]:
            row[:] = True
            self._mask_dirty[slot] = False

    def _write_live(self, slot: int, spec: AgentSpec, obs: Any, info: Any) -> None:
        """Write a live agent's observation and legal actions into its slot."""
        try:
            self._writer(slot, spec).write(obs)
        except SpaceError as exc:
            raise bad_observation(self._agent_who(slot), exc) from None
        mask = None
        key = self._mask_key
        if key is not None:
            if spec.mask_in_obs:
                mask = obs[key]
            elif info and key in info:
                mask = info[key]
        self._write_action_mask(slot, spec, mask)

    def _idle(self, slot: int) -> None:
        """Mask a slot and zero its rows (a dead agent, or an AEC agent waiting for its turn)."""
        b = self.buffers
        b.masks[slot] = False
        b.obs[slot] = 0
        if self._mask_dirty[slot]:
            b.action_masks[slot] = True
            self._mask_dirty[slot] = False

    def _row_copy(self, slot: int, spec: AgentSpec, obs: Any) -> np.ndarray:
        """Flatten ``obs`` through the slot's row and return a copy of the (padded) row."""
        try:
            self._writer(slot, spec).write(obs)
        except SpaceError as exc:
            raise bad_observation(self._agent_who(slot), exc) from None
        return self.buffers.obs[slot].copy()

    def _report_end(self, slot: int, infos: list[dict[str, Any]], reward: float, terminated: bool,
                    truncated: bool, info: Any, final: np.ndarray | None) -> None:
        b = self.buffers
        b.rewards[slot] = reward
        b.terminals[slot] = terminated
        b.truncations[slot] = truncated
        out = dict(info) if info else {}
        if final is not None:
            out["final_observation"] = final
        add_episode(out, self.stats.finish(slot))
        infos[slot] = out
        self._ended[slot] = True
        self._idle(slot)

    def _check_first(self, agent: str, obs: Any) -> None:
        self.check_first_observation(self._spec(agent).obs_space, obs, f"agent {agent!r}")

    # ----------------------------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Reset the env (seeded when ``seed`` is given) and assign slots.

        Returns:
            ``obs`` ``[N, flat_size]`` (padded and absent slots zero-filled) and ``infos``, a list of ``N`` dicts
            (the env's reset info for each agent's slot, ``{}`` elsewhere).
        """
        if self._state is State.CLOSED:
            self._require_ready("reset")
        self._clear_slots()
        b = self.buffers
        b.rewards[:] = 0.0
        b.terminals[:] = False
        b.truncations[:] = False
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_agents)]
        if self.is_parallel:
            obs, env_infos = self.env.reset(seed=seed, options=options)
            self._start_parallel(obs, env_infos, infos, None)
        else:
            self.env.reset(seed=seed, options=options)
            self._start_aec(infos, None)
        self._state = State.READY
        self._steps = 0
        if self._finite is not None:
            self._verify(infos)
        return b.obs, infos

    def step(self, actions: np.ndarray) -> StepResult:
        """Apply the flat ``actions`` ``[N, *action_layout.flat_shape]`` of the live slots (``masks``).

        Rows of masked slots are ignored (any value). Episodes auto-reset in the same step.

        Returns:
            ``(obs [N, flat_size], rewards float32[N], terminals bool[N], truncations bool[N], infos)`` with
            ``infos`` a list of ``N`` dicts.
        """
        if self._state is not State.READY:
            self._require_ready("step")
        if self.is_parallel:
            out = self._step_parallel(self._convert(actions, self._acting))
        else:
            out = self._step_aec(self._convert(actions, [self._selected]))
        self._steps += 1
        if self._finite is not None:
            self._verify(out[4])
        return out

    def _verify(self, infos: list[dict[str, Any]]) -> None:
        """Raise :class:`NonFiniteError` for a NaN or infinity in the rewards, the observation rows or the final
        observations of this step (one native scan of each buffer; the infos only where an episode ended)."""
        b, finite = self.buffers, self._finite
        if first_nonfinite(b.rewards) >= 0 or finite.any_bad(b.obs):
            slot = first_nonfinite(b.rewards)
            if slot >= 0:
                raise self._nonfinite(slot, "reward", b.rewards[slot])
            raise self._nonfinite(*finite.first_bad(b.obs))
        if any(infos):
            for slot, info in enumerate(infos):
                final = info.get("final_observation") if info else None
                if final is not None and finite.any_bad(np.asarray(final)):
                    found = finite.first_bad(np.asarray(final))
                    raise self._nonfinite(slot, f"{found[1]} (the final observation)", found[2])

    def _nonfinite(self, slot: int, field: str, value: Any) -> NonFiniteError:
        when = "on reset" if self._steps == 0 else f"at step {self._steps} since reset()"
        return nonfinite_error(self._agent_who(slot), field, value, when,
                               "To let such values through, pass check_finite=False to shoal.emulate.")

    def _convert(self, actions: Any, live: list[int]) -> dict[int, Any]:
        """Validate the flat actions and convert the rows of the ``live`` slots: slot -> native action."""
        specs = self._slot_spec
        if (self._discrete_fast and type(actions) is np.ndarray and actions.dtype.kind in "iu"
                and actions.shape == (self.num_agents,)):
            # Fast path for Discrete agents: plain ints, range-checked against each agent's own n.
            values = actions.tolist()
            out: dict[int, Any] = {}
            for slot in live:
                value = values[slot]
                spec = specs[slot]
                if not 0 <= value < spec.discrete_n:
                    break
                out[slot] = value + spec.discrete_start
            else:
                return out
        actions = self._validate(actions)
        return {slot: specs[slot].to_native(actions[slot]) for slot in live}

    def _validate(self, actions: Any) -> np.ndarray:
        actions = np.asarray(actions)
        layout = self.action_layout
        expected = (self.num_agents, *layout.flat_shape)
        if actions.shape != expected and actions.size != int(np.prod(expected)):
            raise APIUsageError(
                f"actions have shape {actions.shape}; expected {expected}: one flat action of "
                f"{layout.flat_space!r} per slot, in slot order {self.slot_agents} (rows of masked slots are "
                "ignored but must be present)")
        live = self.buffers.masks
        actions = layout.validate(actions, self.num_agents, live=live, names=self._names)
        if self._limits is not None:
            bad = actions >= self._limits
            if bad.ndim > 1:
                bad = bad.any(axis=1)
            bad &= live
            if bad.any():
                slot = int(np.flatnonzero(bad)[0])
                spec = self._slot_spec[slot]
                raise APIUsageError(
                    f"action {actions[slot].tolist()} for {self._names[slot]} is outside its own action space "
                    f"{spec.action_space!r}: entries must be below {np.asarray(spec.limit).tolist()} (the padded "
                    "choices beyond it are illegal; use action_masks)")
        return actions
