"""Per-agent and per-team episode statistics of multi-agent runs.

Scalars (means over the last ``window`` episodes; names are ``group/name`` as every logged scalar):

* ``agents/<agent>/episode_return``: the episode return of each agent (slot), e.g. ``agents/adversary_0/...``;
* ``teams/<group>/episode_return``: per env episode, the summed return of a group's agents (the group is the agent
  name without ``_<digits>``, as :func:`~shoal.emulation.pettingzoo.group_of`), e.g. ``teams/adversary/...``;
* ``charts/team_return``: per env episode, the summed return of all its agents (the team return of a cooperative
  game).

An agent's return is counted when the emulator reports its end (``infos[r]["episode"]``, dead agents included);
an env's episode is complete when its new episode starts (``"reset_info"`` in the infos of its rows), so team
returns of envs whose agents die at different times are summed over the whole episode. In self-play
(``league``) runs only the learner's seats count: ``agents/<agent>/episode_return`` is the learner's return when
it plays that agent.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from shoal.emulation.pettingzoo import group_of

__all__ = ["AgentStats"]

log = logging.getLogger(__name__)


class AgentStats:
    """Collects per-agent and per-team episode returns from the trainer's env results.

    Args:
        num_envs: envs of the vector env.
        agents_per_env: slots per env ``A``.
        agents: name of the agent that owns each slot (``possible_agents``; slots beyond them are ``slot_<i>``).
        window: episodes averaged in each scalar.
    """

    def __init__(self, num_envs: int, agents_per_env: int, agents: Sequence[str], window: int = 100) -> None:
        self.agents_per_env = a = agents_per_env
        self.slot_names = [str(agents[i]) if i < len(agents) else f"slot_{i}" for i in range(a)]
        self.groups: list[str] = []
        for agent in agents:
            if group_of(agent) not in self.groups:
                self.groups.append(group_of(agent))
        #: group index of each slot's agent (the emulator's ``agent_types`` for stable slots; -1: unknown)
        self.slot_groups = np.array(
            [self.groups.index(group_of(agents[i])) if i < len(agents) else -1 for i in range(a)], np.int64
        )
        self.agent_returns = [deque(maxlen=window) for _ in range(a)]
        self.team_returns: dict[str, deque[float]] = {}
        self.total_returns: deque[float] = deque(maxlen=window)
        self.window = window
        self._open: list[dict[str, float]] = [{} for _ in range(num_envs)]  # env -> group -> summed return

    @classmethod
    def for_env(
        cls, env_fn: Callable[[], Any], num_envs: int, agents_per_env: int, window: int = 100
    ) -> AgentStats | None:
        """Stats for a multi-agent env (names from one probe instance's ``possible_agents``); None when
        ``agents_per_env == 1``."""
        if agents_per_env <= 1:
            return None
        agents: list[str] = []
        try:
            env = env_fn()
            try:
                agents = [str(x) for x in getattr(env, "possible_agents", None) or ()]
            finally:
                env.close()
        except Exception:  # names are cosmetic: fall back to slot numbers
            log.debug("could not read the agent names of the env", exc_info=True)
        return cls(num_envs, agents_per_env, agents[:agents_per_env], window)

    def _group(self, slot: int, agent_type: int) -> str:
        g = int(self.slot_groups[slot])
        if g < 0:
            g = agent_type
        return self.groups[g] if 0 <= g < len(self.groups) else f"type_{g}"

    def record(
        self,
        rows: np.ndarray,
        env_ids: np.ndarray,
        infos: Sequence[dict[str, Any]],
        ended: np.ndarray,
        agent_types: np.ndarray | None = None,
    ) -> None:
        """Add the episodes that ended in one env result.

        Args:
            rows: int64 ``[R]`` vector rows of the result (env-major); env_ids: int64 ``[R // A]`` their envs.
            infos: the ``R`` info dicts; ended: bool ``[R]`` terminals or truncations.
            agent_types: int32 ``[R]`` agent-type ids (used for slots without a known agent), or None.
        """
        a = self.agents_per_env
        done_envs: set[int] = set()
        for k in np.flatnonzero(ended).tolist():
            episode = infos[k].get("episode")
            local = k // a
            done_envs.add(local)
            if episode is None:
                continue
            slot = int(rows[k]) % a
            value = float(episode["return"])
            self.agent_returns[slot].append(value)
            group = self._group(slot, -1 if agent_types is None else int(agent_types[k]))
            totals = self._open[int(env_ids[local])]
            totals[group] = totals.get(group, 0.0) + value
        for local in done_envs:  # an env's episode is over once its next one has started
            if any("reset_info" in infos[j] for j in range(local * a, (local + 1) * a)):
                totals = self._open[int(env_ids[local])]
                for group, value in totals.items():
                    self.team_returns.setdefault(group, deque(maxlen=self.window)).append(value)
                if totals:
                    self.total_returns.append(sum(totals.values()))
                totals.clear()

    def scalars(self) -> dict[str, float]:
        """The current means (only of agents and teams with finished episodes)."""
        out: dict[str, float] = {}
        if self.total_returns:
            out["charts/team_return"] = float(np.mean(self.total_returns))
        for group, values in self.team_returns.items():
            out[f"teams/{group}/episode_return"] = float(np.mean(values))
        for name, values in zip(self.slot_names, self.agent_returns, strict=True):
            if values:
                out[f"agents/{name}/episode_return"] = float(np.mean(values))
        return out
