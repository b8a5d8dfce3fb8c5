"""Stepping a PettingZoo ``ParallelEnv`` into slots: part of :class:`~shoal.emulation.pettingzoo.PettingZooEmulator`.

Every acting agent's outcome goes to its slot; agents that end are reported once (see the slot rules in
:mod:`shoal.emulation.pettingzoo`), agents that appear take free slots, and the env resets in the same step when
no agent is left.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shoal.emulation.base import checked_reward

__all__ = ["REAL", "ParallelSteps"]

#: Rewards taken as they are; anything else must pass :func:`~shoal.emulation.base.checked_reward` (0-d arrays
#: do, None, strings and vectors do not). Complex numbers are numbers but not rewards.
REAL = (float, int, np.floating, np.integer, np.bool_)

_MISSING = object()

StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]


class ParallelSteps:
    """The parallel-env half of :class:`~shoal.emulation.pettingzoo.PettingZooEmulator` (uses its slot
    bookkeeping: ``_assign``, ``_write_live``, ``_report_end``, ``_clear_slots``...)."""

    def _start_parallel(self, obs: dict[str, Any], env_infos: dict[str, Any], infos: list[dict[str, Any]],
                        reset_key: str | None) -> None:
        """Assign slots for a new episode's agents and write their first observations."""
        if self._check:
            for agent, value in obs.items():
                self._check_first(agent, value)
            self._check = False
        masks = self.buffers.masks
        acting = self._acting
        env_infos = env_infos or {}
        for agent, value in obs.items():
            slot = self._assign(agent)
            info = env_infos.get(agent)
            self._write_live(slot, self._slot_spec[slot], value, info)
            masks[slot] = True
            acting.append(slot)
            if reset_key is None:
                infos[slot] = dict(info) if info else {}
            else:
                infos[slot][reset_key] = dict(info) if info else {}

    def _step_parallel(self, actions: dict[int, Any]) -> StepResult:
        env = self.env
        specs = self._slot_spec
        slot_agents = self.slot_agents
        acting = self._acting
        obs, rewards, terms, truncs, env_infos = self._parallel_step({slot_agents[s]: a for s, a in actions.items()})
        b = self.buffers
        n = self.num_agents
        b.rewards[:] = 0.0
        b.terminals[:] = False
        b.truncations[:] = False
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        stats = self.stats
        still: list[int] = []
        seen = 0
        for slot in acting:
            agent = slot_agents[slot]
            spec = specs[slot]
            reward, terminated, truncated = _outcome(agent, rewards, terms, truncs)
            stats.add(slot, reward)
            value = obs.get(agent, _MISSING)
            if value is not _MISSING:
                seen += 1
            info = env_infos.get(agent)
            if terminated or truncated or value is _MISSING:
                # An agent that vanished without a flag is reported as truncated (no final observation).
                final = None if value is _MISSING else self._row_copy(slot, spec, value)
                self._report_end(slot, infos, reward, terminated, truncated or not terminated, info, final)
            else:
                b.rewards[slot] = reward
                self._write_live(slot, spec, value, info)
                if info:
                    infos[slot] = dict(info)
                still.append(slot)
        if len(obs) > seen:  # agents that spawned this step (or dead agents the env still observes: ignored)
            for agent, value in obs.items():
                if agent in self._slot_of:
                    continue
                slot = self._assign(agent)
                spec = specs[slot]
                info = env_infos.get(agent)
                reward, terminated, truncated = _outcome(agent, rewards, terms, truncs)
                stats.add_reward(slot, reward)
                if terminated or truncated:  # born finished: reported once, never acts
                    self._report_end(slot, infos, reward, terminated, truncated, info,
                                     self._row_copy(slot, spec, value))
                    continue
                b.rewards[slot] = reward
                self._write_live(slot, spec, value, info)
                b.masks[slot] = True
                if info:
                    infos[slot] = dict(info)
                still.append(slot)
        self._acting = still
        if not env.agents:
            for slot in still:  # the episode ended under agents that were not flagged: truncated
                self._report_end(slot, infos, float(b.rewards[slot]), False, True, infos[slot],
                                 b.obs[slot].copy())
            obs, env_infos = env.reset()
            self._clear_slots()
            self._start_parallel(obs, env_infos, infos, "reset_info")
        return b.obs, b.rewards, b.terminals, b.truncations, infos


def _outcome(agent: str, rewards: dict[str, Any], terms: dict[str, Any], truncs: dict[str, Any]
             ) -> tuple[Any, bool, bool]:
    """``agent``'s reward (checked to be one number; 0 when absent), terminated and truncated flags of a step."""
    reward = rewards.get(agent, 0.0)
    if not isinstance(reward, REAL):
        reward = checked_reward(f"agent {agent!r}", reward)
    return reward, bool(terms.get(agent, False)), bool(truncs.get(agent, False))
