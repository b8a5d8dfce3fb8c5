"""Stepping a turn-based PettingZoo ``AECEnv`` into slots: part of
:class:`~shoal.emulation.pettingzoo.PettingZooEmulator`.

Only the selected agent acts; the reward an agent earns while others move is summed and delivered with its next
turn or its episode's end; finished agents are reported (and stepped with ``None``) until a live agent is
selected, and the env resets in the same step when no agent is left.
"""

from __future__ import annotations

from typing import Any

from pettingzoo import AECEnv

from shoal.emulation.base import checked_reward
from shoal.emulation.pettingzoo_parallel import REAL, StepResult

__all__ = ["AECSteps"]


class AECSteps:
    """The AEC half of :class:`~shoal.emulation.pettingzoo.PettingZooEmulator` (uses its slot bookkeeping:
    ``_assign``, ``_write_live``, ``_report_end``, ``_idle``, ``_clear_slots``...)."""

    def _start_aec(self, infos: list[dict[str, Any]], reset_key: str | None) -> None:
        """Assign slots for a new episode's agents, then select the first live agent."""
        env = self.env
        self._src = src = _state_source(env)
        if self._check:
            for agent in src.agents:
                self._check_first(agent, env.observe(agent))
            self._check = False
        env_infos = src.infos
        for agent in src.agents:
            slot = self._assign(agent)
            info = env_infos.get(agent)
            if reset_key is None:
                infos[slot] = dict(info) if info else {}
            else:
                infos[slot][reset_key] = dict(info) if info else {}
        self._advance(infos, fresh=True)

    def _accumulate(self) -> None:
        """Add ``env.rewards`` (the rewards of the last ``env.step``) to every slot's pending reward."""
        slot_of = self._slot_of
        pending = self._pending
        stats = self.stats
        for agent, reward in self._src.rewards.items():
            if not isinstance(reward, REAL):
                reward = checked_reward(f"agent {agent!r}", reward)
            if reward:
                slot = slot_of.get(agent)
                if slot is None:
                    slot = self._assign(agent)
                pending[slot] += reward
                stats.add_reward(slot, reward)

    def _step_aec(self, actions: dict[int, Any]) -> StepResult:
        b = self.buffers
        slot = self._selected
        b.rewards[:] = 0.0
        b.terminals[:] = False
        b.truncations[:] = False
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_agents)]
        self.stats.add(slot, 0.0)  # its reward arrives through env.rewards
        self.env.step(actions[slot])
        self._idle(slot)
        self._selected = -1
        self._accumulate()
        self._advance(infos, fresh=False)
        return b.obs, b.rewards, b.terminals, b.truncations, infos

    def _advance(self, infos: list[dict[str, Any]], fresh: bool) -> None:
        """Report finished agents (stepping them with ``None``) until a live agent is selected; auto-reset."""
        env = self.env
        src = self._src
        b = self.buffers
        pending = self._pending
        while True:
            if not src.agents:
                for slot in range(self.num_agents):  # agents removed without being reported: truncated
                    if self.slot_agents[slot] is not None and not self._ended[slot]:
                        self._report_end(slot, infos, pending[slot], False, True, None, None)
                env.reset()
                self._clear_slots()
                self._start_aec(infos, "reset_info")
                return
            agent = src.agent_selection
            slot = self._slot_of.get(agent)
            if slot is None:
                slot = self._assign(agent)
            spec = self._slot_spec[slot]
            terminated = bool(src.terminations[agent])
            truncated = bool(src.truncations[agent])
            if terminated or truncated:
                final = self._row_copy(slot, spec, env.observe(agent))
                self._report_end(slot, infos, pending[slot], terminated, truncated, src.infos.get(agent), final)
                pending[slot] = 0.0
                env.step(None)
                self._accumulate()
                continue
            info = src.infos.get(agent)
            self._write_live(slot, spec, env.observe(agent), info)
            b.masks[slot] = True
            b.rewards[slot] += pending[slot]
            pending[slot] = 0.0
            self._selected = slot
            if not fresh:
                infos[slot] = dict(info) if info else {}
            return
_AEC_STATE = ("agents", "agent_selection", "rewards", "terminations", "truncations", "infos")


def _defines(obj: Any, name: str) -> bool:
    return name in getattr(obj, "__dict__", ()) or any(name in vars(cls) for cls in type(obj).__mro__[:-1])


def _state_source(env: AECEnv) -> Any:
    """The object in ``env``'s wrapper chain that holds the AEC state attributes (``agents``, ``rewards``...).

    PettingZoo wrappers forward these through ``__getattr__``, several layers deep, on every read; reading them
    from the outermost wrapper that really defines one of them (usually the unwrapped env) gives the same values
    without the forwarding. Resolved after every ``env.reset()`` since wrappers may set them there.
    """
    obj = env
    while not any(_defines(obj, name) for name in _AEC_STATE):
        inner = getattr(obj, "__dict__", {}).get("env")
        if not isinstance(inner, AECEnv):
            break
        obj = inner
    return obj

